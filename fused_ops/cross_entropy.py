"""Fused cross-entropy: log_softmax + nll_loss (and their backward) in one pass each.

The op has three layers, read top to bottom:

- the functional (``cross_entropy``) reproduces :func:`torch.nn.functional.cross_entropy`
  up to the kernel call: legacy ``size_average``/``reduce``, the reduction name, and every
  shape, dtype and weight check, with torch's error types and messages, in torch's order;
- two ``torch.autograd.Function``\\ s, which call the launchers: ``CrossEntropyFunction``
  saves the logits, the per-row logsumexp and a per-row coefficient, so the backward is
  one more pass over the logits; ``CrossEntropyGradInForwardFunction`` (opt-in) writes
  the gradient during the forward into a buffer of its own and the backward only scales
  it, in place. Without autograd the functional calls the launchers directly. Under
  ``create_graph=True`` the backward applies ``_BackwardFunction``, whose backward is the
  second derivative in eager ops, which is what makes double backward work;
- under ``torch.compile``, ``torch.library`` custom ops (``fused_ops::cross_entropy_forward``,
  ``_backward`` and ``_scale_grad_``) with fake implementations run the kernels, so
  ``torch.compile(fullgraph=True)`` traces them; the backward op has the same second
  derivative registered as its autograd.

Logits are seen as ``(outer, C, inner)`` strided views (see :mod:`fused_ops.kernels.cross_entropy`):
``(C,)`` is ``(1, C, 1)``, ``(N, C)`` is ``(1, C, N)`` (any strides), and ``(N, C, d1, ...)``
is ``(N, C, d1 * ...)`` (a copy only when the spatial dims cannot be merged into one
stride). Nothing is transposed in memory.
"""

from __future__ import annotations

import torch

from . import reference
from ._autocast import autocast_inputs
from ._dispatch import TRITON_AVAILABLE, fast_apply, needs_autograd, use_triton
from ._validation import check_floating, check_same_device, is_dense, legacy_reduction, scalar_type_name

if TRITON_AVAILABLE:
    from .kernels import cross_entropy as kernels

# torch's reduction enum (torch.nn._reduction.get_enum); the kernels use the same numbers.
_NONE, _MEAN, _SUM = 0, 1, 2


def _is_prob_target(input: torch.Tensor, target: torch.Tensor) -> bool:
    # torch's rule: a target shaped exactly like the input holds class probabilities.
    return input.shape == target.shape


def _layout(input: torch.Tensor) -> str:
    """How the logits map to ``(outer, C, inner)``: 'vector', 'matrix' or 'spatial'."""
    return {1: "vector", 2: "matrix"}.get(input.dim(), "spatial")


def _class_view(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    """A logits-shaped tensor as ``(outer, C, inner)``: a view, except non-mergeable spatial dims.

    ``(N, C)`` becomes ``(1, C, N)``, so that a program can take several rows: the kernels
    pick the tile's long side from the strides, whichever dim is contiguous.
    """
    if layout == "vector":
        return tensor.unsqueeze(0).unsqueeze(-1)
    if layout == "matrix":
        return tensor.t().unsqueeze(0)
    return tensor.reshape(_shape3(tensor))


def _shape3(tensor: torch.Tensor) -> tuple[int, int, int]:
    inner = 1
    for size in tensor.shape[2:]:
        inner *= size
    return tensor.shape[0], tensor.shape[1], inner


def _row_view(tensor: torch.Tensor, layout: str, logits_3d: torch.Tensor) -> torch.Tensor:
    """A tensor shaped like the logits without the class dim, as ``(outer, inner)``."""
    outer, _, inner = logits_3d.shape
    if layout == "matrix":
        return tensor.unsqueeze(0)
    return tensor.reshape(outer, inner)


def _spatial_dims_merge(tensor: torch.Tensor) -> bool:
    """True when dims 2.. of ``tensor`` can be viewed as one dim with a single stride."""
    expected = None
    for size, stride in reversed(list(zip(tensor.shape[2:], tensor.stride()[2:], strict=True))):
        if size == 1:
            continue
        if expected is not None and stride != expected:
            return False
        expected = stride * size
    return True


def _empty_grad(input: torch.Tensor) -> torch.Tensor:
    """The gradient buffer: the logits' own layout when dense (and mergeable), else contiguous."""
    if is_dense(input) and (input.dim() < 3 or _spatial_dims_merge(input)):
        return torch.empty_like(input)
    return torch.empty(input.shape, dtype=input.dtype, device=input.device)


def _loss_shape(input: torch.Tensor) -> tuple[int, ...]:
    return () if input.dim() == 1 else (input.shape[0], *input.shape[2:])


def _loss_dtype(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.dtype:
    # Probability targets: torch multiplies log_softmax(input) by target (and weight), so
    # the loss takes their promoted dtype. Class indices: the input's dtype.
    if not _is_prob_target(input, target):
        return input.dtype
    dtype = torch.promote_types(input.dtype, target.dtype)
    return dtype if weight is None else torch.promote_types(dtype, weight.dtype)


def _check_target_bounds(target: torch.Tensor, n_classes: int, ignore_index: int) -> None:
    """The eager bounds check of the reference path (the kernels check as they load targets)."""
    if target.numel() == 0:
        return
    _assert_targets_in_bounds(
        _targets_in_bounds(target, n_classes, ignore_index).all(), target, n_classes, ignore_index
    )


def _targets_in_bounds(target: torch.Tensor, n_classes: int, ignore_index: int) -> torch.Tensor:
    return ((target >= 0) & (target < n_classes)) | (target == ignore_index)


def _assert_targets_in_bounds(all_ok: torch.Tensor, target: torch.Tensor, n_classes: int, ignore_index: int) -> None:
    """torch's ``IndexError: Target 5 is out of bounds.`` unless ``all_ok``, without a host sync.

    ``all_ok`` is a one-element flag (nonzero: every target is valid). ``torch._assert_async``
    does not synchronize on a GPU: a bad target there trips a device-side assertion
    (reported at a later sync, as torch's own CUDA kernels do). On the CPU it raises at
    once, and only then are the targets read again to name the offending value.
    """
    try:
        torch._assert_async(all_ok, "cross_entropy: a target is out of bounds")
    except RuntimeError:
        in_bounds = _targets_in_bounds(target, n_classes, ignore_index)
        bad = target[~in_bounds].reshape(-1)[0]
        raise IndexError(f"Target {int(bad)} is out of bounds.") from None


def _forward_impl(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
    grad_in_forward: bool,
    placeholder: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(loss, lse, coef, total_weight, grad): the forward's outputs.

    Without ``grad_in_forward``, grad is an empty placeholder (a custom op must return a
    tensor), or None when not ``placeholder`` (the eager path, which drops it).
    """
    prob_target = _is_prob_target(input, target)
    n_classes = input.shape[0 if input.dim() == 1 else 1]
    out_dtype = _loss_dtype(input, target, weight)
    acc = reference.compute_dtype(input.dtype)
    if grad_in_forward:
        grad = _empty_grad(input)
    else:
        grad = input.new_empty((0,)) if placeholder else None
    if not use_triton("cross_entropy", input, target, weight) or n_classes == 0:
        if not prob_target:
            _check_target_bounds(target, n_classes, ignore_index)
        loss, lse, coef, total_weight = reference.cross_entropy_forward_ref(
            input, target, weight, reduction, ignore_index, label_smoothing, out_dtype
        )
        if grad_in_forward:
            ones = torch.ones((), dtype=out_dtype, device=input.device)
            grad.copy_(
                reference.cross_entropy_backward_ref(
                    ones, input, target, weight, lse, coef, ones, _SUM, ignore_index, label_smoothing
                )
            )
        return loss, lse, coef, total_weight, grad

    layout = _layout(input)
    logits = _class_view(input, layout)
    target_view = _class_view(target, layout) if prob_target else _row_view(target, layout, logits)
    outer, _, inner = logits.shape
    n_rows = outer * inner
    lse = torch.empty(n_rows, dtype=acc, device=input.device)
    coef = torch.empty(n_rows, dtype=acc, device=input.device)
    row_weight = None if prob_target else torch.empty(n_rows, dtype=acc, device=input.device)
    if reduction == _NONE:
        loss = torch.empty(_loss_shape(input), dtype=out_dtype, device=input.device)
        row_loss = loss.view(-1)
    else:
        row_loss = torch.empty(n_rows, dtype=acc, device=input.device)
    # The kernels validate index targets as they load them: one flag per forward program,
    # folded into all_ok by the reduce kernel, and one torch._assert_async on it (no sync).
    check_targets = not prob_target and n_rows > 0
    if check_targets:
        target_ok = torch.empty(kernels.forward_program_count(logits), dtype=torch.int8, device=input.device)
        all_ok = torch.empty(1, dtype=torch.int8, device=input.device)
    else:
        target_ok = all_ok = None
    kernels.cross_entropy_forward(
        logits,
        target_view,
        None if weight is None else weight.contiguous(),
        row_loss,
        lse,
        coef,
        coef if row_weight is None else row_weight,
        _class_view(grad, layout) if grad_in_forward else None,
        target_ok,
        ignore_index,
        label_smoothing,
        prob_target,
    )
    if reduction != _NONE:
        loss = torch.empty((), dtype=out_dtype, device=input.device)
    # With 'none' the reduce kernel only writes total_weight = 1 (and all_ok): the same
    # one launch as a torch.ones would be.
    total_weight = torch.empty((), dtype=acc, device=input.device)
    kernels.cross_entropy_reduce(
        row_loss, row_weight, None if reduction == _NONE else loss, total_weight, reduction, target_ok, all_ok
    )
    if check_targets:
        _assert_targets_in_bounds(all_ok, target, n_classes, ignore_index)
    return loss, lse, coef, total_weight, grad


@torch.library.custom_op("fused_ops::cross_entropy_forward", mutates_args=())
def _cross_entropy_forward(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
    grad_in_forward: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _forward_impl(input, target, weight, reduction, ignore_index, label_smoothing, grad_in_forward)


@_cross_entropy_forward.register_fake
def _(input, target, weight, reduction, ignore_index, label_smoothing, grad_in_forward):
    out_dtype = _loss_dtype(input, target, weight)
    acc = reference.compute_dtype(input.dtype)
    n_rows = 1
    for size in _loss_shape(input):
        n_rows *= size
    loss_shape = _loss_shape(input) if reduction == _NONE else ()
    return (
        input.new_empty(loss_shape, dtype=out_dtype),
        input.new_empty((n_rows,), dtype=acc),
        input.new_empty((n_rows,), dtype=acc),
        input.new_empty((), dtype=acc),
        _empty_grad(input) if grad_in_forward else input.new_empty((0,)),
    )


def _backward_impl(
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
    """d loss / d input, in a new buffer."""
    args = (ignore_index, label_smoothing)
    if not use_triton("cross_entropy", grad_output, input, target, weight):
        return reference.cross_entropy_backward_ref(
            grad_output, input, target, weight, lse, coef, total_weight, reduction, *args
        )
    prob_target = _is_prob_target(input, target)
    layout = _layout(input)
    logits = _class_view(input, layout)
    grad = _empty_grad(input)
    kernels.cross_entropy_backward(
        _row_view(grad_output, layout, logits) if reduction == _NONE else grad_output,
        logits,
        _class_view(target, layout) if prob_target else _row_view(target, layout, logits),
        None if weight is None else weight.contiguous(),
        lse,
        coef,
        total_weight,
        _class_view(grad, layout),
        *args,
        prob_target,
        reduction,
    )
    return grad


@torch.library.custom_op("fused_ops::cross_entropy_backward", mutates_args=())
def _cross_entropy_backward(
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
    return _backward_impl(
        grad_output, input, target, weight, lse, coef, total_weight, reduction, ignore_index, label_smoothing
    )


@_cross_entropy_backward.register_fake
def _(grad_output, input, target, weight, lse, coef, total_weight, reduction, ignore_index, label_smoothing):
    return _empty_grad(input)


def _cross_entropy_backward_setup_context(ctx, inputs, output) -> None:
    grad_output, input, target, weight, lse, coef, total_weight, reduction, ignore_index, label_smoothing = inputs
    ctx.save_for_backward(grad_output, input, target, weight, lse, coef, total_weight)
    ctx.reduction = reduction
    ctx.ignore_index = ignore_index
    ctx.label_smoothing = label_smoothing


def _cross_entropy_double_backward(ctx, grad_grad: torch.Tensor):
    # The backward computes grad = s * D with D = coef * p - a, p = softmax(x) and s the
    # row scale (grad_output per row, or g / total_weight). lse and coef were computed from
    # x and target by the forward, so their dependence is folded in here and they get None:
    #   d/ds:      sum_c gg_c D_c (summed over rows for a 0-d grad_output)
    #   d/dx_j:    s coef p_j (gg_j - sum_c gg_c p_c)              (softmax backward)
    #   d/dt_k:    s (1 - eps) w_k (sum_c gg_c p_c - gg_k)        (probability targets)
    #   d/dw_k:    sum over rows of s t'_k (sum_c gg_c p_c - gg_k)  (probability targets)
    grad_output, input, target, weight, lse, coef, total_weight = ctx.saved_tensors
    acc = reference.compute_dtype(input.dtype)
    x = reference._class_rows(input).to(acc)
    gg = reference._class_rows(grad_grad).to(acc)
    p = torch.exp(x - lse.to(acc)[:, None])
    a, _, _, _ = reference.cross_entropy_coefficients_ref(input, target, weight, ctx.ignore_index, ctx.label_smoothing)
    coef = coef.to(acc)[:, None]
    if ctx.reduction == _NONE:
        scale = grad_output.to(acc).reshape(-1, 1)
    elif ctx.reduction == _MEAN:
        scale = grad_output.to(acc) / total_weight.to(acc)
    else:
        scale = grad_output.to(acc)
    needs_grad_output, needs_input, needs_target, needs_weight = ctx.needs_input_grad[:4]
    grad_grad_output = grad_input = grad_target = grad_weight = None
    gg_dot_p = (gg * p).sum(-1, keepdim=True)
    if needs_grad_output:
        per_row = (gg * (coef * p - a)).sum(-1)
        if ctx.reduction == _NONE:
            grad_grad_output = per_row.reshape(grad_output.shape)
        else:
            grad_grad_output = per_row.sum() / total_weight.to(acc) if ctx.reduction == _MEAN else per_row.sum()
        grad_grad_output = grad_grad_output.to(grad_output.dtype)
    if needs_input:
        grad_input = reference._from_class_rows(scale * coef * p * (gg - gg_dot_p), input).to(input.dtype)
    if (needs_target or needs_weight) and _is_prob_target(input, target):
        n_classes = x.shape[-1]
        w = torch.ones(n_classes, dtype=acc, device=x.device) if weight is None else weight.to(acc)
        eps = max(ctx.label_smoothing, 0.0)
        if needs_target:
            grad_target = reference._from_class_rows(scale * (1 - eps) * w * (gg_dot_p - gg), target)
            grad_target = grad_target.to(target.dtype)
        if needs_weight and weight is not None:
            t = reference._class_rows(target).to(acc)
            smoothed = t * (1 - eps) + eps / n_classes if eps > 0 else t
            grad_weight = (scale * smoothed * (gg_dot_p - gg)).sum(0).to(weight.dtype)
    return grad_grad_output, grad_input, grad_target, grad_weight, None, None, None, None, None, None


_cross_entropy_backward.register_autograd(
    _cross_entropy_double_backward, setup_context=_cross_entropy_backward_setup_context
)


class _BackwardFunction(torch.autograd.Function):
    """The logits' gradient as a differentiable op (only under ``create_graph=True``).

    Takes the arguments of ``_backward_impl``; its backward is the second derivative in
    eager ops, ``_cross_entropy_double_backward``.
    """

    @staticmethod
    def forward(ctx, *inputs):
        _cross_entropy_backward_setup_context(ctx, inputs, None)
        return _backward_impl(*inputs)

    @staticmethod
    def backward(ctx, grad_grad):
        return _cross_entropy_double_backward(ctx, grad_grad)


def _scale_grad_impl(
    grad: torch.Tensor,
    grad_output: torch.Tensor,
    total_weight: torch.Tensor,
    target: torch.Tensor,
    reduction: int,
    ignore_index: int,
) -> None:
    """Scale the forward's gradient buffer in place by each row's factor."""
    prob_target = _is_prob_target(grad, target)
    if not use_triton("cross_entropy", grad, grad_output):
        scale = grad_output / total_weight if reduction == _MEAN else grad_output
        if reduction == _NONE:
            scale = scale.unsqueeze(0 if grad.dim() == 1 else 1)
        scaled = grad * scale.to(grad.dtype)
        if not prob_target:
            # Ignored rows stay 0 even when the scale is inf (a mean over no targets).
            scaled = scaled.masked_fill((target == ignore_index).unsqueeze(0 if grad.dim() == 1 else 1), 0)
        grad.copy_(scaled)
        return
    layout = _layout(grad)
    grad_3d = _class_view(grad, layout)
    kernels.cross_entropy_scale_grad(
        _row_view(grad_output, layout, grad_3d) if reduction == _NONE else grad_output,
        total_weight,
        target if prob_target else _row_view(target, layout, grad_3d),
        grad_3d,
        ignore_index,
        prob_target,
        reduction,
    )


@torch.library.custom_op("fused_ops::cross_entropy_scale_grad_", mutates_args=("grad",))
def _cross_entropy_scale_grad_(
    grad: torch.Tensor,
    grad_output: torch.Tensor,
    total_weight: torch.Tensor,
    target: torch.Tensor,
    reduction: int,
    ignore_index: int,
) -> None:
    _scale_grad_impl(grad, grad_output, total_weight, target, reduction, ignore_index)


class CrossEntropyFunction(torch.autograd.Function):
    """Cross-entropy whose forward and backward each read the logits once (Triton kernels).

    Saves the logits, the targets, the weight, and per row the logsumexp and the
    gradient coefficient; the backward writes ``grad_output``-scaled ``softmax - target``.
    With ``traced`` (under torch.compile) it runs the custom ops instead of the launchers.
    """

    @staticmethod
    def forward(ctx, input, target, weight, reduction, ignore_index, label_smoothing, traced):
        if traced:
            loss, lse, coef, total_weight, _ = torch.ops.fused_ops.cross_entropy_forward(
                input, target, weight, reduction, ignore_index, label_smoothing, False
            )
        else:
            loss, lse, coef, total_weight, _ = _forward_impl(
                input, target, weight, reduction, ignore_index, label_smoothing, False, False
            )
        ctx.save_for_backward(input, target, weight, lse, coef, total_weight)
        ctx.reduction = reduction
        ctx.ignore_index = ignore_index
        ctx.label_smoothing = label_smoothing
        ctx.traced = traced
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        input, target, weight, lse, coef, total_weight = ctx.saved_tensors
        needs_input, needs_target, needs_weight = ctx.needs_input_grad[:3]
        grad_input = grad_target = grad_weight = None
        if needs_input:
            if ctx.traced:
                backward = torch.ops.fused_ops.cross_entropy_backward
            elif torch.is_grad_enabled():
                # create_graph=True: the gradient must itself be differentiable.
                backward = _BackwardFunction.apply
            else:
                backward = _backward_impl
            grad_input = backward(
                grad_output,
                input,
                target,
                weight,
                lse,
                coef,
                total_weight,
                ctx.reduction,
                ctx.ignore_index,
                ctx.label_smoothing,
            )
        if needs_target or needs_weight:
            # Probability targets and their weight: rarely trained, so eager ops (which
            # autograd can differentiate again) rather than another kernel.
            grad_target, grad_weight = _prob_target_and_weight_grads(
                grad_output, input, target, weight, total_weight, ctx.reduction, ctx.label_smoothing
            )
            grad_target = grad_target if needs_target else None
            grad_weight = grad_weight if needs_weight else None
        return grad_input, grad_target, grad_weight, None, None, None, None


def _prob_target_and_weight_grads(grad_output, input, target, weight, total_weight, reduction, label_smoothing):
    """d loss / d target and d loss / d weight for probability targets, in eager ops."""
    acc = reference.compute_dtype(input.dtype)
    log_probs = torch.log_softmax(reference._class_rows(input).to(acc), dim=-1)
    t = reference._class_rows(target).to(acc)
    n_classes = log_probs.shape[-1]
    eps = max(label_smoothing, 0.0)
    w = torch.ones(n_classes, dtype=acc, device=input.device) if weight is None else weight.to(acc)
    if reduction == _NONE:
        scale = grad_output.to(acc).reshape(-1, 1)
    else:
        scale = grad_output.to(acc) / total_weight.to(acc) if reduction == _MEAN else grad_output.to(acc)
    grad_target = reference._from_class_rows(-(1 - eps) * scale * w * log_probs, target).to(target.dtype)
    smoothed = t * (1 - eps) + eps / n_classes if eps > 0 else t
    grad_weight = None if weight is None else (-(scale * smoothed * log_probs).sum(0)).to(weight.dtype)
    return grad_target, grad_weight


class CrossEntropyGradInForwardFunction(torch.autograd.Function):
    """Opt-in variant: the forward also writes the (unscaled) gradient; backward scales it in place.

    Saves only that buffer, the mean's denominator and the targets, not the logits. Once
    differentiable: a backward with ``create_graph=True`` raises. With ``traced`` (under
    torch.compile) it runs the custom ops instead of the launchers.
    """

    @staticmethod
    def forward(ctx, input, target, weight, reduction, ignore_index, label_smoothing, traced):
        forward = torch.ops.fused_ops.cross_entropy_forward if traced else _forward_impl
        loss, _, _, total_weight, grad = forward(input, target, weight, reduction, ignore_index, label_smoothing, True)
        ctx.save_for_backward(grad, total_weight, target)
        ctx.reduction = reduction
        ctx.ignore_index = ignore_index
        ctx.traced = traced
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():
            # create_graph=True: the buffer is a constant, so a gradient built from it
            # would silently have no second derivative. Say so instead.
            raise RuntimeError(
                "cross_entropy(grad_in_forward=True) does not support double backward (create_graph=True); "
                "use grad_in_forward=False"
            )
        grad, total_weight, target = ctx.saved_tensors
        # The buffer is ours alone, so it is scaled where it lies: no second logits-sized
        # allocation. A second backward (retain_graph=True) then fails autograd's
        # saved-tensor version check instead of reading an already scaled buffer.
        if ctx.traced:
            torch.ops.fused_ops.cross_entropy_scale_grad_(
                grad, grad_output, total_weight, target, ctx.reduction, ctx.ignore_index
            )
        else:
            _scale_grad_impl(grad, grad_output, total_weight, target, ctx.reduction, ctx.ignore_index)
            # The kernel's write is invisible to autograd: bump the version, as the
            # custom op's declared mutation does, so that the check above holds.
            torch.autograd.graph.increment_version(grad)
        return grad, None, None, None, None, None, None


_cross_entropy_apply = fast_apply(CrossEntropyFunction)
_grad_in_forward_apply = fast_apply(CrossEntropyGradInForwardFunction)


def _check_arguments(input, target, weight, ignore_index: int, label_smoothing: float) -> None:
    """torch's checks, error types and messages, in the order torch makes them."""
    check_same_device("cross_entropy", input, target, weight)
    if input.dim() == 0:
        raise IndexError("Dimension out of range (expected to be in range of [-1, 0], but got 1)")
    n_classes = input.shape[0 if input.dim() == 1 else 1]
    if _is_prob_target(input, target):
        if not target.is_floating_point():
            raise RuntimeError(
                "Expected floating point type for target with class probabilities, "
                f"got {scalar_type_name(target.dtype)}"
            )
        if ignore_index >= 0:
            raise RuntimeError("ignore_index is not supported for floating point target")
        if weight is not None and (weight.dim() != 1 or weight.numel() != n_classes):
            raise RuntimeError(
                f"cross_entropy: weight tensor should be defined either for all {n_classes} classes or no classes "
                f"but got weight tensor of shape: {list(weight.shape)}"
            )
        check_floating("cross_entropy", input)
        if label_smoothing > 1.0:
            raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
        return
    if label_smoothing > 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    check_floating("cross_entropy", input)
    if input.dim() != 1 and input.shape[0] != target.shape[0]:
        target_batch = target.shape[0] if target.dim() > 0 else 0
        raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target batch_size ({target_batch}).")
    if input.dim() <= 2:
        if target.dim() > 1:
            raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
        if input.dim() == 1 and target.dim() == 1 and target.shape[0] != 1:
            raise ValueError(f"For 1D input, 1D target must have size 1, but got target size: {target.shape[0]}")
    elif input.dim() == 4 and target.dim() != 3:
        raise RuntimeError(
            f"only batches of spatial targets supported (3D tensors) but got targets of dimension: {target.dim()}"
        )
    elif input.dim() == 4 and target.shape[1:] != input.shape[2:]:
        raise RuntimeError(f"size mismatch (got input: {list(input.shape)} , target: {list(target.shape)}")
    elif input.dim() != 4 and target.shape[1:] != input.shape[2:]:
        raise RuntimeError(f"Expected target size {[input.shape[0], *input.shape[2:]]}, got {list(target.shape)}")
    if target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(f"expected target dtype to be Long or Byte, but got {scalar_type_name(target.dtype)}")
    if weight is not None:
        if weight.dim() != 1 or weight.numel() != n_classes:
            if input.dim() <= 2:
                raise RuntimeError(
                    f"weight tensor should be defined either for all {n_classes} classes or no classes "
                    f"but got weight tensor of shape: {list(weight.shape)}"
                )
            raise RuntimeError("weight tensor should be defined either for all or no classes")
        if weight.dtype != input.dtype:
            raise RuntimeError(
                f"expected scalar type {scalar_type_name(input.dtype)} but found {scalar_type_name(weight.dtype)}"
            )
        if weight.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(
                "The function 'nll_loss_forward' is not differentiable with respect to argument 'weight'. "
                "This input cannot have requires_grad True."
            )


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    grad_in_forward: bool = False,
) -> torch.Tensor:
    """Drop-in for :func:`torch.nn.functional.cross_entropy`, without materialising the softmax.

    One pass over the logits computes the loss (an online logsumexp), and one more pass in
    the backward writes the gradient; vocabularies of 128k+ classes work at any row count.

    Args:
        input: unnormalized logits, float32/float64/float16/bfloat16 (computed in fp32,
            fp64 for fp64), any layout. The class dim is 1 (0 for a 1-D input).
        target: class indices (int64 or uint8) shaped like ``input`` without the class
            dim, each in ``[0, C)`` or equal to ``ignore_index``; or class probabilities
            (float) shaped exactly like ``input``.
        weight: a 1-D tensor of ``C`` class weights. For class indices it must have the
            input's dtype and cannot require grad (as torch); for probabilities it can.
        size_average: deprecated (see ``reduction``).
        ignore_index: a class-index target to skip; it adds nothing to the loss, the
            gradient, or the mean's denominator. Not allowed (>= 0) with probabilities.
        reduce: deprecated (see ``reduction``).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. The mean over class indices is
            weighted: the sum divided by the sum of the weights of non-ignored targets
            (nan when every target is ignored, as torch); over probabilities it divides
            by the number of rows.
        label_smoothing: in ``[0, 1]``; mixes the target with the uniform distribution,
            with torch's exact formula (for class indices, the smoothing term is weighted
            by ``weight`` and is 0 for ignored targets).
        grad_in_forward: keyword-only, fused_ops extension. When True, the forward also
            writes the gradient into a buffer of its own (the input is never written) and
            the backward only scales that buffer in place by ``grad_output``. The logits
            are then not saved: if nothing else holds them they are freed after the
            forward, and the backward allocates nothing logits-sized, so the peak memory of
            the backward drops by one logits-sized tensor. The cost: the buffer is held
            from forward to backward, and the forward reads the logits twice (it needs the
            final logsumexp before any gradient), so total traffic grows from 3 to 5
            logits-sized passes. Only ``input`` gets a gradient (targets and weight must
            not require grad), double backward raises, and a second
            backward with ``retain_graph=True`` raises. A per-row ``grad_output``
            (``'none'``) works like a scalar one: each row is scaled by its own value.

    Returns:
        The loss: ``'none'`` gives one value per target (shape of ``input`` without the
        class dim), otherwise a 0-d tensor. Its dtype is the input's (for probabilities,
        the promotion of input, target and weight dtypes, as torch). Reductions add per-row
        losses in a fixed order, so results are bitwise reproducible.

    Raises:
        IndexError: a target outside ``[0, C)`` that is not ``ignore_index`` ("Target 5 is
            out of bounds."), found by the forward kernel as it loads the targets and
            raised before the op returns, with nothing of the caller's written. On a GPU
            this check does not synchronize: a bad target triggers a device-side
            assertion instead (reported at a later sync, as torch's CUDA kernels do).
        RuntimeError / ValueError / NotImplementedError: as torch, for mismatched shapes,
            target or weight dtypes, weight sizes, integer logits and reduction names.

    Shape:
        Input ``(C)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``; target ``()``, ``(N)`` or
        ``(N, d1, ..., dK)`` for indices, or the input's shape for probabilities. Output
        ``()``, or for ``'none'`` the target shape (without the class dim).

    Example:
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]], requires_grad=True)
        >>> fused_ops.cross_entropy(logits, torch.tensor([0, 2]))
        tensor(1.2056, grad_fn=<CrossEntropyFunctionBackward>)
    """
    input, target, weight = autocast_inputs("cross_entropy", input, target, weight)
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    reduction_enum = torch.nn._reduction.get_enum(reduction)
    _check_arguments(input, target, weight, ignore_index, label_smoothing)
    label_smoothing = float(label_smoothing)
    traced = torch.compiler.is_compiling()
    if grad_in_forward:
        if target.requires_grad or (weight is not None and weight.requires_grad):
            raise RuntimeError("cross_entropy(grad_in_forward=True) computes only the input's gradient")
        function, apply = CrossEntropyGradInForwardFunction, _grad_in_forward_apply
    else:
        function, apply = CrossEntropyFunction, _cross_entropy_apply
    if traced:
        # Dynamo traces Function.apply itself (fast_apply's C++ call would break the graph).
        return function.apply(input, target, weight, reduction_enum, ignore_index, label_smoothing, True)
    if needs_autograd(input, target, weight):
        return apply(input, target, weight, reduction_enum, ignore_index, label_smoothing, False)
    # No autograd: the forward launches alone (no gradient buffer, which nothing would read).
    return _forward_impl(input, target, weight, reduction_enum, ignore_index, label_smoothing, False, False)[0]
