"""Elementwise activation kernels: sigmoid, tanh, relu, gelu and silu (forward and backward).

Every kernel here sees its tensors as flat arrays of ``n_elements``. The launchers accept
any tensor whose memory is dense and non-overlapping (contiguous, or a permutation of
contiguous such as a transpose); the PyTorch side copies other layouts first.
"""

import functools

import torch
import triton
import triton.language as tl

from ._common import upcast
from ._config import ELEMENTWISE_BLOCK_SIZE, ELEMENTWISE_NUM_WARPS
from ._launch import BoundKernel


@triton.jit
def sigmoid_forward_kernel(input_ptr, output_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    """output = 1 / (1 + exp(-input)), elementwise over ``n_elements``."""
    # int64 before the multiply: pid * BLOCK_SIZE overflows int32 past 2^31 elements.
    block_start = tl.program_id(0).to(tl.int64) * BLOCK_SIZE
    offsets = block_start + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = upcast(tl.load(input_ptr + offsets, mask=mask))
    # exp(-|x|) never overflows, so both tails keep torch's relative precision:
    # sigmoid(-80) = exp(-80) / (1 + exp(-80)) ~ 1.8e-35 instead of 1 / (1 + inf) = 0.
    z = tl.exp(-tl.abs(x))
    y = tl.where(x >= 0, 1 / (1 + z), z / (1 + z))
    tl.store(output_ptr + offsets, y.to(output_ptr.dtype.element_ty), mask=mask)


@triton.jit
def sigmoid_backward_kernel(grad_output_ptr, output_ptr, grad_input_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    """grad_input = grad_output * output * (1 - output), from the saved forward output."""
    block_start = tl.program_id(0).to(tl.int64) * BLOCK_SIZE
    offsets = block_start + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    grad_output = upcast(tl.load(grad_output_ptr + offsets, mask=mask))
    y = upcast(tl.load(output_ptr + offsets, mask=mask))
    grad_input = grad_output * y * (1 - y)
    tl.store(grad_input_ptr + offsets, grad_input.to(grad_input_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _tanh_of_magnitude(ax):
    """tanh(ax) for ax = |x| >= 0 (or NaN), in ax's dtype, within 2 ulp in fp32 and 1 ulp in fp64."""
    # Below 0.625, tanh(a) = a + a * a^2 * R(a^2), with R a polynomial fitted to
    # (tanh(a) / a - 1) / a^2 (Chebyshev fit, mpmath, 50 digits). Adding the small
    # correction to `a` keeps tanh(1e-8) == 1e-8 exactly, where (1 - e) / (1 + e) with
    # e = exp(-2a) would cancel to 0. The fp64 fit has 12 terms (error 4e-18), fp32 6 (2e-9).
    # Evaluated only where it is used: elsewhere z = 0, so large |x| never overflows ax * ax.
    near = tl.where(ax < 0.625, ax, 0.0)
    z = near * near
    if ax.dtype == tl.float64:
        r = 6.485163482793113e-06
        r = r * z - 3.12011014257974e-05
        r = r * z + 9.257116129556769e-05
        r = r * z - 0.0002375906496055562
        r = r * z + 0.0005896606577757043
        r = r * z - 0.0014557754120478055
        r = r * z + 0.0035921217511549622
        r = r * z - 0.008863235103240878
        r = r * z + 0.021869488519008305
        r = r * z - 0.05396825396789699
        r = r * z + 0.13333333333333042
        r = r * z - 0.3333333333333333
    else:
        r = 0.002292744816178142
        r = r * z - 0.008343945515839153
        r = r * z + 0.02176891865102821
        r = r * z - 0.053959259577204544
        r = r * z + 0.1333330355691574
        r = r * z - 0.3333333317214036
    near_zero = near + near * z * r
    # From 0.625 up, e <= 0.29, so 1 - e cancels nothing; exp(-2a) never overflows, and
    # for large a it underflows to 0, giving exactly 1 (and 1 for +inf).
    e = tl.exp(-2 * ax)
    return tl.where(ax < 0.625, near_zero, (1 - e) / (1 + e))


@triton.jit
def tanh_forward_kernel(input_ptr, output_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    """output = tanh(input), elementwise over ``n_elements``."""
    block_start = tl.program_id(0).to(tl.int64) * BLOCK_SIZE
    offsets = block_start + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = upcast(tl.load(input_ptr + offsets, mask=mask))
    t = _tanh_of_magnitude(tl.abs(x))
    # tanh is odd. Zeros (and NaN) pass through as x itself, which keeps tanh(-0.0) = -0.0
    # like torch; NaN also fails both comparisons, so it propagates.
    y = tl.where(x < 0, -t, tl.where(x > 0, t, x))
    tl.store(output_ptr + offsets, y.to(output_ptr.dtype.element_ty), mask=mask)


@triton.jit
def tanh_backward_kernel(grad_output_ptr, output_ptr, grad_input_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    """grad_input = grad_output * (1 - output^2), from the saved forward output (torch's formula)."""
    block_start = tl.program_id(0).to(tl.int64) * BLOCK_SIZE
    offsets = block_start + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    grad_output = upcast(tl.load(grad_output_ptr + offsets, mask=mask))
    y = upcast(tl.load(output_ptr + offsets, mask=mask))
    grad_input = grad_output * (1 - y * y)
    tl.store(grad_input_ptr + offsets, grad_input.to(grad_input_ptr.dtype.element_ty), mask=mask)


@triton.jit
def relu_forward_kernel(input_ptr, output_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    """output = input where input is not negative, else 0; floats and signed/unsigned integers.

    ``output_ptr`` may equal ``input_ptr`` (in-place relu): each element is read and then
    written by the same program.
    """
    block_start = tl.program_id(0).to(tl.int64) * BLOCK_SIZE
    offsets = block_start + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(input_ptr + offsets, mask=mask)
    if x.dtype.is_floating():
        # A select is exact in any dtype; the upcast is for the comparison, which the
        # interpreter gets wrong on raw bf16 bits. Integers compare natively (an int64
        # through fp32 would lose its low bits).
        x = upcast(x)
    # torch's x < 0 ? 0 : x: NaN fails the test and propagates, -0.0 stays -0.0.
    y = tl.where(x < 0, 0, x)
    tl.store(output_ptr + offsets, y.to(output_ptr.dtype.element_ty), mask=mask)


@triton.jit
def relu_backward_kernel(grad_output_ptr, output_ptr, grad_input_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    """grad_input = output <= 0 ? 0 : grad_output, torch's threshold_backward(grad, output, 0).

    The mask comes from the saved output: output > 0 exactly where input > 0, so the
    gradient at input == 0 is 0, and a NaN output passes its gradient through, as in torch.
    """
    block_start = tl.program_id(0).to(tl.int64) * BLOCK_SIZE
    offsets = block_start + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    grad_output = upcast(tl.load(grad_output_ptr + offsets, mask=mask))
    y = upcast(tl.load(output_ptr + offsets, mask=mask))
    grad_input = tl.where(y <= 0, 0, grad_output)
    tl.store(grad_input_ptr + offsets, grad_input.to(grad_input_ptr.dtype.element_ty), mask=mask)


def _launch_unary(
    bound: BoundKernel, input: torch.Tensor, out: torch.Tensor | None = None, constants: tuple | None = None
) -> torch.Tensor:
    """Launch a forward kernel ``(input, output, n_elements)``, into ``out`` if given (may be
    ``input``); ``constants`` are its constexprs (default: the block size alone)."""
    output = torch.empty_like(input) if out is None else out
    n_elements = output.numel()
    if n_elements:
        # Integer ceil-division: triton.cdiv costs ~2.5 µs from Python, `//` 0.04 µs.
        programs = (n_elements + ELEMENTWISE_BLOCK_SIZE - 1) // ELEMENTWISE_BLOCK_SIZE
        constants = _ELEMENTWISE_CONSTANTS if constants is None else constants
        bound.launch(programs, (input, output, n_elements), constants, ELEMENTWISE_NUM_WARPS)
    return output


def _launch_binary(
    bound: BoundKernel, grad_output: torch.Tensor, saved: torch.Tensor, constants: tuple | None = None
) -> torch.Tensor:
    """Launch a backward kernel ``(grad_output, saved, grad_input, n_elements)`` over tensors
    of one dense layout (the gradient gets ``saved``'s); ``constants`` as for ``_launch_unary``."""
    grad_input = torch.empty_like(saved)
    n_elements = grad_input.numel()
    if n_elements:
        programs = (n_elements + ELEMENTWISE_BLOCK_SIZE - 1) // ELEMENTWISE_BLOCK_SIZE
        constants = _ELEMENTWISE_CONSTANTS if constants is None else constants
        args = (grad_output, saved, grad_input, n_elements)
        bound.launch(programs, args, constants, ELEMENTWISE_NUM_WARPS)
    return grad_input


# GELU and SiLU. Their backward kernels recompute from the saved INPUT (neither function
# can be inverted from its output), so forward moves 8 B/elem and backward 12 B/elem in
# fp32, with nothing saved beyond the input itself. Constants are torch's
# (aten/src/ATen/native/cuda/ActivationGeluKernel.cu, ActivationSiluKernel.cu). The erf
# form is torch's formula as written; the tanh form and SiLU are torch's formulas rewritten
# through a stable sigmoid (1 + tanh(u) = 2 sigmoid(2u)), equal in exact arithmetic but
# without the cancellation in the negative tails; NaN and inf cases come out as torch's.
_SQRT1_2 = tl.constexpr(0.7071067811865476)  # 1 / sqrt(2)
_GELU_PDF_SCALE = tl.constexpr(0.3989422804014327)  # 1 / sqrt(2 pi)
_GELU_TANH_BETA = tl.constexpr(0.7978845608028654)  # sqrt(2 / pi)
_GELU_TANH_KAPPA = tl.constexpr(0.044715)


@triton.jit
def _sigmoid_pair(v):
    """(sigmoid(v), sigmoid(|v|), sigmoid(-|v|)), each from exp(-|v|), which never overflows.

    sigmoid(v) (1 - sigmoid(v)) = sigmoid(|v|) sigmoid(-|v|), a product with no cancellation.
    """
    z = tl.exp(-tl.abs(v))
    p = 1 / (1 + z)
    q = z / (1 + z)
    return tl.where(v >= 0, p, q), p, q


@triton.jit
def gelu_forward_kernel(input_ptr, output_ptr, n_elements, APPROXIMATE_TANH: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    """output = gelu(input), elementwise: the erf form, or torch's tanh approximation.

    erf form: 0.5 x (1 + erf(x / sqrt 2)); tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    """
    block_start = tl.program_id(0).to(tl.int64) * BLOCK_SIZE
    offsets = block_start + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = upcast(tl.load(input_ptr + offsets, mask=mask))
    if APPROXIMATE_TANH:
        inner = _GELU_TANH_BETA * (x + _GELU_TANH_KAPPA * (x * x * x))
        # 0.5 x (1 + tanh(u)) = x sigmoid(2u): the same function, without torch's
        # cancellation in 1 + tanh(u) for u < 0 (relative error ~1/|1 + tanh(u)| ulp there).
        s, _, _ = _sigmoid_pair(2 * inner)
        y = x * s
    else:
        # torch's formula; 0.5 * x first, so 0.5 * 3e38 * 2 stays finite.
        y = 0.5 * x * (1 + tl.math.erf(x * _SQRT1_2))
    # gelu(-inf) = -inf * 0 = NaN, as torch's formula gives; -0.0 keeps its sign.
    tl.store(output_ptr + offsets, y.to(output_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gelu_backward_kernel(
    grad_output_ptr, input_ptr, grad_input_ptr, n_elements, APPROXIMATE_TANH: tl.constexpr, BLOCK_SIZE: tl.constexpr
):
    """grad_input = grad_output * gelu'(input), recomputed from the saved input (torch's formulas)."""
    block_start = tl.program_id(0).to(tl.int64) * BLOCK_SIZE
    offsets = block_start + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    grad_output = upcast(tl.load(grad_output_ptr + offsets, mask=mask))
    x = upcast(tl.load(input_ptr + offsets, mask=mask))
    if APPROXIMATE_TANH:
        # torch's 0.5 (1 + t) + 0.5 x (1 - t^2) u' with t = tanh(u), written with
        # s = sigmoid(2u): 0.5 (1 + t) = s and 1 - t^2 = 4 s (1 - s), both without cancellation.
        x_sq = x * x
        inner = _GELU_TANH_BETA * (x + _GELU_TANH_KAPPA * (x_sq * x))
        s, p, q = _sigmoid_pair(2 * inner)
        # p * q = s (1 - s), each factor computed directly; inf * 0 gives NaN where torch's does.
        derivative = s + (2 * x) * (p * q) * _GELU_TANH_BETA * (1 + 3 * _GELU_TANH_KAPPA * x_sq)
    else:
        # Phi(x) + x phi(x). Masked lanes hold garbage, which numpy may warn about in the
        # interpreter; the stores ignore them.
        cdf = 0.5 * (1 + tl.math.erf(x * _SQRT1_2))
        pdf = tl.exp(-0.5 * x * x) * _GELU_PDF_SCALE
        derivative = cdf + x * pdf
    grad_input = grad_output * derivative
    tl.store(grad_input_ptr + offsets, grad_input.to(grad_input_ptr.dtype.element_ty), mask=mask)


@triton.jit
def silu_forward_kernel(input_ptr, output_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    """output = input * sigmoid(input), elementwise.

    ``output_ptr`` may equal ``input_ptr`` (in-place silu): each element is read and then
    written by the same program.
    """
    block_start = tl.program_id(0).to(tl.int64) * BLOCK_SIZE
    offsets = block_start + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = upcast(tl.load(input_ptr + offsets, mask=mask))
    # torch computes x / (1 + exp(-x)), which gives -0.0 once exp(-x) overflows (x < -88 in
    # fp32); x * sigmoid(x) with a stable sigmoid stays x * exp(x) there (silu(-80) ~ -1.4e-33).
    # silu(-inf) = -inf * 0 = NaN and silu(inf) = inf, as in torch.
    s, _, _ = _sigmoid_pair(x)
    y = x * s
    tl.store(output_ptr + offsets, y.to(output_ptr.dtype.element_ty), mask=mask)


@triton.jit
def silu_backward_kernel(grad_output_ptr, input_ptr, grad_input_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    """grad_input = grad_output * s * (1 + x * (1 - s)) with s = sigmoid(x), from the saved input (torch's formula)."""
    block_start = tl.program_id(0).to(tl.int64) * BLOCK_SIZE
    offsets = block_start + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    grad_output = upcast(tl.load(grad_output_ptr + offsets, mask=mask))
    x = upcast(tl.load(input_ptr + offsets, mask=mask))
    s, p, q = _sigmoid_pair(x)
    # 1 - s read off the pair instead of subtracted, so it keeps precision for x > 0.
    one_minus_s = tl.where(x >= 0, q, p)
    grad_input = grad_output * (s * (1 + x * one_minus_s))
    tl.store(grad_input_ptr + offsets, grad_input.to(grad_input_ptr.dtype.element_ty), mask=mask)


def gelu_forward(input: torch.Tensor, approximate: str) -> torch.Tensor:
    """GELU of a dense tensor (``approximate`` is "none" or "tanh"); the output has the input's layout."""
    return _launch_unary(_gelu_forward_launch, input, None, (approximate == "tanh", ELEMENTWISE_BLOCK_SIZE))


def gelu_backward(grad_output: torch.Tensor, input: torch.Tensor, approximate: str) -> torch.Tensor:
    """Gradient of GELU from the saved input; both tensors must share one dense layout."""
    return _launch_binary(_gelu_backward_launch, grad_output, input, (approximate == "tanh", ELEMENTWISE_BLOCK_SIZE))


_ELEMENTWISE_CONSTANTS = (ELEMENTWISE_BLOCK_SIZE,)

_gelu_forward_launch = BoundKernel(gelu_forward_kernel)
_gelu_backward_launch = BoundKernel(gelu_backward_kernel)


def _launcher(launch, kernel):
    """``launch`` bound to ``kernel``, bound once at import (kernels/_launch.py): a partial,
    so the op's call reaches the shared launch with no Python frame of its own."""
    launcher = functools.partial(launch, BoundKernel(kernel))
    kind = "forward: (input, out=None)" if launch is _launch_unary else "backward: (grad_output, saved)"
    launcher.__doc__ = f"{kernel.__name__}'s launch, {kind} of one dense layout. {kernel.fn.__doc__}"
    return launcher


sigmoid_forward = _launcher(_launch_unary, sigmoid_forward_kernel)
sigmoid_backward = _launcher(_launch_binary, sigmoid_backward_kernel)
tanh_forward = _launcher(_launch_unary, tanh_forward_kernel)
tanh_backward = _launcher(_launch_binary, tanh_backward_kernel)
relu_forward = _launcher(_launch_unary, relu_forward_kernel)
relu_backward = _launcher(_launch_binary, relu_backward_kernel)
silu_forward = _launcher(_launch_unary, silu_forward_kernel)
silu_backward = _launcher(_launch_binary, silu_backward_kernel)
