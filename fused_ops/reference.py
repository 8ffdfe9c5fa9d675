"""Pure-PyTorch references: the test oracle, and the fallback where Triton cannot run.

Each ``<op>_ref`` computes exactly what the matching Triton kernel computes, with eager
PyTorch ops, in the same compute dtype (fp32 for half types, fp64 for fp64).
"""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype kernels compute in: fp64 stays fp64, every other float computes in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def sigmoid_ref(input: torch.Tensor) -> torch.Tensor:
    """sigmoid(input), computed in the compute dtype and returned in ``input.dtype``."""
    return torch.sigmoid(input.to(compute_dtype(input.dtype))).to(input.dtype)


def sigmoid_backward_ref(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """grad_output * output * (1 - output), the gradient of sigmoid from its output."""
    acc = compute_dtype(output.dtype)
    y = output.to(acc)
    return (grad_output.to(acc) * y * (1 - y)).to(output.dtype)


def tanh_ref(input: torch.Tensor) -> torch.Tensor:
    """tanh(input), computed in the compute dtype and returned in ``input.dtype``."""
    return torch.tanh(input.to(compute_dtype(input.dtype))).to(input.dtype)


def tanh_backward_ref(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """grad_output * (1 - output^2), the gradient of tanh from its output."""
    acc = compute_dtype(output.dtype)
    y = output.to(acc)
    return (grad_output.to(acc) * (1 - y * y)).to(output.dtype)


def relu_ref(input: torch.Tensor) -> torch.Tensor:
    """input < 0 ? 0 : input, exact in every dtype, so computed in ``input.dtype`` (integers too)."""
    return torch.where(input < 0, torch.zeros((), dtype=input.dtype), input)


def relu_backward_ref(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """output <= 0 ? 0 : grad_output (torch's threshold_backward at 0; a NaN output passes the gradient)."""
    return torch.where(output <= 0, torch.zeros((), dtype=grad_output.dtype), grad_output)


def mse_loss_ref(input: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """(input - target)^2, reduced by 'none' | 'mean' | 'sum', accumulated in the compute dtype.

    ``input`` and ``target`` have one shape (already broadcast); the result has their
    promoted dtype, as torch's mse_loss.
    """
    out_dtype = torch.promote_types(input.dtype, target.dtype)
    acc = compute_dtype(out_dtype)
    loss = (input.to(acc) - target.to(acc)).square()
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(out_dtype)


def mse_loss_backward_ref(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str,
    input_grad: bool,
    target_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(grad_input, grad_target) = (scale * (input - target) * grad_output, -grad_input).

    ``scale`` is 2 / numel for 'mean' and 2 otherwise; ``grad_output`` is 0-d unless
    ``reduction`` is 'none'. A gradient whose flag is False is None.
    """
    acc = compute_dtype(torch.promote_types(input.dtype, target.dtype))
    scale = 2.0 / input.numel() if reduction == "mean" and input.numel() > 0 else 2.0
    grad = scale * (input.to(acc) - target.to(acc)) * grad_output.to(acc)
    grad_input = grad.to(input.dtype) if input_grad else None
    grad_target = (-grad).to(target.dtype) if target_grad else None
    return grad_input, grad_target


def softmax_ref(input: torch.Tensor, dim: int, output_dtype: torch.dtype) -> torch.Tensor:
    """softmax over ``dim``, computed in ``output_dtype``'s compute dtype, returned in ``output_dtype``."""
    return torch.softmax(input.to(compute_dtype(output_dtype)), dim).to(output_dtype)


def log_softmax_ref(input: torch.Tensor, dim: int, output_dtype: torch.dtype) -> torch.Tensor:
    """log_softmax over ``dim``, computed in ``output_dtype``'s compute dtype, returned in ``output_dtype``."""
    return torch.log_softmax(input.to(compute_dtype(output_dtype)), dim).to(output_dtype)


def softmax_backward_ref(
    grad_output: torch.Tensor, output: torch.Tensor, dim: int, input_dtype: torch.dtype
) -> torch.Tensor:
    """output * (grad_output - sum(grad_output * output)), softmax's input gradient in ``input_dtype``."""
    acc = compute_dtype(output.dtype)
    g, y = grad_output.to(acc), output.to(acc)
    return (y * (g - (g * y).sum(dim, keepdim=True))).to(input_dtype)


def log_softmax_backward_ref(
    grad_output: torch.Tensor, output: torch.Tensor, dim: int, input_dtype: torch.dtype
) -> torch.Tensor:
    """grad_output - exp(output) * sum(grad_output), log_softmax's input gradient in ``input_dtype``."""
    acc = compute_dtype(output.dtype)
    g, y = grad_output.to(acc), output.to(acc)
    return (g - y.exp() * g.sum(dim, keepdim=True)).to(input_dtype)


def _class_rows(tensor: torch.Tensor) -> torch.Tensor:
    """A cross-entropy operand shaped like the logits, as (rows, C) in the targets' element order."""
    class_dim = 0 if tensor.dim() == 1 else 1
    return tensor.movedim(class_dim, -1).reshape(-1, tensor.shape[class_dim])


def _from_class_rows(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_class_rows`: (rows, C) back to ``like``'s shape."""
    class_dim = 0 if like.dim() == 1 else 1
    return rows.reshape(like.movedim(class_dim, -1).shape).movedim(-1, class_dim)


def cross_entropy_coefficients_ref(
    input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, ignore_index: int, label_smoothing: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a, coef, row_weight, valid) of the cross-entropy kernels, as (rows, C) and (rows,) tensors.

    With ``eps = max(label_smoothing, 0)`` and ``w`` the weight (ones without one):
    each row's gradient is ``coef * softmax(x) - a``, its loss ``sum_c a_c (lse - x_c)``.
    Probability targets: ``a = w * ((1 - eps) t + eps / C)``. Class indices ``y``:
    ``a = (1 - eps) w_y onehot(y) + eps / C * w``, and 0 for rows whose target is
    ``ignore_index``. ``row_weight`` is the weighted mean's denominator term (``w_y``, 0
    for ignored rows; 1 for probability targets).
    """
    acc = compute_dtype(input.dtype)
    C = input.shape[0 if input.dim() == 1 else 1]
    eps = max(label_smoothing, 0.0)
    w = torch.ones(C, dtype=acc, device=input.device) if weight is None else weight.to(acc)
    if target.shape == input.shape:
        t = _class_rows(target).to(torch.promote_types(acc, target.dtype))
        a = w * (t * (1 - eps) + eps / C) if eps > 0 else w * t
        valid = torch.ones(a.shape[0], dtype=torch.bool, device=input.device)
        return a, a.sum(-1), valid.to(acc), valid
    y = target.reshape(-1)
    valid = y != ignore_index
    y_safe = torch.where(valid, y, 0).long()
    w_y = torch.where(valid, w[y_safe], 0)
    onehot = torch.nn.functional.one_hot(y_safe, C).to(acc)
    a = (1 - eps) * w_y[:, None] * onehot + eps / C * w
    a = torch.where(valid[:, None], a, 0)
    coef = torch.where(valid, (1 - eps) * w_y + eps / C * w.sum(), 0)
    return a, coef, w_y, valid


def cross_entropy_forward_ref(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, lse, coef, total_weight) exactly as the forward kernels compute them.

    ``reduction`` is torch's enum (0 none, 1 mean, 2 sum). ``lse`` and ``coef`` are per row
    (the target's elements in order); ``total_weight`` is the mean's denominator (1 for
    other reductions). Computed in fp32 (fp64 for fp64 logits).
    """
    acc = compute_dtype(input.dtype)
    x = _class_rows(input).to(acc)
    lse = torch.logsumexp(x, dim=-1)
    a, coef, row_weight, _ = cross_entropy_coefficients_ref(input, target, weight, ignore_index, label_smoothing)
    # 0 * (lse - x) is 0 where a is 0, even for -inf logits (an ignored row, a smoothing-free class).
    rows_loss = torch.where(a != 0, a * (lse[:, None] - x), 0).sum(-1)
    loss_shape = () if input.dim() == 1 else input.shape[:1] + input.shape[2:]
    if reduction == 0:
        return rows_loss.reshape(loss_shape).to(out_dtype), lse, coef.to(acc), torch.ones((), dtype=acc)
    total = rows_loss.sum()
    total_weight = row_weight.sum() if reduction == 1 else torch.ones((), dtype=acc, device=input.device)
    loss = total / total_weight if reduction == 1 else total
    return loss.to(out_dtype), lse, coef.to(acc), total_weight.to(acc)


def cross_entropy_backward_ref(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    lse: torch.Tensor,
    coef: torch.Tensor,
    total_weight: torch.Tensor,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
) -> torch.Tensor:
    """``dloss/dinput = scale * (coef * softmax(input) - a)``, from the forward's ``lse`` and ``coef``."""
    acc = compute_dtype(input.dtype)
    x = _class_rows(input).to(acc)
    a, _, _, valid = cross_entropy_coefficients_ref(input, target, weight, ignore_index, label_smoothing)
    grad = coef.to(acc)[:, None] * torch.exp(x - lse.to(acc)[:, None]) - a.to(acc)
    if reduction == 0:
        scale = grad_output.to(acc).reshape(-1, 1)
    else:
        scale = grad_output.to(acc) / total_weight.to(acc) if reduction == 1 else grad_output.to(acc)
    # Ignored rows are 0 after scaling: a mean over no targets scales by g / 0 = inf.
    return _from_class_rows(torch.where(valid[:, None], grad * scale, 0), input).to(input.dtype)


def adam_step_ref(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    max_exp_avg_sqs: list[torch.Tensor | None],
    steps: list[torch.Tensor],
    *,
    lr: float | torch.Tensor,
    beta1: float | torch.Tensor,
    beta2: float | torch.Tensor,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    grad_scale: torch.Tensor | None = None,
    found_inf: torch.Tensor | None = None,
) -> None:
    """One Adam(W) step in place, with the Adam kernel's math and order, without host syncs.

    Real (or view_as_real) tensors of any layout. Moments and parameters compute in the
    compute dtype and are stored once in their own dtype; bias corrections, step size
    and the decoupled decay factor are computed in fp64 from the incremented ``step``.
    Gradients are divided by ``grad_scale``; a non-zero ``found_inf`` changes nothing.
    """
    for p, g, m, v, v_max, step in zip(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, strict=True):
        acc = compute_dtype(p.dtype)

        def scalar(x, dtype=torch.float64, device=p.device):
            return torch.as_tensor(x, dtype=dtype, device=device).reshape(())

        new_step = step + 1
        step64 = new_step.to(device=p.device, dtype=torch.float64)
        # The kernel receives lr and weight_decay as fp32 and computes with them in fp64.
        lr64 = scalar(lr, torch.float32).double()
        weight_decay64 = scalar(weight_decay, torch.float32).double()
        beta1_, beta2_ = scalar(beta1, torch.float32), scalar(beta2, torch.float32)
        if isinstance(beta1, torch.Tensor):
            one_minus_beta1, one_minus_beta2 = 1 - beta1_, 1 - beta2_
        else:  # 1 - beta in double, as torch computes it for float betas
            one_minus_beta1, one_minus_beta2 = scalar(1 - beta1, torch.float32), scalar(1 - beta2, torch.float32)
        # Float betas enter the bias corrections in double, tensor betas as their fp32 value.
        bias_correction1 = 1 - scalar(beta1 if isinstance(beta1, float) else beta1_) ** step64
        bias_correction2_sqrt = (1 - scalar(beta2 if isinstance(beta2, float) else beta2_) ** step64).sqrt()
        step_size = (lr64 / bias_correction1).to(acc)

        grad = g.to(acc)
        if grad_scale is not None:
            grad = grad / grad_scale.to(device=p.device, dtype=acc)
        if maximize:
            grad = -grad
        param = p.to(acc)
        if decoupled_weight_decay:
            param = param * (1 - lr64 * weight_decay64).to(acc)
        elif weight_decay != 0:
            grad = grad + weight_decay64.to(acc) * param
        exp_avg = torch.lerp(m.to(acc), grad, one_minus_beta1.to(acc))
        exp_avg_sq = v.to(acc) * beta2_.to(acc) + one_minus_beta2.to(acc) * grad * grad
        updates = [(m, exp_avg), (v, exp_avg_sq)]
        if amsgrad:
            exp_avg_sq = torch.maximum(v_max.to(acc), exp_avg_sq)
            updates.append((v_max, exp_avg_sq))
        denom = exp_avg_sq.sqrt() / bias_correction2_sqrt.to(acc) + eps
        updates.append((p, param - step_size * exp_avg / denom))
        updates.append((step, new_step))
        skip = None if found_inf is None else found_inf.to(p.device) != 0
        for target, value in updates:
            value = value.to(target.dtype)
            target.copy_(value if skip is None else torch.where(skip, target, value))


def linear_cross_entropy_ref(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    linear_bias: torch.Tensor | None,
    weight: torch.Tensor | None,
    reduction: str,
    ignore_index: int,
    label_smoothing: float,
) -> torch.Tensor:
    """``cross_entropy(linear(input, linear_weight, linear_bias), target)``, differentiable, eager.

    Exactly torch's ``F.linear_cross_entropy`` without ``options`` (torch's checks and
    errors included), with ``ignore_index`` already resolved (-100 for ``None``). It holds
    the whole logits tensor: the oracle of the tests and the fallback where Triton cannot
    run, and the path of probability targets and K-dimensional weights.
    """
    ignore = None if target.shape == (*input.shape[:-1], *linear_weight.shape[:-1]) else ignore_index
    return torch.nn.functional.linear_cross_entropy(
        input,
        linear_weight,
        target,
        linear_bias=linear_bias,
        weight=weight,
        reduction=reduction,
        ignore_index=ignore,
        label_smoothing=label_smoothing,
    )


def _linear_logits(input, linear_weight, linear_bias) -> torch.Tensor:
    acc = compute_dtype(input.dtype)
    bias = None if linear_bias is None else linear_bias.to(acc)
    return torch.nn.functional.linear(input.to(acc), linear_weight.to(acc), bias)


def _linear_ce_rows(target, weight, n_classes, ignore_index, label_smoothing, acc):
    """Per row: (valid, w_y, coef) and the class weights ``w`` of the linear cross-entropy kernels."""
    eps = max(label_smoothing, 0.0)
    w = torch.ones(n_classes, dtype=acc, device=target.device) if weight is None else weight.to(acc)
    valid = (target != ignore_index) & (target >= 0) & (target < n_classes)
    y = torch.where(valid, target, 0).long()
    w_y = torch.where(valid, w[y], 0)
    coef = torch.where(valid, (1 - eps) * w_y + eps / n_classes * w.sum(), 0)
    return valid, y, w_y, coef, w, eps


def linear_cross_entropy_forward_ref(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    linear_bias: torch.Tensor | None,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, lse, coef, total_weight) of the linear cross-entropy kernels, with eager ops.

    ``input`` ``(N, D)``, ``linear_weight`` ``(V, D)``, ``target`` ``(N,)`` class indices
    (out-of-bounds ones count as ignored; the caller raises for them). Holds the logits in
    the compute dtype: the fallback where Triton cannot run.
    """
    acc = compute_dtype(input.dtype)
    logits = _linear_logits(input, linear_weight, linear_bias)
    n_classes = linear_weight.shape[0]
    valid, y, w_y, coef, w, eps = _linear_ce_rows(target, weight, n_classes, ignore_index, label_smoothing, acc)
    lse = torch.logsumexp(logits, dim=-1)
    nll = lse - logits.gather(1, y[:, None])[:, 0]
    loss = (1 - eps) * w_y * nll
    if eps > 0:
        loss = loss + eps / n_classes * (lse * w.sum() - logits @ w)
    loss = torch.where(valid, loss, 0)
    if reduction == 0:
        return loss.to(input.dtype), lse, coef, torch.ones((), dtype=acc, device=input.device)
    total_weight = w_y.sum() if reduction == 1 else torch.ones((), dtype=acc, device=input.device)
    return (loss.sum() / total_weight).to(input.dtype), lse, coef, total_weight


def linear_cross_entropy_backward_ref(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    linear_bias: torch.Tensor | None,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    lse: torch.Tensor,
    coef: torch.Tensor,
    total_weight: torch.Tensor,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_input, grad_linear_weight, grad_linear_bias) from the logits' gradient ``G``.

    ``G = s * (coef * softmax - (1 - eps) w_y onehot(y) - eps / V * w)`` per valid row, 0
    for ignored rows; ``s`` is the row's grad_output, or ``g / total_weight`` for a mean.
    """
    acc = compute_dtype(input.dtype)
    logits = _linear_logits(input, linear_weight, linear_bias)
    n_classes = linear_weight.shape[0]
    valid, y, w_y, _, w, eps = _linear_ce_rows(target, weight, n_classes, ignore_index, label_smoothing, acc)
    if reduction == 0:
        scale = grad_output.to(acc).reshape(-1)
    else:
        scale = grad_output.to(acc) / total_weight.to(acc) if reduction == 1 else grad_output.to(acc)
        scale = scale.expand(input.shape[0])
    onehot = torch.nn.functional.one_hot(y, n_classes).to(acc)
    grad = coef.to(acc)[:, None] * torch.exp(logits - lse.to(acc)[:, None]) - (1 - eps) * w_y[:, None] * onehot
    if eps > 0:
        grad = grad - eps / n_classes * w
    grad = torch.where(valid[:, None], grad * scale[:, None], 0)
    return (
        (grad @ linear_weight.to(acc)).to(input.dtype),
        (grad.t() @ input.to(acc)).to(linear_weight.dtype),
        grad.sum(0).to(input.dtype),
    )
