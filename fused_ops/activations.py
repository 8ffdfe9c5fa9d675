"""Fused elementwise activations: sigmoid, tanh, relu (and relu_), gelu and silu (and in place).

Each activation is one :class:`_Activation`: its two launchers, its eager reference, what
its backward needs (the output for sigmoid, tanh and relu; the input for gelu and silu,
whose derivatives cannot be read off the output) and the derivative of its backward, in
eager ops. From those parts it builds every path a call can take:

- without autograd (no_grad, or an input that does not require grad), the forward
  launcher is called directly: no autograd machinery at all;
- with autograd, one ``torch.autograd.Function`` per activation, whose forward and
  backward call the launchers and save what backward needs with ``ctx.save_for_backward``
  (so a second backward through a freed graph raises). This eager path has no
  ``torch.library`` machinery on it: each layer costs microseconds of host time per call;
- when backward runs with ``create_graph=True``, it applies ``_BackwardFunction``, whose
  own backward is the derivative of the backward in eager ops, so double backward
  (``gradgradcheck``) works;
- under ``torch.compile``, a Function over ``torch.library`` custom ops
  (``fused_ops::<name>_forward`` and ``_backward``) with fake implementations, so
  ``torch.compile(fullgraph=True)`` traces without a graph break. The backward op has the
  same double-backward formula registered as its autograd.

The public functions validate their arguments like torch, then call their activation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from . import _native, reference
from ._autocast import autocast_inputs
from ._dispatch import TRITON_AVAILABLE, _forward_ad, fast_apply, kernel_op, needs_autograd, use_triton
from ._validation import FLOATING_DTYPES, check_floating, dense_layout, promote_to_floating

if TRITON_AVAILABLE:
    from .kernels import activations as kernels

_is_compiling = torch.compiler.is_compiling
_is_grad_enabled = torch.is_grad_enabled
_is_autocast_enabled = torch._C._is_any_autocast_enabled
_functorch_active = torch._C._are_functorch_transforms_active


def _float_input(op: str, input: torch.Tensor) -> torch.Tensor:
    """``input`` as a float op takes it: autocast, then integers promoted, complex refused."""
    # The common case (no autocast, a float dtype) costs two checks, not three calls.
    if _is_autocast_enabled():
        (input,) = autocast_inputs(op, input)
    if input.dtype not in FLOATING_DTYPES:
        input = promote_to_floating(input)
        check_floating(op, input)
    return input


def _kernel(name: str) -> Callable | None:
    """The launcher ``kernels.<name>``, or None where Triton is not installed."""
    return getattr(kernels, name) if TRITON_AVAILABLE else None


class _BackwardFunction(torch.autograd.Function):
    """An activation's backward as a differentiable op: applied only under ``create_graph=True``.

    ``forward(grad_output, saved, activation, *args)`` launches the backward kernel; its
    own backward is ``activation.double_backward``, in eager ops (which autograd can
    differentiate again).
    """

    @staticmethod
    def forward(ctx, grad_output, saved, activation, *args):
        ctx.save_for_backward(grad_output, saved)
        ctx.activation = activation
        ctx.args = args
        return activation.backward(grad_output, saved, *args)

    @staticmethod
    def backward(ctx, grad_grad_input):
        grad_output, saved = ctx.saved_tensors
        grads = ctx.activation.double_backward(grad_output, saved, grad_grad_input, *ctx.args)
        return (*grads, None, *(None for _ in ctx.args))


class _Activation:
    """One elementwise activation: its kernels and reference, and the paths built from them.

    Args:
        name: the op's name, also the prefix of its kernels and custom ops.
        forward_ref, backward_ref: the eager references, ``forward_ref(input, *args)`` and
            ``backward_ref(grad_output, saved, *args)``.
        double_backward: ``(grad_output, saved, grad_grad_input, *args)`` -> the gradients
            of the backward with respect to ``grad_output`` and ``saved``, in eager ops.
        saves_input: backward needs the input (else the output).
        extra_parameters: the op's non-tensor arguments as (name, type), ``args``
            everywhere above (gelu's ``(("approximate", str),)``); none by default.

    ``activation.call(input, *args)`` takes the path described in the module docstring;
    ``forward``, ``backward`` and ``differentiable_backward`` are its steps.
    """

    def __init__(
        self,
        name: str,
        forward_ref: Callable,
        backward_ref: Callable,
        double_backward: Callable,
        *,
        saves_input: bool,
        extra_parameters: tuple[tuple[str, type], ...] = (),
    ) -> None:
        self.name = name
        self.forward_launch = _kernel(f"{name}_forward")
        self.backward_launch = _kernel(f"{name}_backward")
        self.forward_ref = forward_ref
        self.backward_ref = backward_ref
        self.double_backward = double_backward
        self.saves_input = saves_input
        self._build_paths()
        self.function = self._eager_function()
        self.forward_op, self.backward_op = self._custom_ops(extra_parameters)
        self.traced_function = self._traced_function()
        self._build_call()

    def _build_paths(self) -> None:
        # Closures over locals, not methods reading self: each attribute lookup and bound
        # method on this path is paid on every call (issue 9's host-time budget).
        name, forward_launch, backward_launch = self.name, self.forward_launch, self.backward_launch
        forward_ref, backward_ref = self.forward_ref, self.backward_ref

        def forward(input: torch.Tensor, *args) -> torch.Tensor:
            """The activation of ``input``: the kernel (on a dense layout) or the reference."""
            if use_triton(name, input):
                if not input.is_contiguous():
                    (input,) = dense_layout(input)
                return forward_launch(input, *args)
            return forward_ref(input, *args)

        def backward(grad_output: torch.Tensor, saved: torch.Tensor, *args) -> torch.Tensor:
            """The input gradient from ``grad_output`` and the saved output or input."""
            if use_triton(name, grad_output, saved):
                # dense_layout's common case inline: this runs in every backward.
                if not (grad_output.is_contiguous() and saved.is_contiguous()):
                    grad_output, saved = dense_layout(grad_output, saved)
                return backward_launch(grad_output, saved, *args)
            return backward_ref(grad_output, saved, *args)

        activation = self

        def differentiable_backward(grad_output: torch.Tensor, saved: torch.Tensor, *args) -> torch.Tensor:
            """``backward``, recorded by autograd when it records (``create_graph=True``)."""
            if _is_grad_enabled():
                return _BackwardFunction.apply(grad_output, saved, activation, *args)
            return backward(grad_output, saved, *args)

        self.forward, self.backward, self.differentiable_backward = forward, backward, differentiable_backward

    def _build_call(self) -> None:
        traced_apply, eager_apply, forward = self.traced_function.apply, self.function.apply, self.forward
        # fast_apply's check inline (one frame less): the C++ apply unless functorch transforms.
        c_apply = super(torch.autograd.Function, self.function).apply
        name, forward_launch, backward = self.name, self.forward_launch, self.backward
        differentiable_backward = self.differentiable_backward
        saves_input, node_name = self.saves_input, f"Fused{_camel(self.name)}Backward"

        def call(input: torch.Tensor, *args) -> torch.Tensor:
            """Apply the activation: traced under torch.compile, with autograd a C++ node (else the
            eager Function), without autograd the launch alone."""
            if _is_compiling():
                return traced_apply(input, *args)
            if _is_grad_enabled() and input.requires_grad and _forward_ad._current_level < 0:
                attach = _native._attach
                if attach is _native.UNLOADED:
                    attach = _native.attach()
                if attach is not None and not _functorch_active() and use_triton(name, input):
                    # The kernel, then the node that records it (see fused_ops/_native.py).
                    dense = input if input.is_contiguous() else dense_layout(input.detach())[0]
                    output = forward_launch(dense, *args)
                    saved = input if saves_input else output
                    return attach(output, input, saved, backward, differentiable_backward, args, node_name)
            elif _forward_ad._current_level < 0:
                return forward(input, *args)
            # A dual tensor, a functorch transform, the reference, or no C++ node.
            if _functorch_active():
                return eager_apply(input, *args)
            return c_apply(input, *args)

        self.call = call

    def _eager_function(self) -> type[torch.autograd.Function]:
        run_forward, differentiable_backward, saves_input = self.forward, self.differentiable_backward, self.saves_input

        def forward(ctx, input, *args):
            output = run_forward(input, *args)
            ctx.save_for_backward(input if saves_input else output)
            if args:
                ctx.args = args
            return output

        def backward(ctx, grad_output):
            (saved,) = ctx.saved_tensors
            args = getattr(ctx, "args", ())
            grad_input = differentiable_backward(grad_output, saved, *args)
            return (grad_input, *(None for _ in args)) if args else grad_input

        # type() rather than a class statement, so that autograd names the node
        # (SigmoidFunctionBackward) after the op.
        doc = f"{self.name} whose forward and backward are Triton kernels."
        namespace = {"forward": staticmethod(forward), "backward": staticmethod(backward), "__doc__": doc}
        return type(f"{_camel(self.name)}Function", (torch.autograd.Function,), namespace)

    def _custom_ops(self, extra_parameters: tuple[tuple[str, type], ...]):
        activation = self
        forward_op = _define_op(
            f"fused_ops::{self.name}_forward",
            lambda input, *args: activation.forward(input, *args),
            (("input", torch.Tensor), *extra_parameters),
            lambda input, *args: torch.empty_like(input),
        )
        backward_op = _define_op(
            f"fused_ops::{self.name}_backward",
            lambda grad_output, saved, *args: activation.backward(grad_output, saved, *args),
            (("grad_output", torch.Tensor), ("saved", torch.Tensor), *extra_parameters),
            lambda grad_output, saved, *args: torch.empty_like(saved),
        )

        def setup_context(ctx, inputs, output) -> None:
            grad_output, saved, *args = inputs
            ctx.save_for_backward(grad_output, saved)
            ctx.args = args

        def double_backward(ctx, grad_grad_input):
            grad_output, saved = ctx.saved_tensors
            grads = activation.double_backward(grad_output, saved, grad_grad_input, *ctx.args)
            return (*grads, *(None for _ in ctx.args))

        backward_op.register_autograd(double_backward, setup_context=setup_context)
        return forward_op, backward_op

    def _traced_function(self) -> type[torch.autograd.Function]:
        activation = self

        def forward(ctx, input, *args):
            output = activation.forward_op(input, *args)
            ctx.save_for_backward(input if activation.saves_input else output)
            ctx.args = args
            return output

        def backward(ctx, grad_output):
            (saved,) = ctx.saved_tensors
            grad_input = activation.backward_op(grad_output, saved, *ctx.args)
            return (grad_input, *(None for _ in ctx.args))

        doc = f"{self.name}'s Function over its custom ops, for torch.compile."
        namespace = {"forward": staticmethod(forward), "backward": staticmethod(backward), "__doc__": doc}
        return type(f"_{_camel(self.name)}TracedFunction", (torch.autograd.Function,), namespace)


def _define_op(name: str, implementation: Callable, parameters: tuple[tuple[str, type], ...], fake: Callable):
    """``kernel_op`` (fused_ops/_dispatch.py) for a generic implementation: ``parameters``
    are the op's (name, type) in order, from which its signature, and so the schema, is set."""

    def op_implementation(*args):
        return implementation(*args)

    op_implementation.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=t) for n, t in parameters],
        return_annotation=torch.Tensor,
    )
    return kernel_op(name, fake=fake)(op_implementation)


def _camel(name: str) -> str:
    return {"relu": "ReLU", "gelu": "GELU", "silu": "SiLU"}.get(name, name.capitalize())


# The derivatives of each backward, for double backward: (grad_output, saved,
# grad_grad_input) -> (d/d grad_output, d/d saved), each times grad_grad_input.


def _sigmoid_double_backward(grad_output, output, grad_grad_input):
    # grad_input = g * y * (1 - y), so d/dg = y * (1 - y) and d/dy = g * (1 - 2y).
    return grad_grad_input * output * (1 - output), grad_grad_input * grad_output * (1 - 2 * output)


def _tanh_double_backward(grad_output, output, grad_grad_input):
    # grad_input = g * (1 - y^2), so d/dg = 1 - y^2 and d/dy = -2 g y.
    return grad_grad_input * (1 - output * output), grad_grad_input * grad_output * (-2 * output)


def _relu_double_backward(grad_output, output, grad_grad_input):
    # grad_input = output <= 0 ? 0 : g is linear in g with the same mask, and piecewise
    # constant in output, so d/dg is the mask and d/d(output) is 0.
    grad_grad_output = torch.where(output <= 0, torch.zeros_like(grad_grad_input), grad_grad_input)
    return grad_grad_output, torch.zeros_like(output)


def _gelu_double_backward(grad_output, input, grad_grad_input, approximate):
    # grad_input = g * gelu'(x): d/dg = gelu'(x), d/dx = g * gelu''(x). Eager ops, so that
    # the third order is differentiable too.
    first, second = reference.gelu_derivatives(input, approximate)
    return grad_grad_input * first, grad_grad_input * grad_output * second


def _silu_double_backward(grad_output, input, grad_grad_input):
    # grad_input = g * silu'(x): d/dg = silu'(x), d/dx = g * silu''(x).
    first, second = reference.silu_derivatives(input)
    return grad_grad_input * first, grad_grad_input * grad_output * second


_SIGMOID = _Activation(
    "sigmoid", reference.sigmoid_ref, reference.sigmoid_backward_ref, _sigmoid_double_backward, saves_input=False
)
_TANH = _Activation("tanh", reference.tanh_ref, reference.tanh_backward_ref, _tanh_double_backward, saves_input=False)
_RELU = _Activation("relu", reference.relu_ref, reference.relu_backward_ref, _relu_double_backward, saves_input=False)
# GELU and SiLU backward need the INPUT, and their kernels recompute the derivative from
# it: 8 B/elem forward, 12 B/elem backward in fp32.
_GELU = _Activation(
    "gelu",
    reference.gelu_ref,
    reference.gelu_backward_ref,
    _gelu_double_backward,
    saves_input=True,
    extra_parameters=(("approximate", str),),
)
_SILU = _Activation("silu", reference.silu_ref, reference.silu_backward_ref, _silu_double_backward, saves_input=True)

# Public names of the Functions, for readers and tracebacks.
SigmoidFunction = _SIGMOID.function
TanhFunction = _TANH.function
ReLUFunction = _RELU.function
GELUFunction = _GELU.function
SiLUFunction = _SILU.function


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
    input = _float_input("sigmoid", input)
    return _SIGMOID.call(input)


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
    input = _float_input("tanh", input)
    return _TANH.call(input)


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
    if not input.is_floating_point():
        # Integers carry no gradient: the launch alone, with no autograd node.
        return _RELU.forward_op(input) if _is_compiling() else _RELU.forward(input)
    return _RELU.call(input)


# In-place relu and silu: the kernel writes into the input. Their Functions call
# ``mark_dirty``, which bumps the input's version (so earlier saves of it are caught).


def _forward_inplace(activation: _Activation, input: torch.Tensor) -> None:
    """Write ``activation(input)`` into ``input``: the kernel in place, or a dense copy written back."""
    if use_triton(activation.name, input):
        (dense,) = dense_layout(input)
        if dense is input:
            activation.forward_launch(input, out=input)
            return
        # Not walkable flat (a slice with gaps): compute on a dense copy and write back.
        # copy_ raises torch's own error for overlapping memory (an expanded tensor).
        input.copy_(activation.forward_launch(dense))
        return
    input.copy_(activation.forward_ref(input))


@torch.library.custom_op("fused_ops::relu_forward_", mutates_args=("input",))
def _relu_forward_inplace_op(input: torch.Tensor) -> None:
    _forward_inplace(_RELU, input)


@_relu_forward_inplace_op.register_fake
def _(input: torch.Tensor) -> None:
    return None


@torch.library.custom_op("fused_ops::silu_forward_", mutates_args=("input",))
def _silu_forward_inplace_op(input: torch.Tensor) -> None:
    _forward_inplace(_SILU, input)


@_silu_forward_inplace_op.register_fake
def _(input: torch.Tensor) -> None:
    return None


class ReLUInplaceFunction(torch.autograd.Function):
    """Relu written into its input. ``mark_dirty`` tells autograd, which bumps the input's
    version (so earlier saves of it are caught) and rejects leaves that require grad."""

    @staticmethod
    def forward(ctx, input: torch.Tensor) -> torch.Tensor:
        if _is_compiling():
            _relu_forward_inplace_op(input)
        else:
            _forward_inplace(_RELU, input)
        ctx.mark_dirty(input)
        # The input now holds the output, which is all backward needs.
        ctx.save_for_backward(input)
        return input

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (output,) = ctx.saved_tensors
        if _is_compiling():
            return _RELU.backward_op(grad_output, output)
        return _RELU.differentiable_backward(grad_output, output)


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
            _silu_forward_inplace_op(input)
        else:
            _forward_inplace(_SILU, input)
        ctx.mark_dirty(input)
        ctx.save_for_backward(original)
        return input

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (original,) = ctx.saved_tensors
        if _is_compiling():
            return _SILU.backward_op(grad_output, original)
        return _SILU.differentiable_backward(grad_output, original)


_relu_inplace_apply = fast_apply(ReLUInplaceFunction)


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
            _relu_forward_inplace_op(input)
            return input
        _check_inplace_allowed(input)
        return ReLUInplaceFunction.apply(input)
    if needs_autograd(input):
        _check_inplace_allowed(input)
        return _relu_inplace_apply(input)
    # No autograd: the write alone. Under no_grad torch.relu_ bumps the version counter
    # too, which the kernel's write does not do by itself.
    _forward_inplace(_RELU, input)
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


_GELU_APPROXIMATIONS = ("none", "tanh")


def _check_gelu_approximate(approximate: str) -> None:
    # torch's own checks: the argument parser's TypeError, then GeluType's RuntimeError.
    if not isinstance(approximate, str):
        raise TypeError(f"gelu(): argument 'approximate' must be str, not {type(approximate).__name__}")
    if approximate not in _GELU_APPROXIMATIONS:
        raise RuntimeError("approximate argument must be either none or tanh.")


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
    return _GELU.call(input, approximate)


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
        _forward_inplace(_SILU, input)
        torch.autograd.graph.increment_version(input)
        return input
    return _SILU.call(input)
