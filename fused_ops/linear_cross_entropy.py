"""Fused linear + cross-entropy: ``cross_entropy(input @ linear_weight.T + linear_bias, target)``
without ever holding the ``(N, C)`` logits in memory.

The op has three layers, read top to bottom:

- the functional (``linear_cross_entropy``) reproduces
  :func:`torch.nn.functional.linear_cross_entropy`: its signature, its checks and those of
  ``linear`` and ``cross_entropy`` it reaches, with torch's error types and messages;
- ``LinearCrossEntropyFunction`` saves the inputs and two floats per row (``lse`` and
  ``coef``); its backward recomputes the logits blockwise;
- ``_forward_impl`` and ``_backward_impl`` run the kernels
  (:mod:`fused_ops.kernels.linear_cross_entropy`). Under torch.compile the Function calls
  them as ``torch.library`` ops (``fused_ops::linear_cross_entropy_forward`` and
  ``_backward``, see ``kernel_op``): where kernels compile, ``triton_op``s whose kernels
  the graph holds (inductor launches them, CUDA graphs capture them); under Triton's
  interpreter, custom ops with fake implementations. Eager calls skip the ops' dispatch.

Probability targets and K-dimensional linear weights (``(C, d1, ..., dK, D)``) run on the
eager reference, logged once; every option of class-index targets runs the kernels.
"""

from __future__ import annotations

import torch

from . import reference
from ._dispatch import TRITON_AVAILABLE, _log_fallback_once, fast_apply, kernel_op, needs_autograd, use_triton
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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    options = (reduction, ignore_index, label_smoothing)
    n_classes = linear_weight.shape[0]
    if not use_triton(_OP, input, linear_weight, linear_bias, target, weight):
        in_bounds = reference.linear_ce_targets_in_bounds(target, n_classes, ignore_index)
        _assert_targets_in_bounds(in_bounds.all(), target, n_classes, ignore_index)
        return reference.linear_cross_entropy_forward_ref((input, linear_weight, linear_bias, target, weight), options)
    n_rows = input.shape[0]
    acc = reference.compute_dtype(input.dtype)
    device = input.device
    loss = torch.empty((n_rows,) if reduction == REDUCTION_NONE else (), dtype=input.dtype, device=device)
    lse = torch.empty(n_rows, dtype=acc, device=device)
    coef = torch.empty(n_rows, dtype=acc, device=device)
    total_weight = torch.empty((), dtype=acc, device=device)
    ok = torch.empty(1, dtype=torch.int8, device=device)
    weight = None if weight is None else weight.contiguous()
    kernels.linear_cross_entropy_forward(
        (input, linear_weight, linear_bias, target, weight), options, (loss, lse, coef, total_weight, ok)
    )
    _assert_targets_in_bounds(ok, target, n_classes, ignore_index)
    return loss, lse, coef, total_weight


def _forward_fake(input, linear_weight, linear_bias, target, weight, reduction, ignore_index, label_smoothing):
    n_rows = input.shape[0]
    acc = reference.compute_dtype(input.dtype)
    return (
        input.new_empty((n_rows,) if reduction == REDUCTION_NONE else ()),
        input.new_empty((n_rows,), dtype=acc),
        input.new_empty((n_rows,), dtype=acc),
        input.new_empty((), dtype=acc),
    )


# The op torch.compile records (eager calls run _forward_impl itself, without the op's
# dispatch): a triton_op where kernels compile, so the graph holds the kernels.
_forward_op = kernel_op("fused_ops::linear_cross_entropy_forward", fake=_forward_fake)(_forward_impl)


def _backward_impl(
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
    needs_input: bool,
    needs_weight: bool,
    needs_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    needed = (needs_input, needs_weight, needs_bias and linear_bias is not None)
    grads = _grad_buffers(input, linear_weight, linear_bias, *needed)
    options = (reduction, ignore_index, label_smoothing)
    if not use_triton(_OP, grad_output, input, linear_weight, linear_bias, target, weight):
        saved = (input, linear_weight, linear_bias, target, weight, lse, coef, total_weight)
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
        saved = (input, linear_weight, linear_bias, target, weight, lse, coef, total_weight)
        outputs = tuple(grad if need else None for grad, need in zip(grads, needed, strict=True))
        kernels.linear_cross_entropy_backward(grad_output, saved, options, outputs)
    return grads


def _backward_fake(grad_output, input, linear_weight, linear_bias, *args):
    # args end with needs_input, needs_weight, needs_bias.
    return _grad_buffers(input, linear_weight, linear_bias, *args[-3:])


_backward_op = kernel_op("fused_ops::linear_cross_entropy_backward", fake=_backward_fake)(_backward_impl)


class LinearCrossEntropyFunction(torch.autograd.Function):
    """Linear + cross-entropy on ``(N, D)`` input and ``(N,)`` class indices, logits never stored.

    Saves the input, the linear weight and bias, the targets, the class weight, and per row
    ``lse`` and ``coef``; the backward recomputes the logits tile by tile. With ``traced``
    (under torch.compile) it calls the ``torch.library`` ops, which the graph records;
    otherwise their implementations, without the ops' dispatch.
    """

    @staticmethod
    def forward(
        ctx, input, linear_weight, linear_bias, target, weight, reduction, ignore_index, label_smoothing, traced
    ):
        ctx.options = (reduction, ignore_index, label_smoothing)
        ctx.traced = traced
        forward = torch.ops.fused_ops.linear_cross_entropy_forward if traced else _forward_impl
        loss, *stats = forward(input, linear_weight, linear_bias, target, weight, *ctx.options)
        # In the backward op's argument order: the forward's inputs, then lse, coef, total_weight.
        ctx.save_for_backward(input, linear_weight, linear_bias, target, weight, *stats)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        needs = ctx.needs_input_grad[:3]
        if not any(needs):
            return (None,) * 9
        if torch.is_grad_enabled():
            # create_graph=True: a gradient that can be differentiated again. The kernels'
            # gradient would be a constant to autograd, so the eager reference (which holds
            # the logits) builds this rare graph instead, and double backward is exact.
            return _differentiable_backward(ctx, grad_output, *ctx.saved_tensors[:5])
        backward = torch.ops.fused_ops.linear_cross_entropy_backward if ctx.traced else _backward_impl
        grads = backward(grad_output, *ctx.saved_tensors, *ctx.options, *needs)
        return (*(grad if need else None for grad, need in zip(grads, needs, strict=True)), *(None,) * 6)


_apply = fast_apply(LinearCrossEntropyFunction)


def _differentiable_backward(ctx, grad_output, input, linear_weight, linear_bias, target, weight):
    """The gradients as a differentiable function of the saved inputs (eager reference)."""
    needed = ctx.needs_input_grad[:3]
    leaves = [t for t, need in zip((input, linear_weight, linear_bias), needed, strict=True) if need]
    reduction, ignore_index, label_smoothing = ctx.options
    with torch.enable_grad():
        loss = reference.linear_cross_entropy_ref(
            input, linear_weight, target, linear_bias, weight, REDUCTIONS[reduction], ignore_index, label_smoothing
        )
        grads = iter(torch.autograd.grad(loss, leaves, grad_output, create_graph=True))
    return (*(next(grads) if need else None for need in needed), *(None,) * 6)


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
    num_classes, out_features = _check_linear(input, linear_weight, linear_bias)
    logits_shape = (*input.shape[:-1], num_classes, *out_features)
    prob_target = tuple(target.shape) == logits_shape
    if prob_target and ignore_index is not None:
        raise RuntimeError("ignore_index cannot be specified when target contains probabilities")
    ignore_index = -100 if ignore_index is None else ignore_index
    if out_features or prob_target:
        reason = "K-dimensional linear weights" if out_features else "probability targets"
        _log_fallback_once(_OP, f"{reason} have no kernel")
    else:
        check_same_device(_OP, input, linear_weight, linear_bias, target, weight)
        _check_linear_dtypes(input, linear_weight, linear_bias)
        _check_cross_entropy(input, target, weight, num_classes, label_smoothing)
        reduction_enum = torch.nn._reduction.get_enum(reduction)
    if out_features or prob_target or num_classes == 0:
        # Those two have no kernel (torch's own checks run there). With no class at all,
        # every target is out of bounds unless ignored: torch's own path raises or returns
        # the empty loss, so take it.
        return reference.linear_cross_entropy_ref(
            input, linear_weight, target, linear_bias, weight, reduction, ignore_index, label_smoothing
        )
    x = input.unsqueeze(0) if input.dim() == 1 else input
    arguments = (
        x,
        linear_weight,
        linear_bias,
        target.reshape(-1) if input.dim() == 1 else target,
        weight,
        reduction_enum,
        ignore_index,
        # torch smooths only for a positive value: a negative one means none.
        max(float(label_smoothing), 0.0),
    )
    if torch.compiler.is_compiling():
        # Dynamo traces Function.apply itself (fast_apply's C++ call would break the graph).
        loss = LinearCrossEntropyFunction.apply(*arguments, True)
    elif needs_autograd(x, linear_weight, linear_bias):
        loss = _apply(*arguments, False)
    else:
        # No autograd: the forward launches alone, and the per-row statistics are dropped.
        loss = _forward_impl(*arguments)[0]
    if input.dim() == 1 and reduction_enum == REDUCTION_NONE:
        loss = loss.reshape(())
    return loss
