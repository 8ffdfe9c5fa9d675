"""Fused softmax and log_softmax over any dim, forward and backward.

Each op has the same layers as :mod:`fused_ops.activations`:

- the functional (``softmax``, ``log_softmax``) checks arguments like torch and applies
  ``dtype=``; without autograd it calls the launcher directly;
- the ``torch.autograd.Function`` calls the launchers and saves the OUTPUT with
  ``ctx.save_for_backward``: both gradients are functions of the output alone, so the
  input is never kept alive. Under ``create_graph=True`` its backward applies
  ``_BackwardFunction``, whose backward is the second derivative in eager ops;
- under ``torch.compile``, ``torch.library`` custom ops (``fused_ops::softmax_forward``,
  ``_backward`` and the ``log_softmax`` pair) with fake implementations run the kernels,
  so ``torch.compile(fullgraph=True)`` traces without a graph break; each backward op
  has the same second derivative registered as its autograd.

The kernels reduce over dim 1 of an ``(outer, N, inner)`` view, which ``reshape`` gives
without a copy whenever the tensor's strides allow one (contiguous, transposed, sliced or
expanded views usually do); only a layout that no such view can describe is copied.
Outputs and input gradients are contiguous, as torch's are.
"""

from __future__ import annotations

import operator
import warnings

import torch

from . import _native, reference
from ._autocast import autocast_dtype
from ._dispatch import TRITON_AVAILABLE, _forward_ad, fast_apply, kernel_op, specialize_shapes, use_triton
from ._validation import FLOATING_DTYPES, check_floating, normalize_dim

if TRITON_AVAILABLE:
    from .kernels import softmax as kernels

# Half-precision inputs with dtype=torch.float32 are cast inside the kernels: the kernels
# compute in fp32 anyway, and widening is exact, so this is torch's result with no extra
# pass over memory. Every other dtype= cast is done up front, exactly as torch does it.
_CAST_IN_KERNEL = {(torch.float16, torch.float32), (torch.bfloat16, torch.float32)}


def _forward(op: str, input: torch.Tensor, dim: int, output_dtype: torch.dtype, log: bool) -> torch.Tensor:
    if use_triton(op, input):
        if input.is_contiguous():
            # The common case: the launcher takes the dim, so no 3-D view is made.
            return kernels.softmax_forward(input, output_dtype, log, dim)
        # reshape is a view (real strides, no copy) whenever one exists, else a contiguous copy.
        output = kernels.softmax_forward(input.reshape(kernels.three_d(input.shape, dim)), output_dtype, log)
        return output.view(input.shape)
    ref = reference.log_softmax_ref if log else reference.softmax_ref
    return ref(input, dim, output_dtype).contiguous()


def _backward(
    op: str, grad_output: torch.Tensor, output: torch.Tensor, dim: int, input_dtype: torch.dtype, log: bool
) -> torch.Tensor:
    if use_triton(op, grad_output, output):
        if grad_output.is_contiguous() and output.is_contiguous():
            return kernels.softmax_backward(grad_output, output, input_dtype, log, dim)
        # grad_output is often an expanded view (the gradient of a sum), which reshapes to
        # stride-0 views that the kernel reads in place.
        shape = kernels.three_d(output.shape, dim)
        grad_input = kernels.softmax_backward(grad_output.reshape(shape), output.reshape(shape), input_dtype, log)
        return grad_input.view(output.shape)
    ref = reference.log_softmax_backward_ref if log else reference.softmax_backward_ref
    return ref(grad_output, output, dim, input_dtype).contiguous()


def _empty_output(input: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(input.shape, dtype=dtype, device=input.device)


def _empty_forward_fake(input: torch.Tensor, dim: int, output_dtype: torch.dtype) -> torch.Tensor:
    return _empty_output(input, output_dtype)


def _empty_backward_fake(grad_output, output: torch.Tensor, dim: int, input_dtype: torch.dtype) -> torch.Tensor:
    return _empty_output(output, input_dtype)


# The torch.library ops run only where torch.compile traces (eager calls _forward and
# _backward directly); there sizes may be symbolic, and the launchers choose tiles from them.


@kernel_op("fused_ops::softmax_forward", fake=_empty_forward_fake)
def _softmax_forward(input: torch.Tensor, dim: int, output_dtype: torch.dtype) -> torch.Tensor:
    return _forward("softmax", *specialize_shapes(input), dim, output_dtype, log=False)


@kernel_op("fused_ops::log_softmax_forward", fake=_empty_forward_fake)
def _log_softmax_forward(input: torch.Tensor, dim: int, output_dtype: torch.dtype) -> torch.Tensor:
    return _forward("log_softmax", *specialize_shapes(input), dim, output_dtype, log=True)


@kernel_op("fused_ops::softmax_backward", fake=_empty_backward_fake)
def _softmax_backward(
    grad_output: torch.Tensor, output: torch.Tensor, dim: int, input_dtype: torch.dtype
) -> torch.Tensor:
    return _backward("softmax", *specialize_shapes(grad_output, output), dim, input_dtype, log=False)


@kernel_op("fused_ops::log_softmax_backward", fake=_empty_backward_fake)
def _log_softmax_backward(
    grad_output: torch.Tensor, output: torch.Tensor, dim: int, input_dtype: torch.dtype
) -> torch.Tensor:
    return _backward("log_softmax", *specialize_shapes(grad_output, output), dim, input_dtype, log=True)


def _backward_setup_context(ctx, inputs, output) -> None:
    grad_output, saved_output, dim, _ = inputs
    ctx.save_for_backward(grad_output, saved_output)
    ctx.dim = dim


def _softmax_double_backward(ctx, grad_grad_input: torch.Tensor):
    # grad_input = y * (g - S) with S = sum(g * y), so for an upstream gradient u:
    # d/dg = y * (u - sum(u * y)) and d/dy = u * (g - S) - g * sum(u * y).
    grad_output, output = ctx.saved_tensors
    u = grad_grad_input.to(output.dtype)
    u_dot_y = (u * output).sum(ctx.dim, keepdim=True)
    g_dot_y = (grad_output * output).sum(ctx.dim, keepdim=True)
    grad_grad_output = output * (u - u_dot_y)
    grad_saved_output = u * (grad_output - g_dot_y) - grad_output * u_dot_y
    return grad_grad_output, grad_saved_output, None, None


def _log_softmax_double_backward(ctx, grad_grad_input: torch.Tensor):
    # grad_input = g - exp(y) * sum(g), so for an upstream gradient u:
    # d/dg = u - sum(u * exp(y)) and d/dy = -u * exp(y) * sum(g).
    grad_output, output = ctx.saved_tensors
    u = grad_grad_input.to(output.dtype)
    softmax = output.exp()
    grad_grad_output = u - (u * softmax).sum(ctx.dim, keepdim=True)
    grad_saved_output = -u * softmax * grad_output.sum(ctx.dim, keepdim=True)
    return grad_grad_output, grad_saved_output, None, None


_softmax_backward.register_autograd(_softmax_double_backward, setup_context=_backward_setup_context)
_log_softmax_backward.register_autograd(_log_softmax_double_backward, setup_context=_backward_setup_context)


class _BackwardFunction(torch.autograd.Function):
    """The backward of softmax or log_softmax as a differentiable op (only under ``create_graph=True``).

    Its own backward is the second derivative in eager ops, which autograd can
    differentiate again.
    """

    @staticmethod
    def forward(ctx, grad_output, output, dim, input_dtype, log):
        ctx.save_for_backward(grad_output, output)
        ctx.dim, ctx.log = dim, log
        return _backward("log_softmax" if log else "softmax", grad_output, output, dim, input_dtype, log)

    @staticmethod
    def backward(ctx, grad_grad_input):
        double_backward = _log_softmax_double_backward if ctx.log else _softmax_double_backward
        grad_grad_output, grad_saved_output, _, _ = double_backward(ctx, grad_grad_input)
        return grad_grad_output, grad_saved_output, None, None, None


def _function_backward(ctx, grad_output: torch.Tensor, op: str, log: bool):
    """SoftmaxFunction's and LogSoftmaxFunction's backward: the input gradient, then None, None."""
    (output,) = ctx.saved_tensors
    if _is_grad_enabled():
        # create_graph=True: the gradient must itself be differentiable.
        return _BackwardFunction.apply(grad_output, output, ctx.dim, ctx.input_dtype, log), None, None
    return _backward(op, grad_output, output, ctx.dim, ctx.input_dtype, log), None, None


def _node_backwards(op: str, log: bool):
    """The backwards the C++ node calls (fused_ops/_native.py), ``(grad_output, output, dim, input_dtype)``:
    the launch, and the same recorded by autograd (``create_graph=True``)."""

    def backward(grad_output: torch.Tensor, output: torch.Tensor, dim: int, input_dtype: torch.dtype) -> torch.Tensor:
        return _backward(op, grad_output, output, dim, input_dtype, log)

    def differentiable_backward(grad_output, output, dim, input_dtype) -> torch.Tensor:
        return _BackwardFunction.apply(grad_output, output, dim, input_dtype, log)

    return backward, differentiable_backward


class SoftmaxFunction(torch.autograd.Function):
    """Softmax over ``dim`` by Triton kernels; the backward uses only the saved output."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, dim: int, output_dtype: torch.dtype) -> torch.Tensor:
        output = _forward("softmax", input, dim, output_dtype, log=False)
        ctx.save_for_backward(output)
        ctx.dim, ctx.input_dtype = dim, input.dtype
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return _function_backward(ctx, grad_output, "softmax", False)


class LogSoftmaxFunction(torch.autograd.Function):
    """Log-softmax over ``dim`` by Triton kernels; the backward uses only the saved output."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, dim: int, output_dtype: torch.dtype) -> torch.Tensor:
        output = _forward("log_softmax", input, dim, output_dtype, log=True)
        ctx.save_for_backward(output)
        ctx.dim, ctx.input_dtype = dim, input.dtype
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return _function_backward(ctx, grad_output, "log_softmax", True)


class _SoftmaxTracedFunction(torch.autograd.Function):
    """SoftmaxFunction over the custom ops, for torch.compile."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, dim: int, output_dtype: torch.dtype) -> torch.Tensor:
        output = torch.ops.fused_ops.softmax_forward(input, dim, output_dtype)
        ctx.save_for_backward(output)
        ctx.dim, ctx.input_dtype = dim, input.dtype
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (output,) = ctx.saved_tensors
        return torch.ops.fused_ops.softmax_backward(grad_output, output, ctx.dim, ctx.input_dtype), None, None


class _LogSoftmaxTracedFunction(torch.autograd.Function):
    """LogSoftmaxFunction over the custom ops, for torch.compile."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, dim: int, output_dtype: torch.dtype) -> torch.Tensor:
        output = torch.ops.fused_ops.log_softmax_forward(input, dim, output_dtype)
        ctx.save_for_backward(output)
        ctx.dim, ctx.input_dtype = dim, input.dtype
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (output,) = ctx.saved_tensors
        return torch.ops.fused_ops.log_softmax_backward(grad_output, output, ctx.dim, ctx.input_dtype), None, None


# Per op: the eager Function's apply, the Function over custom ops, whether the op is
# log_softmax, the C++ node's two backwards and the node's name.
_FUNCTIONS = {
    "softmax": (
        fast_apply(SoftmaxFunction),
        _SoftmaxTracedFunction,
        False,
        _node_backwards("softmax", False),
        "FusedSoftmaxBackward",
    ),
    "log_softmax": (
        fast_apply(LogSoftmaxFunction),
        _LogSoftmaxTracedFunction,
        True,
        _node_backwards("log_softmax", True),
        "FusedLogSoftmaxBackward",
    ),
}
_is_compiling = torch.compiler.is_compiling
_is_grad_enabled = torch.is_grad_enabled
_functorch_active = torch._C._are_functorch_transforms_active


def _apply(op: str, input: torch.Tensor, dim: int, dtype: torch.dtype | None) -> torch.Tensor:
    """Check arguments in torch's order (dim, then dtype) and run ``op``."""
    if dim.__class__ is not int:
        try:
            dim = operator.index(dim)
        except TypeError:
            raise TypeError(f"{op}(): argument 'dim' (position 2) must be int, not {type(dim).__name__}") from None
    ndim = input.dim()
    # normalize_dim's common case inline (a dim in range of a tensor with dims).
    dim = dim % ndim if -ndim <= dim < ndim else normalize_dim(dim, ndim)
    if dtype is not None and dtype != input.dtype and (input.dtype, dtype) not in _CAST_IN_KERNEL:
        input = input.to(dtype)
    if input.dtype not in FLOATING_DTYPES:
        check_floating(op, input)
    apply, traced_function, log, (node_backward, node_differentiable_backward), node_name = _FUNCTIONS[op]
    output_dtype = dtype or input.dtype
    if _is_compiling():
        return traced_function.apply(input, dim, output_dtype)
    if _is_grad_enabled() and input.requires_grad and _forward_ad._current_level < 0:
        attach = _native._attach
        if attach is _native.UNLOADED:
            attach = _native.attach()
        # Contiguous inputs only: the strided path returns a view, which the node must not own.
        if attach is not None and input.is_contiguous() and not _functorch_active() and use_triton(op, input):
            # The kernel (_forward's contiguous case), then the C++ node that records it
            # (see fused_ops/_native.py).
            output = kernels.softmax_forward(input, output_dtype, log, dim)
            args = (dim, input.dtype)
            return attach(output, input, output, node_backward, node_differentiable_backward, args, node_name)
        return apply(input, dim, output_dtype)
    if _forward_ad._current_level >= 0:
        return apply(input, dim, output_dtype)
    return _forward(op, input, dim, output_dtype, log)


def softmax(input: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Drop-in for :func:`torch.softmax`: ``exp(x_i) / sum_j exp(x_j)`` along ``dim``.

    Args:
        input: a floating-point tensor of any shape and layout.
        dim: the dimension to normalize over; negative values count from the end. A 0-d
            tensor accepts 0 and -1.
        dtype: if given, ``input`` is cast to it first, as in torch (so integer tensors
            work with ``dtype=torch.float32``); the gradient still comes back in the
            input's dtype. A float16/bfloat16 input with ``dtype=torch.float32`` is cast
            inside the kernel, at no extra memory traffic.

    Returns:
        A contiguous tensor of ``input``'s shape and ``dtype`` (default: ``input.dtype``)
        whose slices along ``dim`` sum to 1. As in torch, a slice of only ``-inf`` is NaN,
        and a slice containing ``+inf`` or NaN is all NaN.

    Raises:
        IndexError: ``dim`` is out of range.
        NotImplementedError: the (cast) input is not float32, float64, float16 or bfloat16.

    Shape:
        Input ``(*)``, output ``(*)``.

    Example:
        >>> fused_ops.softmax(torch.tensor([[1.0, 2.0, 3.0]]), dim=-1)
        tensor([[0.0900, 0.2447, 0.6652]])
    """
    dtype = autocast_dtype("softmax", input, dtype)
    return _apply("softmax", input, dim, dtype)


def log_softmax(input: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Drop-in for :func:`torch.log_softmax`: ``x_i - log(sum_j exp(x_j))`` along ``dim``.

    Args:
        input: a floating-point tensor of any shape and layout.
        dim: the dimension to normalize over; negative values count from the end. A 0-d
            tensor accepts 0 and -1.
        dtype: if given, ``input`` is cast to it first, as in torch; the gradient still
            comes back in the input's dtype. A float16/bfloat16 input with
            ``dtype=torch.float32`` is cast inside the kernel, at no extra memory traffic.

    Returns:
        A contiguous tensor of ``input``'s shape and ``dtype`` (default: ``input.dtype``).
        As in torch, ``-inf`` beside finite values stays ``-inf``, a slice of only ``-inf``
        is NaN, and a slice containing ``+inf`` or NaN is all NaN.

    Raises:
        IndexError: ``dim`` is out of range.
        NotImplementedError: the (cast) input is not float32, float64, float16 or bfloat16.

    Shape:
        Input ``(*)``, output ``(*)``.

    Example:
        >>> fused_ops.log_softmax(torch.tensor([[1.0, 2.0, 3.0]]), dim=-1)
        tensor([[-2.4076, -1.4076, -0.4076]])
    """
    dtype = autocast_dtype("log_softmax", input, dtype)
    return _apply("log_softmax", input, dim, dtype)


def implicit_softmax_dim(name: str, ndim: int, stacklevel: int) -> int:
    """torch's deprecated choice of dim when none is given: 0 for 0-, 1- and 3-d, else 1.

    Warns exactly as ``torch.nn.functional`` does, for modules built with ``dim=None``.
    """
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X as an argument.",
        stacklevel=stacklevel,
    )
    return 0 if ndim in (0, 1, 3) else 1
