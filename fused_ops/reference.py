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
    clip_coef: torch.Tensor | None = None,
) -> None:
    """One Adam(W) step in place, with the Adam kernel's math and order, without host syncs.

    Real (or view_as_real) tensors of any layout. Moments and parameters compute in the
    compute dtype and are stored once in their own dtype; bias corrections, step size
    and the decoupled decay factor are computed in fp64 from the incremented ``step``.
    Gradients are divided by ``grad_scale``, then multiplied by ``clip_coef``; a non-zero
    ``found_inf`` changes nothing. lr, betas, eps and weight decay are used in fp64 (as
    the kernel's fp64 group table holds them) and rounded to the compute dtype.
    """
    for p, g, m, v, v_max, step in zip(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, strict=True):
        acc = compute_dtype(p.dtype)

        def scalar(x, dtype=torch.float64, device=p.device):
            return torch.as_tensor(x, dtype=dtype, device=device).reshape(())

        new_step = step + 1
        step64 = new_step.to(device=p.device, dtype=torch.float64)
        # A tensor lr is read as fp32 (fp64 if it is fp64); floats are exact in fp64.
        lr_dtype = torch.float64 if isinstance(lr, torch.Tensor) and lr.dtype == torch.float64 else torch.float32
        lr64 = scalar(lr, lr_dtype).double() if isinstance(lr, torch.Tensor) else scalar(lr)
        weight_decay64 = scalar(weight_decay)
        if isinstance(beta1, torch.Tensor):
            beta_dtype = torch.float64 if beta1.dtype == beta2.dtype == torch.float64 else torch.float32
            beta1_, beta2_ = scalar(beta1, beta_dtype), scalar(beta2, beta_dtype)
            # torch's tensor arithmetic: 1 - beta in the beta's dtype.
            one_minus_beta1, one_minus_beta2 = (1 - beta1_).double(), (1 - beta2_).double()
            beta1_, beta2_ = beta1_.double(), beta2_.double()
        else:  # 1 - beta in double, as torch computes it for float betas
            beta1_, beta2_ = scalar(beta1), scalar(beta2)
            one_minus_beta1, one_minus_beta2 = scalar(1 - beta1), scalar(1 - beta2)
        bias_correction1 = 1 - beta1_**step64
        bias_correction2_sqrt = (1 - beta2_**step64).sqrt()
        step_size = (lr64 / bias_correction1).to(acc)

        grad = g.to(acc)
        if grad_scale is not None:
            grad = grad / grad_scale.to(device=p.device, dtype=acc)
        if clip_coef is not None:
            grad = grad * clip_coef.to(device=p.device, dtype=acc)
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
        denom = exp_avg_sq.sqrt() / bias_correction2_sqrt.to(acc) + scalar(eps).to(acc)
        updates.append((p, param - step_size * exp_avg / denom))
        updates.append((step, new_step))
        skip = None if found_inf is None else found_inf.to(p.device) != 0
        for target, value in updates:
            value = value.to(target.dtype)
            target.copy_(value if skip is None else torch.where(skip, target, value))


def sgd_step_ref(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor | None],
    first_flags: list[torch.Tensor | None],
    *,
    lr: float | torch.Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float | torch.Tensor,
    nesterov: bool,
    maximize: bool,
    grad_scale: torch.Tensor | None = None,
    found_inf: torch.Tensor | None = None,
    clip_coef: torch.Tensor | None = None,
) -> None:
    """One SGD step in place, with the SGD kernel's math and order, without host syncs.

    ``momentum_buffers[i]`` is None when the group has no momentum. ``first_flags[i]`` is
    an int32 0-d tensor that is non-zero while the buffer has never been written (torch's
    first step: the buffer becomes the gradient), or None for a written buffer; a step
    that is not skipped clears it. Sparse gradients work as in torch's for-loop. Gradients
    are divided by ``grad_scale`` and multiplied by ``clip_coef``; a non-zero
    ``found_inf`` changes nothing.
    """
    for p, g, buf, first in zip(params, grads, momentum_buffers, first_flags, strict=True):
        acc = compute_dtype(p.dtype)
        skip = None if found_inf is None else found_inf.to(p.device) != 0

        def scalar(x, p=p, acc=acc):
            # A tensor hyperparameter as the kernel reads it (fp32 unless fp64), then fp64.
            if isinstance(x, torch.Tensor):
                dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
                return x.to(device=p.device, dtype=dtype).reshape(()).double().to(acc)
            return torch.tensor(float(x), dtype=torch.float64, device=p.device).to(acc)

        grad = g.to(acc)
        if grad_scale is not None:
            grad = grad / grad_scale.to(device=p.device, dtype=acc)
        if clip_coef is not None:
            grad = grad * clip_coef.to(device=p.device, dtype=acc)
        if maximize:
            grad = -grad
        param = p.to(acc)
        if isinstance(weight_decay, torch.Tensor) or weight_decay != 0:
            grad = grad + scalar(weight_decay) * param
        updates = []
        if buf is not None:
            if grad.is_sparse:
                grad = grad.to_dense()
            running = buf.to(acc) * scalar(momentum) + scalar(1.0 - dampening) * grad
            if first is not None:
                running = torch.where(first != 0, grad, running)
            updates.append((buf, running))
            grad = grad + scalar(momentum) * running if nesterov else running
        updates.append((p, param - scalar(lr) * grad))
        for target, value in updates:
            value = value.to(target.dtype)
            target.copy_(value if skip is None else torch.where(skip, target, value))
        if first is not None:
            first.copy_(torch.zeros_like(first) if skip is None else torch.where(skip, first, 0))


def clip_grad_norm_ref(
    parameters: list[torch.Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> torch.Tensor:
    """torch's own ``clip_grad_norm_``: the oracle, and the fallback for what the kernels do not take
    (norm types 0, -inf and p < 0, gradients with gaps in memory, no Triton)."""
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


_SQRT1_2 = 0.7071067811865476  # 1 / sqrt(2)
_GELU_PDF_SCALE = 0.3989422804014327  # 1 / sqrt(2 pi)
_GELU_TANH_BETA = 0.7978845608028654  # sqrt(2 / pi)
_GELU_TANH_KAPPA = 0.044715


def gelu_ref(input: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """gelu(input) ("none": erf form, "tanh": tanh form), in the compute dtype, returned in ``input.dtype``."""
    return torch.nn.functional.gelu(input.to(compute_dtype(input.dtype)), approximate=approximate).to(input.dtype)


def gelu_backward_ref(grad_output: torch.Tensor, input: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """grad_output * gelu'(input), recomputed from the input, in the compute dtype."""
    acc = compute_dtype(input.dtype)
    derivative, _ = gelu_derivatives(input.to(acc), approximate)
    return (grad_output.to(acc) * derivative).to(input.dtype)


def gelu_derivatives(x: torch.Tensor, approximate: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(gelu'(x), gelu''(x)) with eager, differentiable ops, in ``x``'s dtype (torch's formulas)."""
    if approximate == "tanh":
        # y = 0.5 x (1 + t), t = tanh(u), u = b (x + k x^3).
        x_sq = x * x
        inner = _GELU_TANH_BETA * (x + _GELU_TANH_KAPPA * x_sq * x)
        t = torch.tanh(inner)
        sech_sq = 1 - t * t
        du = _GELU_TANH_BETA * (1 + 3 * _GELU_TANH_KAPPA * x_sq)
        first = 0.5 * (1 + t) + 0.5 * x * sech_sq * du
        # d/dx of the above: sech^2 u' + 0.5 x (-2 t sech^2 u'^2 + sech^2 u''), u'' = 6 b k x.
        second = sech_sq * du + 0.5 * x * sech_sq * (-2 * t * du * du + 6 * _GELU_TANH_BETA * _GELU_TANH_KAPPA * x)
        return first, second
    cdf = 0.5 * (1 + torch.erf(x * _SQRT1_2))
    pdf = torch.exp(-0.5 * x * x) * _GELU_PDF_SCALE
    # gelu' = Phi + x phi; gelu'' = 2 phi + x phi' = phi (2 - x^2).
    return cdf + x * pdf, pdf * (2 - x * x)


def silu_ref(input: torch.Tensor) -> torch.Tensor:
    """input * sigmoid(input), in the compute dtype, returned in ``input.dtype``."""
    x = input.to(compute_dtype(input.dtype))
    return (x * torch.sigmoid(x)).to(input.dtype)


def silu_backward_ref(grad_output: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    """grad_output * s * (1 + x (1 - s)) with s = sigmoid(input), in the compute dtype."""
    acc = compute_dtype(input.dtype)
    derivative, _ = silu_derivatives(input.to(acc))
    return (grad_output.to(acc) * derivative).to(input.dtype)


def silu_derivatives(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(silu'(x), silu''(x)) with eager, differentiable ops, in ``x``'s dtype."""
    s = torch.sigmoid(x)
    # silu' = s (1 + x (1 - s)); silu'' = s (1 - s) (2 + x (1 - 2 s)).
    return s * (1 + x * (1 - s)), s * (1 - s) * (2 + x * (1 - 2 * s))


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


def linear_ce_targets_in_bounds(target: torch.Tensor, n_classes: int, ignore_index: int) -> torch.Tensor:
    """Per target: True when it is ``ignore_index`` or a class in ``[0, n_classes)``."""
    return (target == ignore_index) | ((target >= 0) & (target < n_classes))


def _linear_ce_rows(inputs, ignore_index, label_smoothing):
    """The logits in the compute dtype and, per row, what the linear cross-entropy kernels use.

    Returns ``(logits, valid, y, w_y, coef, w, eps)``: ``valid`` rows have an in-bounds,
    not ignored target ``y`` (0 elsewhere), ``w_y`` its class weight, ``coef`` the row's
    softmax coefficient; ``w`` the class weights (ones without), ``eps`` the smoothing.
    """
    input, linear_weight, linear_bias, target, weight = inputs
    acc = compute_dtype(input.dtype)
    bias = None if linear_bias is None else linear_bias.to(acc)
    logits = torch.nn.functional.linear(input.to(acc), linear_weight.to(acc), bias)
    n_classes = linear_weight.shape[0]
    eps = max(label_smoothing, 0.0)
    w = torch.ones(n_classes, dtype=acc, device=target.device) if weight is None else weight.to(acc)
    valid = linear_ce_targets_in_bounds(target, n_classes, ignore_index) & (target != ignore_index)
    y = torch.where(valid, target, 0).long()
    w_y = torch.where(valid, w[y], 0)
    coef = torch.where(valid, (1 - eps) * w_y + eps / n_classes * w.sum(), 0)
    return logits, valid, y, w_y, coef, w, eps


def linear_cross_entropy_forward_ref(
    inputs: tuple[torch.Tensor | None, ...], options: tuple[int, int, float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, lse, coef, total_weight) of the linear cross-entropy kernels, with eager ops.

    ``inputs`` is ``(input, linear_weight, linear_bias, target, weight)``: ``input``
    ``(N, D)``, ``linear_weight`` ``(V, D)``, ``target`` ``(N,)`` class indices
    (out-of-bounds ones count as ignored; the caller raises for them). ``options`` is
    ``(reduction, ignore_index, label_smoothing)``, ``reduction`` torch's enum. Holds the
    logits in the compute dtype: the fallback where Triton cannot run.
    """
    reduction, ignore_index, label_smoothing = options
    input, linear_weight = inputs[:2]
    acc = compute_dtype(input.dtype)
    logits, valid, y, w_y, coef, w, eps = _linear_ce_rows(inputs, ignore_index, label_smoothing)
    n_classes = linear_weight.shape[0]
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
    grad_output: torch.Tensor, saved: tuple[torch.Tensor | None, ...], options: tuple[int, int, float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_input, grad_linear_weight, grad_linear_bias) from the logits' gradient ``G``.

    ``saved`` is the forward's inputs followed by its ``(lse, coef, total_weight)``, as
    ``LinearCrossEntropyFunction`` saves them; ``options`` as for
    :func:`linear_cross_entropy_forward_ref`.
    ``G = s * (coef * softmax - (1 - eps) w_y onehot(y) - eps / V * w)`` per valid row, 0
    for ignored rows; ``s`` is the row's grad_output, or ``g / total_weight`` for a mean.
    """
    reduction, ignore_index, label_smoothing = options
    input, linear_weight = saved[:2]
    lse, coef, total_weight = saved[5:]
    acc = compute_dtype(input.dtype)
    logits, valid, y, w_y, _, w, eps = _linear_ce_rows(saved[:5], ignore_index, label_smoothing)
    n_classes = linear_weight.shape[0]
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


def dynamic_code_map(signed: bool) -> torch.Tensor:
    """The 256 values of bitsandbytes' dynamic map (``create_dynamic_map(signed)``), fp32, increasing.

    Computed in closed form as kernels/adam8bit.py decodes it (see its docstring), in the
    same fp32 operations, so that the reference and the kernel decode to the same bits.
    """
    codes = torch.arange(256, dtype=torch.int32)
    if signed:
        p = torch.where(codes >= 128, codes - 128, 126 - codes)
        i = torch.floor(torch.log2((p + 1).double())).int()
        count = (1 << i).float()
        k = (p + 1 - (1 << i)).float()
        sign = torch.where(codes >= 128, 1.0, -1.0)
        zero_code = 127
    else:
        p = codes - 1
        i = torch.floor(torch.log2((p + 2).clamp(min=2).double())).int() - 1
        count = (2 << i).float()
        k = (p + 2 - (2 << i)).float()
        sign = torch.ones(256)
        zero_code = 0
    pow10 = torch.tensor([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0], dtype=torch.float32)[i.clamp(0, 6).long()]
    value = sign * (pow10 * (0.1 + (k + 0.5) * 0.9 / count))
    value = torch.where(codes == zero_code, 0.0, value)
    return torch.where(codes == 255, 1.0, value)


def quantize_blockwise_ref(values: torch.Tensor, signed: bool, block: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 codes, fp32 scales): each block of ``block`` flat elements scaled by its absmax, then
    each value's nearest code of :func:`dynamic_code_map` (the lowest code on ties), except that
    a positive value never takes the unsigned map's code of 0 (the smallest nonzero code instead)."""
    flat = values.reshape(-1).float()
    code_map = dynamic_code_map(signed).to(flat.device)
    padded = torch.nn.functional.pad(flat, (0, (-flat.numel()) % block)).view(-1, block)
    scales = padded.abs().amax(dim=1)
    normal = torch.where(scales[:, None] > 0, padded / torch.where(scales > 0, scales, 1.0)[:, None], 0.0).view(-1)
    # The map increases strictly, so the nearest value is one of the two around x: the
    # same choice (and the same fp32 distances, ties to the lower code) as an argmin
    # over all 256, without a [numel, 256] temporary.
    above = torch.searchsorted(code_map, normal).clamp(1, 255)
    below = above - 1
    lower = (normal - code_map[below]).abs() <= (code_map[above] - normal).abs()
    codes = torch.where(lower, below, above)
    if not signed:
        # A positive value never stores as 0 (kernels/adam8bit.py: "exp_avg_sq is never rounded to 0").
        codes = torch.where(normal > 0, codes.clamp(min=1), codes)
    return codes[: flat.numel()].to(torch.uint8), scales


def dequantize_blockwise_ref(codes: torch.Tensor, scales: torch.Tensor, signed: bool, block: int = 256) -> torch.Tensor:
    """The fp32 values of :func:`quantize_blockwise_ref`'s codes and scales (flat)."""
    code_map = dynamic_code_map(signed).to(codes.device)
    index = torch.arange(codes.numel(), device=codes.device) // block
    return code_map[codes.long()] * scales[index]


def adam8bit_step_ref(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    states: list[dict[str, torch.Tensor]],
    *,
    lr: float | torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
    decoupled_weight_decay: bool,
    grad_scale: torch.Tensor | None = None,
    found_inf: torch.Tensor | None = None,
    clip_coef: torch.Tensor | None = None,
) -> None:
    """One Adam(W) step with 8-bit blockwise moments, in place: kernels/adam8bit.py's scheme in PyTorch.

    Each state is a dict with ``step`` and either fp32 ``exp_avg``/``exp_avg_sq`` (small
    tensors) or uint8 ``exp_avg_codes``/``exp_avg_sq_codes`` (flat) with fp32
    ``exp_avg_scales``/``exp_avg_sq_scales`` (one per 256 elements). The moments are
    dequantized, stepped by :func:`adam_step_ref`, and quantized again (unless skipped).
    """
    for p, g, state in zip(params, grads, states, strict=True):
        quantized = "exp_avg_codes" in state
        if quantized:
            m = dequantize_blockwise_ref(state["exp_avg_codes"], state["exp_avg_scales"], True).view(p.shape)
            v = dequantize_blockwise_ref(state["exp_avg_sq_codes"], state["exp_avg_sq_scales"], False).view(p.shape)
        else:
            m, v = state["exp_avg"], state["exp_avg_sq"]
        adam_step_ref(
            [p],
            [g],
            [m],
            [v],
            [None],
            [state["step"]],
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=False,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
            grad_scale=grad_scale,
            found_inf=found_inf,
            clip_coef=clip_coef,
        )
        if quantized:
            skip = None if found_inf is None else found_inf.to(p.device) != 0
            for key, value, signed in (("exp_avg", m, True), ("exp_avg_sq", v, False)):
                codes, scales = quantize_blockwise_ref(value, signed)
                for target, new in ((state[f"{key}_codes"], codes), (state[f"{key}_scales"], scales)):
                    target.copy_(new if skip is None else torch.where(skip, target, new))
