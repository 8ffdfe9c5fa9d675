"""Fused losses: mean squared error.

The op has three layers, read top to bottom:

- the functional (``mse_loss``) reproduces :func:`torch.nn.functional.mse_loss` up to the
  kernel call: the size-mismatch warning, the legacy ``size_average``/``reduce``
  arguments, broadcasting (as differentiable ``expand`` views, so autograd sums each
  gradient back to its operand's shape), reduction and dtype checks;
- two ``torch.autograd.Function``\\ s call the launchers and ask for the gradients that
  autograd needs, no more. ``MSELossOnePassFunction`` ('mean', 'sum') writes them in the
  forward, in the same pass as the loss, and its backward scales them in place on the
  device unless ``grad_output`` is 1; ``MSELossFunction`` ('none') saves input and target
  and its backward writes grad_input and grad_target in one launch. A second backward
  (``retain_graph=True``) through the one-pass Function computes fresh gradients from the
  saved operands, and under ``create_graph=True`` either applies ``_BackwardFunction``,
  whose backward is the second derivative in eager ops. Without autograd the functional
  calls the launcher directly;
- under ``torch.compile``, ``torch.library`` custom ops (``fused_ops::mse_loss_forward``
  and ``_backward``) with fake implementations run the kernels, so
  ``torch.compile(fullgraph=True)`` traces them; the backward op has the same second
  derivative registered as its autograd.
"""

from __future__ import annotations

import warnings

import torch

from . import reference
from ._autocast import autocast_inputs
from ._dispatch import TRITON_AVAILABLE, fast_apply, kernel_op, needs_autograd, use_triton
from ._validation import FLOATING_DTYPES, REDUCTIONS, check_floating, check_same_device, dense_layout, legacy_reduction

if TRITON_AVAILABLE:
    from .kernels import mse as kernels


def _forward_impl(input: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    # One dense layout for both paths, so the 'none' output's strides do not depend on
    # the backend (the fake below reproduces them).
    input, target = dense_layout(input, target)
    if use_triton("mse_loss", input, target):
        return kernels.mse_loss_forward(input, target, reduction)
    return reference.mse_loss_ref(input, target, reduction)


def _one_pass_forward_impl(
    input: torch.Tensor, target: torch.Tensor, reduction: str, input_grad: bool, target_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(loss, grad_input, grad_target) for 'mean' or 'sum': the gradients for a grad_output of 1."""
    input, target = dense_layout(input, target)
    if use_triton("mse_loss", input, target):
        grad_input = torch.empty_like(input) if input_grad else None
        grad_target = torch.empty_like(input, dtype=target.dtype) if target_grad else None
        return kernels.mse_loss_forward(input, target, reduction, grad_input, grad_target), grad_input, grad_target
    loss = reference.mse_loss_ref(input, target, reduction)
    ones = torch.ones((), dtype=loss.dtype, device=loss.device)
    return loss, *reference.mse_loss_backward_ref(ones, input, target, reduction, input_grad, target_grad)


def _scale_grad_impl(grad_output: torch.Tensor, grad_input: torch.Tensor | None, grad_target: torch.Tensor | None):
    """Scale the one-pass forward's gradients in place by the 0-d ``grad_output`` (nothing if it is 1)."""
    if use_triton("mse_loss", grad_output, grad_input, grad_target):
        kernels.mse_loss_scale_grad(grad_output, grad_input, grad_target)
        return
    for grad in (grad_input, grad_target):
        if grad is not None:
            grad.copy_(grad * grad_output.to(grad.dtype))


def _backward_impl(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str,
    input_grad: bool,
    target_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(grad_input, grad_target), each None unless asked for."""
    scalar_grad_output = _one_value(grad_output)
    if scalar_grad_output:
        input, target = dense_layout(input, target)
    else:
        grad_output, input, target = dense_layout(grad_output, input, target)
    if use_triton("mse_loss", grad_output, input, target):
        return kernels.mse_loss_backward(
            grad_output, input, target, reduction == "mean", scalar_grad_output, input_grad, target_grad
        )
    return reference.mse_loss_backward_ref(grad_output, input, target, reduction, input_grad, target_grad)


def _forward_fake(input: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    out_dtype = torch.promote_types(input.dtype, target.dtype)
    if reduction == "none":
        input, _ = dense_layout(input, target)
        return torch.empty_like(input, dtype=out_dtype)
    return input.new_empty((), dtype=out_dtype)


@kernel_op("fused_ops::mse_loss_forward", fake=_forward_fake)
def _mse_loss_forward(input: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    return _forward_impl(input, target, reduction)


def _one_value(grad_output: torch.Tensor) -> bool:
    """True when ``grad_output`` holds one value for every element (all its strides are 0)."""
    # A 0-d gradient of a mean or sum, or for 'none' the expanded 0-d one that
    # loss.sum().backward() sends: the kernel reads the value itself, so no dense copy.
    return all(stride == 0 for stride in grad_output.stride())


def _placeholder(like: torch.Tensor) -> torch.Tensor:
    # Custom ops cannot return None, so a gradient nobody asked for comes back as an
    # empty tensor that the autograd Function drops.
    return like.new_empty((0,))


def _backward_fake(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str,
    input_grad: bool,
    target_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    if _one_value(grad_output):
        layout, _ = dense_layout(input, target)
    else:
        _, layout, _ = dense_layout(grad_output, input, target)
    grad_input = torch.empty_like(layout, dtype=input.dtype) if input_grad else _placeholder(input)
    grad_target = torch.empty_like(layout, dtype=target.dtype) if target_grad else _placeholder(target)
    return grad_input, grad_target


@kernel_op("fused_ops::mse_loss_backward", fake=_backward_fake)
def _mse_loss_backward(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str,
    input_grad: bool,
    target_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    grad_input, grad_target = _backward_impl(grad_output, input, target, reduction, input_grad, target_grad)
    return (
        _placeholder(input) if grad_input is None else grad_input,
        _placeholder(target) if grad_target is None else grad_target,
    )


def _mse_loss_backward_setup_context(ctx, inputs, output) -> None:
    grad_output, input, target, reduction, input_grad, target_grad = inputs
    ctx.save_for_backward(grad_output, input, target)
    ctx.reduction = reduction
    ctx.input_grad = input_grad
    ctx.target_grad = target_grad


def _mse_loss_double_backward(ctx, grad_grad_input: torch.Tensor | None, grad_grad_target: torch.Tensor | None):
    # With d = scale * (input - target), the backward computes grad_input = d * grad_output
    # and grad_target = -grad_input. So for upstream gradients (gi, gt) of those outputs,
    # with delta = gi - gt: d/d(grad_output) = sum(scale * (input - target) * delta) to
    # grad_output's shape, d/d(input) = scale * grad_output * delta, d/d(target) = -that.
    grad_output, input, target = ctx.saved_tensors
    acc = reference.compute_dtype(torch.promote_types(input.dtype, target.dtype))
    delta = None
    if ctx.input_grad and grad_grad_input is not None:
        delta = grad_grad_input.to(acc)
    if ctx.target_grad and grad_grad_target is not None:
        delta = -grad_grad_target.to(acc) if delta is None else delta - grad_grad_target.to(acc)
    if delta is None:
        return None, None, None, None, None, None
    scale = 2.0 / max(input.numel(), 1) if ctx.reduction == "mean" else 2.0
    needs_grad_output, needs_input, needs_target = ctx.needs_input_grad[:3]
    grad_grad_output = grad_input = grad_target = None
    if needs_grad_output:
        grad_grad_output = scale * (input.to(acc) - target.to(acc)) * delta
        if ctx.reduction != "none":
            grad_grad_output = grad_grad_output.sum()
        grad_grad_output = grad_grad_output.to(grad_output.dtype)
    if needs_input or needs_target:
        step = scale * grad_output.to(acc) * delta
        grad_input = step.to(input.dtype) if needs_input else None
        grad_target = (-step).to(target.dtype) if needs_target else None
    return grad_grad_output, grad_input, grad_target, None, None, None


_mse_loss_backward.register_autograd(_mse_loss_double_backward, setup_context=_mse_loss_backward_setup_context)


@torch.compiler.allow_in_graph
def _broadcast_with_warning(input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's size-mismatch warning, then both operands as broadcast (differentiable) views.

    In the graph as one call, because Dynamo cannot trace ``warnings.warn``: under
    torch.compile the warning is raised while tracing, as torch's own mse_loss does.
    Non-broadcastable shapes raise torch's RuntimeError.
    """
    warnings.warn(
        f"Using a target size ({target.size()}) that is different to the input size ({input.size()}). "
        "This will likely lead to incorrect results due to broadcasting. "
        "Please ensure they have the same size.",
        stacklevel=3,
    )
    return tuple(torch.broadcast_tensors(input, target))


class _BackwardFunction(torch.autograd.Function):
    """MSE's backward as a differentiable op (only under ``create_graph=True``).

    ``forward(grad_output, input, target, reduction, input_grad, target_grad)`` returns
    (grad_input, grad_target), an empty placeholder for one not asked for; its backward
    is the second derivative in eager ops.
    """

    @staticmethod
    def forward(ctx, grad_output, input, target, reduction, input_grad, target_grad):
        ctx.save_for_backward(grad_output, input, target)
        ctx.reduction, ctx.input_grad, ctx.target_grad = reduction, input_grad, target_grad
        grad_input, grad_target = _backward_impl(grad_output, input, target, reduction, input_grad, target_grad)
        return (
            _placeholder(input) if grad_input is None else grad_input,
            _placeholder(target) if grad_target is None else grad_target,
        )

    @staticmethod
    def backward(ctx, grad_grad_input, grad_grad_target):
        return _mse_loss_double_backward(ctx, grad_grad_input, grad_grad_target)


class MSELossFunction(torch.autograd.Function):
    """MSE loss of two same-shaped tensors; forward and fused backward are Triton kernels."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
        output = _forward_impl(input, target, reduction)
        ctx.save_for_backward(input, target)
        ctx.reduction = reduction
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        input, target = ctx.saved_tensors
        input_grad, target_grad = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():
            # create_graph=True: the gradients must themselves be differentiable.
            grad_input, grad_target = _BackwardFunction.apply(
                grad_output, input, target, ctx.reduction, input_grad, target_grad
            )
        else:
            grad_input, grad_target = _backward_impl(grad_output, input, target, ctx.reduction, input_grad, target_grad)
        return (grad_input if input_grad else None, grad_target if target_grad else None, None)


class MSELossOnePassFunction(torch.autograd.Function):
    """'mean' or 'sum' MSE whose forward also writes the gradients: one pass over the operands.

    The first backward hands out the forward's buffers after one kernel that reads
    ``grad_output`` on the device and scales them in place unless it is 1. A later
    backward through the same graph (``retain_graph=True``) never touches buffers already
    handed out (autograd may keep them as ``.grad``): it computes fresh gradients from the
    saved operands, as does a backward with ``create_graph=True``.
    """

    @staticmethod
    def forward(ctx, input: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
        input_grad, target_grad = ctx.needs_input_grad[:2]
        output, grad_input, grad_target = _one_pass_forward_impl(input, target, reduction, input_grad, target_grad)
        ctx.save_for_backward(input, target)
        ctx.reduction = reduction
        # Not saved tensors: once handed out, a buffer may change in place (as .grad),
        # which must not fail a later backward's saved-tensor version check.
        ctx.grads = (grad_input, grad_target)
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        if ctx.grads is not None and not torch.is_grad_enabled():
            (grad_input, grad_target), ctx.grads = ctx.grads, None
            _scale_grad_impl(grad_output, grad_input, grad_target)
            return grad_input, grad_target, None
        return MSELossFunction.backward(ctx, grad_output)


class _MSELossTracedFunction(torch.autograd.Function):
    """MSELossFunction over the custom ops, for torch.compile."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
        output = torch.ops.fused_ops.mse_loss_forward(input, target, reduction)
        ctx.save_for_backward(input, target)
        ctx.reduction = reduction
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        input, target = ctx.saved_tensors
        input_grad, target_grad = ctx.needs_input_grad[:2]
        grad_input, grad_target = torch.ops.fused_ops.mse_loss_backward(
            grad_output, input, target, ctx.reduction, input_grad, target_grad
        )
        return (grad_input if input_grad else None, grad_target if target_grad else None, None)


_mse_loss_apply = fast_apply(MSELossFunction)
_one_pass_apply = fast_apply(MSELossOnePassFunction)


def mse_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Drop-in for :func:`torch.nn.functional.mse_loss`: the (mean or summed) squared error.

    Args:
        input: predictions, any shape and layout, float (or integer when ``target`` is float).
        target: ground truth, broadcastable to ``input``'s shape. A different size warns,
            as torch does, and broadcasts; gradients flow to it too when it requires grad.
        size_average: deprecated (see ``reduction``); if given, with ``reduce``, overrides it.
        reduce: deprecated (see ``reduction``).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. The mean of an empty tensor is nan.
        weight: optional per-element weights of ``input``'s size, as in torch 2.13: the
            loss is ``weight * (input - target)^2``, and ``'mean'`` divides its sum by
            ``weight.sum()``. The squared error is the fused kernel; the weighting and
            its reduction are eager torch ops.

    Returns:
        With ``'none'``, the elementwise loss in the broadcast shape; otherwise a 0-d
        tensor. Its dtype is the promotion of ``input.dtype`` and ``target.dtype``.
        Without weights, sums are accumulated in fp32 (fp64 for fp64) in a fixed order,
        so they are bitwise reproducible.

    Shape:
        Input ``(*)``, target broadcastable to ``(*)``; output ``(*)`` for ``'none'``, else ``()``.

    Example:
        >>> input = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
        >>> fused_ops.mse_loss(input, torch.tensor([1.0, 1.0, 1.0]))
        tensor(3.3333, grad_fn=<MSELossFunctionBackward>)
    """
    input, target = autocast_inputs("mse_loss", input, target)
    input_size = input.size()
    if target.size() != input_size:
        input, target = _broadcast_with_warning(input, target)
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    if weight is not None:
        return _weighted_mse_loss(input, target, weight, input_size, reduction)
    return _mse_loss(input, target, REDUCTIONS[torch.nn._reduction.get_enum(reduction)])


def _mse_loss(input: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """Checks, then the fused loss of two operands of one shape."""
    check_same_device("mse_loss", input, target)
    dtype = torch.promote_types(input.dtype, target.dtype)
    if dtype not in FLOATING_DTYPES:
        check_floating("mse_loss", torch.empty((), dtype=dtype, device="meta"), name="input and target")
    # An integer or bool operand of a float loss takes the promoted dtype here (it cannot
    # require grad); two float dtypes go to the kernels as they are, which upcast each.
    if not input.is_floating_point():
        input = input.to(dtype)
    if not target.is_floating_point():
        target = target.to(dtype)
    if torch.compiler.is_compiling():
        return _MSELossTracedFunction.apply(input, target, reduction)
    if needs_autograd(input, target):
        if reduction != "none":
            return _one_pass_apply(input, target, reduction)
        return _mse_loss_apply(input, target, reduction)
    return _forward_impl(input, target, reduction)


def _weighted_mse_loss(
    input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, input_size: torch.Size, reduction: str
) -> torch.Tensor:
    """torch's weighted branch, with its own checks and messages, on the fused squared error."""
    if weight.size() != input_size:
        raise ValueError("Weights and input must have the same size.")
    weighted = _mse_loss(input, target, "none") * weight
    if reduction == "none":
        return weighted
    if reduction == "sum":
        return weighted.sum()
    if reduction == "mean":
        return weighted.sum() / weight.sum()
    raise ValueError(f"Invalid reduction mode: {reduction}. Expected one of 'none', 'mean', 'sum'.")
