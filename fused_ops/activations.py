"""Fused elementwise activations: sigmoid, tanh and relu (and in-place relu_).

Each op reads top to bottom:

- the functional (``sigmoid``) validates arguments like torch. Without autograd (no_grad,
  or an input that does not require grad) it calls the launcher directly; otherwise it
  applies the one ``torch.autograd.Function`` (``SigmoidFunction``), which calls the
  launchers and saves what backward needs with ``ctx.save_for_backward`` (so a second
  backward through a freed graph raises). This eager path has no ``torch.library``
  machinery on it: each layer of it costs microseconds of host time per call.
- When backward runs with ``create_graph=True``, it applies ``_BackwardFunction``, whose
  own backward is the derivative of the backward in eager ops: double backward
  (``gradgradcheck``) works.
- Under ``torch.compile`` the functional applies a Function over ``torch.library`` custom
  ops (``fused_ops::sigmoid_forward`` and ``_backward``) with fake implementations, so
  ``torch.compile(fullgraph=True)`` traces without a graph break. The backward op has the
  same double-backward formula registered as its autograd.
"""

from __future__ import annotations

import functools

import torch

from . import reference
from ._autocast import autocast_inputs
from ._dispatch import TRITON_AVAILABLE, fast_apply, needs_autograd, use_triton
from ._validation import FLOATING_DTYPES, check_floating, dense_layout, promote_to_floating

if TRITON_AVAILABLE:
    from .kernels import activations as kernels

_is_compiling = torch.compiler.is_compiling


def _sigmoid_forward_impl(input: torch.Tensor) -> torch.Tensor:
    if use_triton("sigmoid", input):
        (input,) = dense_layout(input)
        return kernels.sigmoid_forward(input)
    return reference.sigmoid_ref(input)


def _sigmoid_backward_impl(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    if use_triton("sigmoid", grad_output, output):
        grad_output, output = dense_layout(grad_output, output)
        return kernels.sigmoid_backward(grad_output, output)
    return reference.sigmoid_backward_ref(grad_output, output)


@torch.library.custom_op("fused_ops::sigmoid_forward", mutates_args=())
def _sigmoid_forward(input: torch.Tensor) -> torch.Tensor:
    return _sigmoid_forward_impl(input)


@_sigmoid_forward.register_fake
def _(input: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(input)


@torch.library.custom_op("fused_ops::sigmoid_backward", mutates_args=())
def _sigmoid_backward(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return _sigmoid_backward_impl(grad_output, output)


@_sigmoid_backward.register_fake
def _(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(output)


def _save_backward_inputs(ctx, inputs, output) -> None:
    # Every backward op here takes (grad_output, output); their derivatives need both.
    ctx.save_for_backward(*inputs)


class _BackwardFunction(torch.autograd.Function):
    """An activation's backward as a differentiable op: applied only under ``create_graph=True``.

    ``forward(grad_output, output, backward_impl, double_backward)`` launches the backward
    kernel; its own backward is ``double_backward``, the derivative in eager ops (which
    autograd can differentiate again).
    """

    @staticmethod
    def forward(ctx, grad_output, output, backward_impl, double_backward):
        ctx.save_for_backward(grad_output, output)
        ctx.double_backward = double_backward
        return backward_impl(grad_output, output)

    @staticmethod
    def backward(ctx, grad_grad_input):
        return (*ctx.double_backward(ctx, grad_grad_input), None, None)


def _backward(grad_output, output, backward_impl, double_backward):
    """The input gradient from the saved output: a plain launch unless autograd records it."""
    if torch.is_grad_enabled():
        # create_graph=True: the gradient must itself be differentiable.
        return _BackwardFunction.apply(grad_output, output, backward_impl, double_backward)
    return backward_impl(grad_output, output)


def _sigmoid_double_backward(ctx, grad_grad_input: torch.Tensor):
    # grad_input = g * y * (1 - y), so d/dg = y * (1 - y) and d/dy = g * (1 - 2y).
    grad_output, output = ctx.saved_tensors
    grad_grad_output = grad_grad_input * output * (1 - output)
    grad_output_saved = grad_grad_input * grad_output * (1 - 2 * output)
    return grad_grad_output, grad_output_saved


_sigmoid_backward.register_autograd(_sigmoid_double_backward, setup_context=_save_backward_inputs)


class SigmoidFunction(torch.autograd.Function):
    """Sigmoid whose forward and backward are Triton kernels; backward uses the saved output."""

    @staticmethod
    def forward(ctx, input: torch.Tensor) -> torch.Tensor:
        output = _sigmoid_forward_impl(input)
        ctx.save_for_backward(output)
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (output,) = ctx.saved_tensors
        return _backward(grad_output, output, _sigmoid_backward_impl, _sigmoid_double_backward)


class _SigmoidTracedFunction(torch.autograd.Function):
    """SigmoidFunction over the custom ops, for torch.compile."""

    @staticmethod
    def forward(ctx, input: torch.Tensor) -> torch.Tensor:
        output = torch.ops.fused_ops.sigmoid_forward(input)
        ctx.save_for_backward(output)
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (output,) = ctx.saved_tensors
        return torch.ops.fused_ops.sigmoid_backward(grad_output, output)


_sigmoid_apply = fast_apply(SigmoidFunction)


def sigmoid(input: torch.Tensor) -> torch.Tensor:
    """Drop-in for :func:`torch.sigmoid`: ``1 / (1 + exp(-input))`` elementwise.

    Args:
        input: a tensor of any shape and layout. Integer and bool tensors are promoted to
            the default float dtype, as torch does.

    Returns:
        A tensor of the same shape and float dtype. Both tails keep torch's relative
        precision (``sigmoid(-80)`` is about 1.8e-35, not 0).

    Shape:
        Input ``(*)``, output ``(*)``.

    Example:
        >>> fused_ops.sigmoid(torch.tensor([-80.0, 0.0, 3.0]))
        tensor([1.8049e-35, 5.0000e-01, 9.5257e-01])
    """
    (input,) = autocast_inputs("sigmoid", input)
    input = promote_to_floating(input)
    check_floating("sigmoid", input)
    if _is_compiling():
        return _SigmoidTracedFunction.apply(input)
    if needs_autograd(input):
        return _sigmoid_apply(input)
    return _sigmoid_forward_impl(input)


def _tanh_forward_impl(input: torch.Tensor) -> torch.Tensor:
    if use_triton("tanh", input):
        (input,) = dense_layout(input)
        return kernels.tanh_forward(input)
    return reference.tanh_ref(input)


def _tanh_backward_impl(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    if use_triton("tanh", grad_output, output):
        grad_output, output = dense_layout(grad_output, output)
        return kernels.tanh_backward(grad_output, output)
    return reference.tanh_backward_ref(grad_output, output)


@torch.library.custom_op("fused_ops::tanh_forward", mutates_args=())
def _tanh_forward(input: torch.Tensor) -> torch.Tensor:
    return _tanh_forward_impl(input)


@_tanh_forward.register_fake
def _(input: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(input)


@torch.library.custom_op("fused_ops::tanh_backward", mutates_args=())
def _tanh_backward(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return _tanh_backward_impl(grad_output, output)


@_tanh_backward.register_fake
def _(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(output)


def _tanh_double_backward(ctx, grad_grad_input: torch.Tensor):
    # grad_input = g * (1 - y^2), so d/dg = 1 - y^2 and d/dy = -2 g y.
    grad_output, output = ctx.saved_tensors
    grad_grad_output = grad_grad_input * (1 - output * output)
    grad_output_saved = grad_grad_input * grad_output * (-2 * output)
    return grad_grad_output, grad_output_saved


_tanh_backward.register_autograd(_tanh_double_backward, setup_context=_save_backward_inputs)


class TanhFunction(torch.autograd.Function):
    """Tanh whose forward and backward are Triton kernels; backward uses the saved output."""

    @staticmethod
    def forward(ctx, input: torch.Tensor) -> torch.Tensor:
        output = _tanh_forward_impl(input)
        ctx.save_for_backward(output)
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (output,) = ctx.saved_tensors
        return _backward(grad_output, output, _tanh_backward_impl, _tanh_double_backward)


class _TanhTracedFunction(torch.autograd.Function):
    """TanhFunction over the custom ops, for torch.compile."""

    @staticmethod
    def forward(ctx, input: torch.Tensor) -> torch.Tensor:
        output = torch.ops.fused_ops.tanh_forward(input)
        ctx.save_for_backward(output)
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (output,) = ctx.saved_tensors
        return torch.ops.fused_ops.tanh_backward(grad_output, output)


_tanh_apply = fast_apply(TanhFunction)


def tanh(input: torch.Tensor) -> torch.Tensor:
    """Drop-in for :func:`torch.tanh`: the hyperbolic tangent, elementwise.

    Args:
        input: a tensor of any shape and layout. Integer and bool tensors are promoted to
            the default float dtype, as torch does.

    Returns:
        A tensor of the same shape and float dtype, within 2 ulp of the exact result in
        fp32 and 1 ulp in fp64. Near 0 the relative precision holds (``tanh(1e-8)`` is
        ``1e-8``, ``tanh(-0.0)`` is ``-0.0``); the tails are exactly ±1, and NaN propagates.

    Shape:
        Input ``(*)``, output ``(*)``.

    Example:
        >>> fused_ops.tanh(torch.tensor([1e-8, 0.5, -30.0]))
        tensor([ 1.0000e-08,  4.6212e-01, -1.0000e+00])
    """
    (input,) = autocast_inputs("tanh", input)
    input = promote_to_floating(input)
    check_floating("tanh", input)
    if _is_compiling():
        return _TanhTracedFunction.apply(input)
    if needs_autograd(input):
        return _tanh_apply(input)
    return _tanh_forward_impl(input)


# torch.relu takes floats and these integer dtypes (and returns them unchanged in dtype).
_RELU_DTYPES = (*FLOATING_DTYPES, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_relu_dtype(input: torch.Tensor) -> None:
    if input.dtype == torch.bool:
        raise RuntimeError("Boolean inputs not supported for relu")
    if input.dtype not in _RELU_DTYPES:
        raise NotImplementedError(
            f'"relu" not implemented for {input.dtype}: fused_ops.relu takes float32, float64, float16, '
            "bfloat16, uint8, int8, int16, int32 or int64"
        )


def _relu_forward_impl(input: torch.Tensor) -> torch.Tensor:
    if use_triton("relu", input):
        (input,) = dense_layout(input)
        return kernels.relu_forward(input)
    return reference.relu_ref(input)


def _relu_forward_inplace_impl(input: torch.Tensor) -> None:
    if use_triton("relu", input):
        (dense,) = dense_layout(input)
        if dense is input:
            kernels.relu_forward(input, out=input)
            return
        # Not walkable flat (a slice with gaps): compute on a dense copy and write back.
        # copy_ raises torch's own error for overlapping memory (an expanded tensor).
        input.copy_(kernels.relu_forward(dense))
        return
    input.copy_(reference.relu_ref(input))


def _relu_backward_impl(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    if use_triton("relu", grad_output, output):
        grad_output, output = dense_layout(grad_output, output)
        return kernels.relu_backward(grad_output, output)
    return reference.relu_backward_ref(grad_output, output)


@torch.library.custom_op("fused_ops::relu_forward", mutates_args=())
def _relu_forward(input: torch.Tensor) -> torch.Tensor:
    return _relu_forward_impl(input)


@_relu_forward.register_fake
def _(input: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(input)


@torch.library.custom_op("fused_ops::relu_forward_", mutates_args=("input",))
def _relu_forward_inplace(input: torch.Tensor) -> None:
    _relu_forward_inplace_impl(input)


@_relu_forward_inplace.register_fake
def _(input: torch.Tensor) -> None:
    return None


@torch.library.custom_op("fused_ops::relu_backward", mutates_args=())
def _relu_backward(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return _relu_backward_impl(grad_output, output)


@_relu_backward.register_fake
def _(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(output)


def _relu_double_backward(ctx, grad_grad_input: torch.Tensor):
    # grad_input = output <= 0 ? 0 : g is linear in g with the same mask, and piecewise
    # constant in output, so d/dg is the mask and d/d(output) is 0.
    _, output = ctx.saved_tensors
    grad_grad_output = torch.where(output <= 0, torch.zeros_like(grad_grad_input), grad_grad_input)
    return grad_grad_output, torch.zeros_like(output)


_relu_backward.register_autograd(_relu_double_backward, setup_context=_save_backward_inputs)


class ReLUFunction(torch.autograd.Function):
    """Relu whose forward and backward are Triton kernels; backward uses the saved output."""

    @staticmethod
    def forward(ctx, input: torch.Tensor) -> torch.Tensor:
        output = _relu_forward_impl(input)
        ctx.save_for_backward(output)
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (output,) = ctx.saved_tensors
        return _backward(grad_output, output, _relu_backward_impl, _relu_double_backward)


class _ReLUTracedFunction(torch.autograd.Function):
    """ReLUFunction over the custom ops, for torch.compile."""

    @staticmethod
    def forward(ctx, input: torch.Tensor) -> torch.Tensor:
        output = torch.ops.fused_ops.relu_forward(input)
        ctx.save_for_backward(output)
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (output,) = ctx.saved_tensors
        return torch.ops.fused_ops.relu_backward(grad_output, output)


class ReLUInplaceFunction(torch.autograd.Function):
    """Relu written into its input. ``mark_dirty`` tells autograd, which bumps the input's
    version (so earlier saves of it are caught) and rejects leaves that require grad."""

    @staticmethod
    def forward(ctx, input: torch.Tensor) -> torch.Tensor:
        _relu_forward_inplace_impl(input)
        ctx.mark_dirty(input)
        # The input now holds the output, which is all backward needs.
        ctx.save_for_backward(input)
        return input

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (output,) = ctx.saved_tensors
        return _backward(grad_output, output, _relu_backward_impl, _relu_double_backward)


class _ReLUInplaceTracedFunction(torch.autograd.Function):
    """ReLUInplaceFunction over the custom ops, for torch.compile."""

    @staticmethod
    def forward(ctx, input: torch.Tensor) -> torch.Tensor:
        torch.ops.fused_ops.relu_forward_(input)
        ctx.mark_dirty(input)
        ctx.save_for_backward(input)
        return input

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (output,) = ctx.saved_tensors
        return torch.ops.fused_ops.relu_backward(grad_output, output)


_relu_apply = fast_apply(ReLUFunction)
_relu_inplace_apply = fast_apply(ReLUInplaceFunction)


def relu(input: torch.Tensor) -> torch.Tensor:
    """Drop-in for :func:`torch.relu`: ``0`` where ``input < 0``, else ``input``, elementwise.

    Args:
        input: a float tensor, or an integer tensor (uint8, int8, int16, int32, int64),
            of any shape and layout. Bool raises ``RuntimeError``, as in torch.

    Returns:
        A tensor of the same shape and dtype. NaN propagates (``relu(nan)`` is nan) and
        ``-0.0`` stays ``-0.0``, as in torch. The gradient is ``grad_output`` where the
        output is positive (or NaN) and 0 elsewhere, so it is 0 at ``input == 0``.

    Shape:
        Input ``(*)``, output ``(*)``.

    Example:
        >>> fused_ops.relu(torch.tensor([-1.0, 0.0, 2.0, float("nan")]))
        tensor([0., 0., 2., nan])
    """
    (input,) = autocast_inputs("relu", input)
    _check_relu_dtype(input)
    if _is_compiling():
        if not input.is_floating_point():
            return torch.ops.fused_ops.relu_forward(input)
        return _ReLUTracedFunction.apply(input)
    # Integers carry no gradient: the launch alone, with no autograd node.
    if needs_autograd(input):
        return _relu_apply(input)
    return _relu_forward_impl(input)


def relu_(input: torch.Tensor) -> torch.Tensor:
    """Drop-in for :func:`torch.relu_`: relu written into ``input``, which is returned.

    Autograd sees the write like torch's: the input's version counter is bumped, and a
    leaf that requires grad raises ``RuntimeError``. A dense input is overwritten by the
    kernel directly; a view with gaps is computed densely and copied back; an expanded
    (overlapping) input raises torch's ``RuntimeError``.

    Args:
        input: a float or integer tensor, as for :func:`relu`.

    Returns:
        ``input`` itself, now holding ``relu(input)``.

    Shape:
        Input ``(*)``, output ``(*)``.

    Example:
        >>> x = torch.tensor([-1.0, 2.0])
        >>> fused_ops.activations.relu_(x) is x, x
        (True, tensor([0., 2.]))
    """
    _check_relu_dtype(input)
    if _is_compiling():
        if not input.is_floating_point():
            torch.ops.fused_ops.relu_forward_(input)
            return input
        _check_inplace_allowed(input)
        return _ReLUInplaceTracedFunction.apply(input)
    if needs_autograd(input):
        _check_inplace_allowed(input)
        return _relu_inplace_apply(input)
    # No autograd: the write alone. Under no_grad torch.relu_ bumps the version counter
    # too, which the kernel's write does not do by itself.
    _relu_forward_inplace_impl(input)
    torch.autograd.graph.increment_version(input)
    return input


def _check_inplace_allowed(input: torch.Tensor) -> None:
    # mark_dirty would raise these too, but only after the kernel has overwritten the
    # input; torch raises before touching it, and so do we.
    if torch.is_grad_enabled() and input.requires_grad:
        if input.is_leaf:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
        # Dynamo cannot trace _is_view(); under torch.compile, autograd's own check applies.
        if not torch.compiler.is_compiling() and input._is_view() and input._base.is_leaf:
            raise RuntimeError("a view of a leaf Variable that requires grad is being used in an in-place operation.")


# GELU and SiLU. Unlike sigmoid, tanh and relu, their backward needs the INPUT (neither
# can be inverted from its output), so the Functions save the input and the backward
# kernels recompute the derivative from it: 8 B/elem forward, 12 B/elem backward in fp32.

_GELU_APPROXIMATIONS = ("none", "tanh")


def _check_gelu_approximate(approximate: str) -> None:
    # torch's own checks: the argument parser's TypeError, then GeluType's RuntimeError.
    if not isinstance(approximate, str):
        raise TypeError(f"gelu(): argument 'approximate' must be str, not {type(approximate).__name__}")
    if approximate not in _GELU_APPROXIMATIONS:
        raise RuntimeError("approximate argument must be either none or tanh.")


def _gelu_forward_impl(input: torch.Tensor, approximate: str) -> torch.Tensor:
    if use_triton("gelu", input):
        (input,) = dense_layout(input)
        return kernels.gelu_forward(input, approximate)
    return reference.gelu_ref(input, approximate)


def _gelu_backward_impl(grad_output: torch.Tensor, input: torch.Tensor, approximate: str) -> torch.Tensor:
    if use_triton("gelu", grad_output, input):
        grad_output, input = dense_layout(grad_output, input)
        return kernels.gelu_backward(grad_output, input, approximate)
    return reference.gelu_backward_ref(grad_output, input, approximate)


@torch.library.custom_op("fused_ops::gelu_forward", mutates_args=())
def _gelu_forward(input: torch.Tensor, approximate: str) -> torch.Tensor:
    return _gelu_forward_impl(input, approximate)


@_gelu_forward.register_fake
def _(input: torch.Tensor, approximate: str) -> torch.Tensor:
    return torch.empty_like(input)


@torch.library.custom_op("fused_ops::gelu_backward", mutates_args=())
def _gelu_backward(grad_output: torch.Tensor, input: torch.Tensor, approximate: str) -> torch.Tensor:
    return _gelu_backward_impl(grad_output, input, approximate)


@_gelu_backward.register_fake
def _(grad_output: torch.Tensor, input: torch.Tensor, approximate: str) -> torch.Tensor:
    return torch.empty_like(input)


def _gelu_backward_setup_context(ctx, inputs, output) -> None:
    grad_output, input, approximate = inputs
    ctx.save_for_backward(grad_output, input)
    ctx.approximate = approximate


def _gelu_second_order(ctx, grad_grad_input: torch.Tensor, approximate: str):
    # grad_input = g * gelu'(x): d/dg = gelu'(x), d/dx = g * gelu''(x). Eager ops, so that
    # the third order is differentiable too.
    grad_output, input = ctx.saved_tensors
    first, second = reference.gelu_derivatives(input, approximate)
    return grad_grad_input * first, grad_grad_input * grad_output * second


def _gelu_double_backward(ctx, grad_grad_input: torch.Tensor):
    return (*_gelu_second_order(ctx, grad_grad_input, ctx.approximate), None)


_gelu_backward.register_autograd(_gelu_double_backward, setup_context=_gelu_backward_setup_context)


class GELUFunction(torch.autograd.Function):
    """GELU whose forward and backward are Triton kernels; backward recomputes from the saved input."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, approximate: str) -> torch.Tensor:
        output = _gelu_forward_impl(input, approximate)
        ctx.save_for_backward(input)
        ctx.approximate = approximate
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (input,) = ctx.saved_tensors
        approximate = ctx.approximate
        if torch.is_grad_enabled():
            # create_graph=True: the gradient must itself be differentiable.
            backward_impl = functools.partial(_gelu_backward_impl, approximate=approximate)
            second_order = functools.partial(_gelu_second_order, approximate=approximate)
            return _BackwardFunction.apply(grad_output, input, backward_impl, second_order), None
        return _gelu_backward_impl(grad_output, input, approximate), None


class _GELUTracedFunction(torch.autograd.Function):
    """GELUFunction over the custom ops, for torch.compile."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, approximate: str) -> torch.Tensor:
        output = torch.ops.fused_ops.gelu_forward(input, approximate)
        ctx.save_for_backward(input)
        ctx.approximate = approximate
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (input,) = ctx.saved_tensors
        return torch.ops.fused_ops.gelu_backward(grad_output, input, ctx.approximate), None


_gelu_apply = fast_apply(GELUFunction)


def gelu(input: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """Drop-in for :func:`torch.nn.functional.gelu`: ``x * Phi(x)``, elementwise.

    Args:
        input: a float tensor (float32, float64, float16 or bfloat16) of any shape and
            layout. Integer, bool and complex tensors raise ``NotImplementedError``, as in torch.
        approximate: ``"none"`` for the exact form ``0.5 x (1 + erf(x / sqrt 2))``, or
            ``"tanh"`` for ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``. Any other
            string raises torch's ``RuntimeError``, a non-string its ``TypeError``.

    Returns:
        A tensor of the same shape and dtype, computed with torch's formulas in fp32 (fp64
        for fp64): NaN propagates, ``gelu(inf)`` is inf, ``gelu(-inf)`` is NaN (as torch's
        formula gives, and torch on CUDA), ``-0.0`` keeps its sign.

    Shape:
        Input ``(*)``, output ``(*)``.

    Example:
        >>> fused_ops.gelu(torch.tensor([-1.0, 0.0, 2.0]))
        tensor([-0.1587,  0.0000,  1.9545])
    """
    (input,) = autocast_inputs("gelu", input)
    _check_gelu_approximate(approximate)
    check_floating("gelu", input)
    if _is_compiling():
        return _GELUTracedFunction.apply(input, approximate)
    if needs_autograd(input):
        return _gelu_apply(input, approximate)
    return _gelu_forward_impl(input, approximate)


def _silu_forward_impl(input: torch.Tensor) -> torch.Tensor:
    if use_triton("silu", input):
        (input,) = dense_layout(input)
        return kernels.silu_forward(input)
    return reference.silu_ref(input)


def _silu_forward_inplace_impl(input: torch.Tensor) -> None:
    if use_triton("silu", input):
        (dense,) = dense_layout(input)
        if dense is input:
            kernels.silu_forward(input, out=input)
            return
        # Not walkable flat (a slice with gaps): compute on a dense copy and write back.
        # copy_ raises torch's own error for overlapping memory (an expanded tensor).
        input.copy_(kernels.silu_forward(dense))
        return
    input.copy_(reference.silu_ref(input))


def _silu_backward_impl(grad_output: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    if use_triton("silu", grad_output, input):
        grad_output, input = dense_layout(grad_output, input)
        return kernels.silu_backward(grad_output, input)
    return reference.silu_backward_ref(grad_output, input)


@torch.library.custom_op("fused_ops::silu_forward", mutates_args=())
def _silu_forward(input: torch.Tensor) -> torch.Tensor:
    return _silu_forward_impl(input)


@_silu_forward.register_fake
def _(input: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(input)


@torch.library.custom_op("fused_ops::silu_forward_", mutates_args=("input",))
def _silu_forward_inplace(input: torch.Tensor) -> None:
    _silu_forward_inplace_impl(input)


@_silu_forward_inplace.register_fake
def _(input: torch.Tensor) -> None:
    return None


@torch.library.custom_op("fused_ops::silu_backward", mutates_args=())
def _silu_backward(grad_output: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    return _silu_backward_impl(grad_output, input)


@_silu_backward.register_fake
def _(grad_output: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(input)


def _silu_double_backward(ctx, grad_grad_input: torch.Tensor):
    # grad_input = g * silu'(x): d/dg = silu'(x), d/dx = g * silu''(x).
    grad_output, input = ctx.saved_tensors
    first, second = reference.silu_derivatives(input)
    return grad_grad_input * first, grad_grad_input * grad_output * second


_silu_backward.register_autograd(_silu_double_backward, setup_context=_save_backward_inputs)


class SiLUFunction(torch.autograd.Function):
    """SiLU whose forward and backward are Triton kernels; backward recomputes from the saved input."""

    @staticmethod
    def forward(ctx, input: torch.Tensor) -> torch.Tensor:
        output = _silu_forward_impl(input)
        ctx.save_for_backward(input)
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (input,) = ctx.saved_tensors
        return _backward(grad_output, input, _silu_backward_impl, _silu_double_backward)


class _SiLUTracedFunction(torch.autograd.Function):
    """SiLUFunction over the custom ops, for torch.compile."""

    @staticmethod
    def forward(ctx, input: torch.Tensor) -> torch.Tensor:
        output = torch.ops.fused_ops.silu_forward(input)
        ctx.save_for_backward(input)
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (input,) = ctx.saved_tensors
        return torch.ops.fused_ops.silu_backward(grad_output, input)


class SiLUInplaceFunction(torch.autograd.Function):
    """SiLU written into its input, with ``mark_dirty`` (see :class:`ReLUInplaceFunction`).

    The backward needs the input that the kernel overwrites, so when a gradient is needed
    the forward keeps a copy of it first (torch's ``silu_`` saves the original the same
    way); without grad nothing is copied.
    """

    @staticmethod
    def forward(ctx, input: torch.Tensor) -> torch.Tensor:
        original = input.clone() if ctx.needs_input_grad[0] else None
        if _is_compiling():
            torch.ops.fused_ops.silu_forward_(input)
        else:
            _silu_forward_inplace_impl(input)
        ctx.mark_dirty(input)
        ctx.save_for_backward(original)
        return input

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (original,) = ctx.saved_tensors
        if _is_compiling():
            return torch.ops.fused_ops.silu_backward(grad_output, original)
        return _backward(grad_output, original, _silu_backward_impl, _silu_double_backward)


_silu_apply = fast_apply(SiLUFunction)


def silu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Drop-in for :func:`torch.nn.functional.silu`: ``x * sigmoid(x)``, elementwise.

    Args:
        input: a float tensor (float32, float64, float16 or bfloat16) of any shape and
            layout. Integer and bool tensors raise ``NotImplementedError``, as in torch;
            so do complex tensors, which torch accepts but fused_ops has no kernel for.
        inplace: write the result into ``input`` and return it, as torch's
            ``silu(..., inplace=True)``: the input's version counter is bumped, and a leaf
            that requires grad raises ``RuntimeError`` before anything is written.

    Returns:
        A tensor of the same shape and dtype (``input`` itself when ``inplace``). The
        negative tail keeps relative precision (``silu(-80)`` is about -1.4e-33 in fp32,
        where torch's ``x / (1 + exp(-x))`` gives -0.0 once ``exp(-x)`` overflows); NaN
        propagates, ``silu(inf)`` is inf and ``silu(-inf)`` is NaN, as in torch.

    Shape:
        Input ``(*)``, output ``(*)``.

    Example:
        >>> fused_ops.silu(torch.tensor([-1.0, 0.0, 2.0]))
        tensor([-0.2689,  0.0000,  1.7616])
    """
    if not inplace:
        # Autocast leaves in-place ops alone; out of place, silu runs in its input dtype.
        (input,) = autocast_inputs("silu", input)
    check_floating("silu", input)
    if inplace:
        _check_inplace_allowed(input)
        if _is_compiling() or needs_autograd(input):
            return SiLUInplaceFunction.apply(input)
        # No autograd: the write alone, with the version bump torch's silu_ makes.
        _silu_forward_inplace_impl(input)
        torch.autograd.graph.increment_version(input)
        return input
    if _is_compiling():
        return _SiLUTracedFunction.apply(input)
    if needs_autograd(input):
        return _silu_apply(input)
    return _silu_forward_impl(input)
