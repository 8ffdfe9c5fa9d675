"""Fused linear + cross-entropy: ``cross_entropy(input @ linear_weight.T + linear_bias, target)``
without ever holding the ``(N, C)`` logits in memory.

The op has three layers, read top to bottom:

- the functional (``linear_cross_entropy``) reproduces
  :func:`torch.nn.functional.linear_cross_entropy`: its signature, its checks and those of
  ``linear`` and ``cross_entropy`` it reaches, with torch's error types and messages;
- autograd saves the inputs and two floats per row (``lse`` and ``coef``, with the mean's
  denominator in one ``stats`` buffer); the backward recomputes the logits blockwise. In
  eager mode the C++ autograd node of fused_ops/_native.py records the op
  (``FusedLinearCrossEntropyBackward``), and ``LinearCrossEntropyFunction`` where the node
  is unavailable, under forward AD or functorch, and under torch.compile;
- the kernels (:mod:`fused_ops.kernels.linear_cross_entropy`). Eager calls launch them
  through a ``_Plan`` cached per signature (shapes, strides, dtypes, devices, options),
  which holds the validation's outcome and the launches with their sizes, strides and
  constexprs bound (``LaunchPlan``), so a repeated call pays little more than its tensors'
  allocation and launch. Under torch.compile the Function calls ``_forward_impl`` and
  ``_backward_impl`` as ``torch.library`` ops (``fused_ops::linear_cross_entropy_forward``
  and ``_backward``, see ``kernel_op``): where kernels compile, ``triton_op``s whose
  kernels the graph holds (inductor launches them, CUDA graphs capture them); under
  Triton's interpreter, custom ops with fake implementations.

Probability targets and K-dimensional linear weights (``(C, d1, ..., dK, D)``) run on the
eager reference, logged once; every option of class-index targets runs the kernels.
"""

from __future__ import annotations

import torch

from . import _native, reference
from ._dispatch import (
    TRITON_AVAILABLE,
    _forward_ad,
    _log_fallback_once,
    fast_apply,
    kernel_op,
    needs_autograd,
    use_triton,
)
from ._validation import (
    REDUCTION_NONE,
    REDUCTIONS,
    check_floating,
    check_same_device,
    scalar_type_name,
)

if TRITON_AVAILABLE:
    from .kernels import linear_cross_entropy as kernels

_OP = "linear_cross_entropy"


def _empty_grad(like: torch.Tensor, needed: bool) -> torch.Tensor:
    """A contiguous gradient buffer shaped like ``like``, or an empty placeholder."""
    if needed:
        return torch.empty(like.shape, dtype=like.dtype, device=like.device)
    return like.new_empty((0,))


def _grad_buffers(input, linear_weight, linear_bias, needs_input, needs_weight, needs_bias):
    """The backward op's three outputs: a buffer for each needed gradient, else a placeholder."""
    has_bias = needs_bias and linear_bias is not None
    grad_bias = _empty_grad(linear_bias, True) if has_bias else input.new_empty((0,))
    return _empty_grad(input, needs_input), _empty_grad(linear_weight, needs_weight), grad_bias


def _assert_targets_in_bounds(ok: torch.Tensor, target: torch.Tensor, n_classes: int, ignore_index: int) -> None:
    """torch's ``IndexError: Target 5 is out of bounds.`` unless ``ok``, without a host sync.

    ``torch._assert_async`` does not synchronize on a GPU: a bad target there becomes a
    device-side assertion (reported at a later sync, as torch's own CUDA kernels do). On
    the CPU it raises at once, and only then are the targets read again to name the value.
    """
    try:
        torch._assert_async(ok, "linear_cross_entropy: a target is out of bounds")
    except RuntimeError:
        bad = ~reference.linear_ce_targets_in_bounds(target, n_classes, ignore_index)
        raise IndexError(f"Target {int(target[bad][0])} is out of bounds.") from None


def _forward_impl(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    linear_bias: torch.Tensor | None,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, stats): ``stats`` holds per row ``lse``, then per row ``coef``, then ``total_weight``."""
    options = (reduction, ignore_index, label_smoothing)
    n_classes = linear_weight.shape[0]
    if not use_triton(_OP, input, linear_weight, linear_bias, target, weight):
        in_bounds = reference.linear_ce_targets_in_bounds(target, n_classes, ignore_index)
        _assert_targets_in_bounds(in_bounds.all(), target, n_classes, ignore_index)
        inputs = (input, linear_weight, linear_bias, target, weight)
        loss, lse, coef, total_weight = reference.linear_cross_entropy_forward_ref(inputs, options)
        return loss, torch.cat((lse, coef, total_weight.reshape(1)))
    n_rows = input.shape[0]
    acc = reference.compute_dtype(input.dtype)
    device = input.device
    loss = torch.empty((n_rows,) if reduction == REDUCTION_NONE else (), dtype=input.dtype, device=device)
    stats = torch.empty(2 * n_rows + 1, dtype=acc, device=device)
    ok = torch.empty(1, dtype=torch.int8, device=device)
    weight = None if weight is None else weight.contiguous()
    kernels.linear_cross_entropy_forward(
        (input, linear_weight, linear_bias, target, weight), options, (loss, stats, ok)
    )
    _assert_targets_in_bounds(ok, target, n_classes, ignore_index)
    return loss, stats


def _forward_fake(input, linear_weight, linear_bias, target, weight, reduction, ignore_index, label_smoothing):
    n_rows = input.shape[0]
    acc = reference.compute_dtype(input.dtype)
    return input.new_empty((n_rows,) if reduction == REDUCTION_NONE else ()), input.new_empty(2 * n_rows + 1, dtype=acc)


def _unpack_stats(stats: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lse, coef, total_weight) as views of the forward's ``stats``."""
    return stats[:n_rows], stats[n_rows : 2 * n_rows], stats[2 * n_rows]


# The op torch.compile records (eager calls launch through a _Plan instead, without the
# op's dispatch): a triton_op where kernels compile, so the graph holds the kernels.
_forward_op = kernel_op("fused_ops::linear_cross_entropy_forward", fake=_forward_fake)(_forward_impl)


def _backward_impl(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    linear_bias: torch.Tensor | None,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    stats: torch.Tensor,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
    needs_input: bool,
    needs_weight: bool,
    needs_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    needed = (needs_input, needs_weight, needs_bias and linear_bias is not None)
    grads = _grad_buffers(input, linear_weight, linear_bias, *needed)
    options = (reduction, ignore_index, label_smoothing)
    if not use_triton(_OP, grad_output, input, linear_weight, linear_bias, target, weight):
        saved = (input, linear_weight, linear_bias, target, weight, *_unpack_stats(stats, input.shape[0]))
        refs = reference.linear_cross_entropy_backward_ref(grad_output, saved, options)
        for grad, ref, need in zip(grads, refs, needed, strict=True):
            if need:
                grad.copy_(ref)
    elif input.shape[0] == 0:
        # No rows to add up: a zero gradient, as torch's matmul over an empty dim gives.
        for grad in grads:
            grad.zero_()
    else:
        weight = None if weight is None else weight.contiguous()
        saved = (input, linear_weight, linear_bias, target, weight, stats)
        outputs = tuple(grad if need else None for grad, need in zip(grads, needed, strict=True))
        kernels.linear_cross_entropy_backward(grad_output, saved, options, outputs)
    return grads


def _backward_fake(grad_output, input, linear_weight, linear_bias, *args):
    # args end with needs_input, needs_weight, needs_bias.
    return _grad_buffers(input, linear_weight, linear_bias, *args[-3:])


_backward_op = kernel_op("fused_ops::linear_cross_entropy_backward", fake=_backward_fake)(_backward_impl)


class _Plan:
    """What the eager path needs besides the tensors, for validated inputs of one signature.

    A pure function of the inputs' shapes, strides, dtypes and devices and of the options,
    so the functional caches it (``_PLANS``): the options in the kernels' form, and the
    kernels' :class:`~fused_ops.kernels.linear_cross_entropy.LaunchPlan` (made at the first
    launch, with every launch's sizes, strides and constexprs bound).
    """

    __slots__ = ("launches", "n_classes", "options")

    def __init__(self, n_classes: int, options: tuple[int, int, float]) -> None:
        self.n_classes = n_classes
        self.options = options
        self.launches = None


def _forward_eager(plan: _Plan, input, linear_weight, linear_bias, target, weight):
    """``_forward_impl`` for validated eager inputs, through the plan's bound launches: (loss, stats)."""
    if not use_triton(_OP, input, linear_weight, linear_bias, target, weight):
        return _forward_impl(input, linear_weight, linear_bias, target, weight, *plan.options)
    if weight is not None:
        weight = weight.contiguous()
    launches = plan.launches
    if launches is None:
        launches = plan.launches = kernels.LaunchPlan(
            input, linear_weight, linear_bias, target, weight is not None, plan.options, planned=True
        )
    n_rows, acc, device = launches.n_rows, launches.acc, launches.device
    loss = torch.empty((n_rows,) if launches.reduction == REDUCTION_NONE else (), dtype=input.dtype, device=device)
    # lse, coef and total_weight in one buffer: each allocation costs about as much
    # host time as a launch.
    stats = torch.empty(launches.stats_numel, dtype=acc, device=device)
    ok = torch.empty(1, dtype=torch.int8, device=device)
    launches.forward((input, linear_weight, linear_bias, target, weight), (loss, stats, ok))
    _assert_targets_in_bounds(ok, target, plan.n_classes, plan.options[1])
    return loss, stats


def _backward_eager(grad_output, input, linear_weight, linear_bias, target, weight, stats, plan: _Plan, needs):
    """``_backward_impl`` for the eager path: a gradient or None per (input, linear_weight, linear_bias).

    ``needs`` says which of them require a gradient (the C++ node does not know).
    """
    launches = plan.launches
    if (
        launches is None
        or launches.n_rows == 0
        or not use_triton(_OP, grad_output, input, linear_weight, linear_bias, target, weight)
    ):
        # The reference (the backend may differ from the forward's), or no rows.
        grads = _backward_impl(
            grad_output,
            input,
            linear_weight,
            linear_bias,
            target,
            weight,
            stats,
            *plan.options,
            *needs,
        )
        return tuple(grad if need else None for grad, need in zip(grads, needs, strict=True))
    device = launches.device
    grad_input = grad_weight = grad_bias = None
    if needs[0]:
        grad_input = torch.empty(input.shape, dtype=input.dtype, device=device)
    if needs[1]:
        grad_weight = torch.empty(linear_weight.shape, dtype=linear_weight.dtype, device=device)
    if needs[2]:
        grad_bias = torch.empty(linear_bias.shape, dtype=linear_bias.dtype, device=device)
    if weight is not None:
        weight = weight.contiguous()
    saved = (input, linear_weight, linear_bias, target, weight, stats)
    launches.backward(grad_output, saved, (grad_input, grad_weight, grad_bias))
    return grad_input, grad_weight, grad_bias


def _differentiable_grads(grad_output, input, linear_weight, linear_bias, target, weight, options, needs):
    """The gradients as a differentiable function of the saved inputs (eager reference).

    For ``create_graph=True``: the kernels' gradient would be a constant to autograd, so
    the eager reference (which holds the logits) builds this rare graph instead, and
    double backward is exact. A gradient or None per (input, linear_weight, linear_bias).
    """
    leaves = [t for t, need in zip((input, linear_weight, linear_bias), needs, strict=True) if need]
    reduction, ignore_index, label_smoothing = options
    with torch.enable_grad():
        loss = reference.linear_cross_entropy_ref(
            input, linear_weight, target, linear_bias, weight, REDUCTIONS[reduction], ignore_index, label_smoothing
        )
        grads = iter(torch.autograd.grad(loss, leaves, grad_output, create_graph=True))
    return tuple(next(grads) if need else None for need in needs)


def _node_differentiable_backward(grad_output, input, linear_weight, linear_bias, target, weight, *rest):
    """The C++ node's backward under ``create_graph=True`` (``rest``: stats, plan, needs)."""
    plan, needs = rest[-2:]
    return _differentiable_grads(grad_output, input, linear_weight, linear_bias, target, weight, plan.options, needs)


class LinearCrossEntropyFunction(torch.autograd.Function):
    """Linear + cross-entropy on ``(N, D)`` input and ``(N,)`` class indices, logits never stored.

    Saves the input, the linear weight and bias, the targets, the class weight, and per row
    ``lse`` and ``coef``; the backward recomputes the logits tile by tile. With ``traced``
    (under torch.compile) it calls the ``torch.library`` ops, which the graph records;
    otherwise it launches through ``plan`` (a ``_Plan``), without the ops' dispatch. The
    eager path records a C++ node instead (fused_ops/_native.py) where it is available;
    this Function serves where it is not, and under forward AD and functorch transforms.
    """

    @staticmethod
    def forward(
        ctx, input, linear_weight, linear_bias, target, weight, reduction, ignore_index, label_smoothing, traced, plan
    ):
        ctx.options = (reduction, ignore_index, label_smoothing)
        ctx.traced = traced
        ctx.plan = plan
        if traced:
            forward = torch.ops.fused_ops.linear_cross_entropy_forward
            loss, stats = forward(input, linear_weight, linear_bias, target, weight, *ctx.options)
        else:
            loss, stats = _forward_eager(plan, input, linear_weight, linear_bias, target, weight)
        # In the backward op's argument order: the forward's inputs, then the statistics.
        ctx.save_for_backward(input, linear_weight, linear_bias, target, weight, stats)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        needs = ctx.needs_input_grad[:3]
        if not any(needs):
            return (None,) * 10
        if torch.is_grad_enabled():
            grads = _differentiable_grads(grad_output, *ctx.saved_tensors[:5], ctx.options, needs)
        elif ctx.traced:
            backward = torch.ops.fused_ops.linear_cross_entropy_backward
            grads = backward(grad_output, *ctx.saved_tensors, *ctx.options, *needs)
            grads = tuple(grad if need else None for grad, need in zip(grads, needs, strict=True))
        else:
            grads = _backward_eager(grad_output, *ctx.saved_tensors, ctx.plan, needs)
        return (*grads, *(None,) * 7)


_apply = fast_apply(LinearCrossEntropyFunction)
_functorch_active = torch._C._are_functorch_transforms_active
_matmul_precision = torch._C._get_float32_matmul_precision
# The eager path's autograd node, where the C++ node records it.
_NODE_NAME = "FusedLinearCrossEntropyBackward"
# Validated inputs' plans, keyed on what validation and the launches depend on (see
# linear_cross_entropy).
_PLANS: dict[tuple, _Plan] = {}
_MAX_PLANS = 4096


def _check_linear(input, linear_weight, linear_bias) -> tuple[int, tuple[int, ...]]:
    """torch.nn.functional.linear_cross_entropy's own checks, then linear's dtype checks."""
    if input.dim() < 1 or input.dim() > 2:
        raise RuntimeError(f"expected input with dimensionality 1 or 2, got {input.dim()}")
    if linear_weight.dim() < 2:
        raise RuntimeError(f"expected linear_weight with dimensionality at least 2, got {linear_weight.dim()}")
    in_features = input.shape[-1]
    if in_features != linear_weight.shape[-1]:
        raise RuntimeError(
            "expected equal input and linear_weight last dimensions (in_features), "
            f"got {input.shape[-1]} and {linear_weight.shape[-1]}, respectively"
        )
    num_classes = linear_weight.shape[0]
    out_features = tuple(linear_weight.shape[1:-1])
    if linear_bias is not None and tuple(linear_bias.shape) != (num_classes, *out_features):
        raise RuntimeError(f"expected linear_bias shape {(num_classes, *out_features)}, got {tuple(linear_bias.shape)}")
    if out_features and input.dim() == 1:
        raise RuntimeError(
            f"K-dimensional loss defined by linear_weight shape {tuple(linear_weight.shape)} requires"
            f" batched input, (N, {in_features}), got unbatched"
            f" input with shape {tuple(input.shape)}"
        )
    return num_classes, out_features


def _check_linear_dtypes(input, linear_weight, linear_bias) -> None:
    # The messages of torch's CPU matmul (addmm) for mismatched dtypes.
    if input.dtype != linear_weight.dtype:
        raise RuntimeError(
            "expected m1 and m2 to have the same dtype, but got: "
            f"{_c10_name(input.dtype)} != {_c10_name(linear_weight.dtype)}"
        )
    if linear_bias is not None and linear_bias.dtype != input.dtype:
        raise RuntimeError(
            "self and mat2 must have the same dtype, but got "
            f"{scalar_type_name(linear_bias.dtype)} and {scalar_type_name(input.dtype)}"
        )


def _c10_name(dtype: torch.dtype) -> str:
    return {torch.float32: "float", torch.float64: "double", torch.float16: "c10::Half"}.get(
        dtype, f"c10::{scalar_type_name(dtype)}"
    )


def _check_cross_entropy(input, target, weight, num_classes: int, label_smoothing: float) -> None:
    """cross_entropy's checks for class-index targets, in torch's order, for logits (N, C) or (C,)."""
    if label_smoothing > 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    if input.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        check_floating("log_softmax_lastdim_kernel_impl", input)
    if input.dim() == 2 and input.shape[0] != target.shape[0]:
        target_batch = target.shape[0] if target.dim() > 0 else 0
        raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target batch_size ({target_batch}).")
    if target.dim() > 1:
        raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
    if input.dim() == 1 and target.dim() == 1 and target.shape[0] != 1:
        raise ValueError(f"For 1D input, 1D target must have size 1, but got target size: {target.shape[0]}")
    if target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(f"expected target dtype to be Long or Byte, but got {scalar_type_name(target.dtype)}")
    if weight is not None:
        if weight.dim() != 1 or weight.numel() != num_classes:
            raise RuntimeError(
                f"weight tensor should be defined either for all {num_classes} classes or no classes "
                f"but got weight tensor of shape: {list(weight.shape)}"
            )
        if weight.dtype != input.dtype:
            raise RuntimeError(
                f"expected scalar type {scalar_type_name(input.dtype)} but found {scalar_type_name(weight.dtype)}"
            )
        if weight.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(
                "The function 'nll_loss_forward' is not differentiable with respect to argument 'weight'. "
                "This input cannot have requires_grad True."
            )


def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options=None,
) -> torch.Tensor:
    """Drop-in for :func:`torch.nn.functional.linear_cross_entropy` that never stores the logits.

    Computes ``cross_entropy(linear(input, linear_weight, linear_bias), target, ...)``: the
    forward is a blockwise matmul with an online log-sum-exp that keeps two floats per row;
    the backward recomputes the logits block by block and accumulates the gradients of
    ``input``, ``linear_weight`` and ``linear_bias`` in fp32, deterministically (no atomics).
    Extra memory is O(N) instead of the N x C logits (and their softmax and gradient).
    fp32 matmuls are IEEE fp32 unless ``torch.get_float32_matmul_precision()`` allows TF32.

    Args:
        input: ``(D,)`` or ``(N, D)`` features; float32/float64/float16/bfloat16.
        linear_weight: ``(C, D)`` (or ``(C, d1, ..., dK, D)`` for a K-dimensional loss, run
            on the eager reference), same dtype as ``input``.
        target: class indices, ``()`` or ``(N,)`` (``(N, d1, ..., dK)`` for K-dim), int64 or
            uint8, each in ``[0, C)`` or ``ignore_index``; or class probabilities shaped like
            the logits (eager reference).
        linear_bias: optional ``(C,)`` bias, same dtype as ``input``.
        weight: optional ``(C,)`` class weights, as :func:`torch.nn.functional.cross_entropy`.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``; the mean over class indices is
            weighted by ``weight`` (nan when every target is ignored, as torch).
        ignore_index: a target to skip; ``None`` means -100 for class indices, as torch.
            Must be ``None`` with probability targets.
        label_smoothing: in ``[0, 1]``, torch's formula (weighted by ``weight``).
        options: accepted for signature compatibility and ignored: torch's
            ``LinearCrossEntropyOptions`` choose its chunked path, which this op does not
            need (nothing logits-sized is stored, and every option is supported).

    Returns:
        The loss: 0-d, or for ``'none'`` one value per row (``()`` for a 1-D input), in the
        input's dtype.

    Raises:
        IndexError: a target outside ``[0, C)`` that is not ``ignore_index``, found by the
            kernels without a host sync (a device-side assertion on a GPU).
        RuntimeError / ValueError / NotImplementedError: as torch, for shapes, dtypes,
            weights, label smoothing and reduction names.

    Shape:
        input ``(D)`` or ``(N, D)``; linear_weight ``(C, D)``; target ``()`` or ``(N)``;
        output ``()``, or ``(N)`` for ``'none'`` with a 2-D input.

    Example:
        >>> x = torch.randn(8, 16, requires_grad=True)
        >>> head = torch.randn(100, 16, requires_grad=True)
        >>> loss = fused_ops.linear_cross_entropy(x, head, torch.randint(0, 100, (8,)))
        >>> loss.backward()
    """
    traced = torch.compiler.is_compiling()
    # Inputs like ones seen before (shapes, strides, dtypes, devices, options) passed the
    # checks then, and have a plan: validation and the launches' arithmetic once. With
    # class weights the checks also read them (and grad mode): checked every call.
    plan = key = None
    if not traced:
        key = (
            input.shape,
            input.stride(),
            input.dtype,
            input.device,
            linear_weight.shape,
            linear_weight.stride(),
            linear_weight.dtype,
            linear_weight.device,
            None
            if linear_bias is None
            else (linear_bias.shape, linear_bias.stride(), linear_bias.dtype, linear_bias.device),
            target.shape,
            target.stride(),
            target.dtype,
            target.device,
            None if weight is None else (weight.shape, weight.stride(), weight.dtype, weight.device),
            reduction,
            ignore_index,
            label_smoothing,
            _matmul_precision(),  # whether fp32 dots may use TF32
        )
        plan = _PLANS.get(key)
    if plan is None or weight is not None:
        options = _checked_options(
            input, linear_weight, linear_bias, target, weight, reduction, ignore_index, label_smoothing
        )
        if options is None:
            # K-dimensional weights and probability targets have no kernel (torch's own
            # checks run there). With no class at all, every target is out of bounds unless
            # ignored: torch's own path raises or returns the empty loss, so take it.
            return reference.linear_cross_entropy_ref(
                input,
                linear_weight,
                target,
                linear_bias,
                weight,
                reduction,
                -100 if ignore_index is None else ignore_index,
                label_smoothing,
            )
        if plan is None:
            plan = _Plan(linear_weight.shape[0], options)
            if key is not None:
                if len(_PLANS) >= _MAX_PLANS:  # inputs of ever-changing shapes: start over
                    _PLANS.clear()
                _PLANS[key] = plan
    one_d = input.dim() == 1
    x = input.unsqueeze(0) if one_d else input
    if one_d:
        target = target.reshape(-1)
    if traced:
        # Dynamo traces Function.apply itself (fast_apply's C++ call would break the graph).
        loss = LinearCrossEntropyFunction.apply(
            x, linear_weight, linear_bias, target, weight, *plan.options, True, None
        )
    elif needs_autograd(x, linear_weight, linear_bias):
        attach = _native._attach
        if attach is _native.UNLOADED:
            attach = _native.attach()
        if (
            attach is not None
            and _forward_ad._current_level < 0
            and not _functorch_active()
            and use_triton(_OP, x, linear_weight, linear_bias, target, weight)
        ):
            # The kernels, then the C++ node that records them (see fused_ops/_native.py).
            # The node's backward is not told which inputs require grad: ``needs`` is.
            loss, stats = _forward_eager(plan, x, linear_weight, linear_bias, target, weight)
            needs = (
                x.requires_grad,
                linear_weight.requires_grad,
                linear_bias is not None and linear_bias.requires_grad,
            )
            loss = attach(
                loss,
                (x, linear_weight, linear_bias),
                (x, linear_weight, linear_bias, target, weight, stats),
                _backward_eager,
                _node_differentiable_backward,
                (plan, needs),
                _NODE_NAME,
            )
        else:
            loss = _apply(x, linear_weight, linear_bias, target, weight, *plan.options, False, plan)
    else:
        # No autograd: the forward launches alone, and the per-row statistics are dropped.
        loss = _forward_eager(plan, x, linear_weight, linear_bias, target, weight)[0]
    if one_d and plan.options[0] == REDUCTION_NONE:
        loss = loss.reshape(())
    return loss


def _checked_options(input, linear_weight, linear_bias, target, weight, reduction, ignore_index, label_smoothing):
    """torch's checks, in its order; the kernels' ``(reduction, ignore_index, label_smoothing)``.

    None for inputs the kernels do not take (K-dimensional linear weights, probability
    targets, no classes), which go to the eager reference.
    """
    num_classes, out_features = _check_linear(input, linear_weight, linear_bias)
    logits_shape = (*input.shape[:-1], num_classes, *out_features)
    prob_target = tuple(target.shape) == logits_shape
    if prob_target and ignore_index is not None:
        raise RuntimeError("ignore_index cannot be specified when target contains probabilities")
    if out_features or prob_target:
        _log_fallback_once(
            _OP, f"{'K-dimensional linear weights' if out_features else 'probability targets'} have no kernel"
        )
        return None
    check_same_device(_OP, input, linear_weight, linear_bias, target, weight)
    _check_linear_dtypes(input, linear_weight, linear_bias)
    _check_cross_entropy(input, target, weight, num_classes, label_smoothing)
    reduction_enum = torch.nn._reduction.get_enum(reduction)
    if num_classes == 0:
        return None
    # torch smooths only for a positive value: a negative one means none.
    return reduction_enum, -100 if ignore_index is None else ignore_index, max(float(label_smoothing), 0.0)
