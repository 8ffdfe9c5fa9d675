"""Elementwise activation kernels: sigmoid, tanh and relu (forward and backward).

Every kernel here sees its tensors as flat arrays of ``n_elements``. The launchers accept
any tensor whose memory is dense and non-overlapping (contiguous, or a permutation of
contiguous such as a transpose); the PyTorch side copies other layouts first.
"""

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


# One BoundKernel per kernel, made at its first launch: launches skip Triton's binder.
_bound: dict = {}


def _launch_elementwise(kernel, inputs: tuple[torch.Tensor, ...], output: torch.Tensor | None = None) -> torch.Tensor:
    """Launch ``kernel(*inputs, output, n_elements)`` over inputs that share one dense layout.

    The output is allocated with the first input's layout (``empty_like``), which for a
    dense tensor has the same strides, so flat offsets address matching elements. An
    ``output`` passed in (the input itself, for in-place ops) must share that layout.
    """
    output = torch.empty_like(inputs[0]) if output is None else output
    n_elements = output.numel()
    if n_elements == 0:
        return output
    bound = _bound.get(kernel)
    if bound is None:
        bound = _bound[kernel] = BoundKernel(kernel)
    # Integer ceil-division: triton.cdiv costs ~2.5 µs from Python, `//` 0.04 µs.
    programs = (n_elements + ELEMENTWISE_BLOCK_SIZE - 1) // ELEMENTWISE_BLOCK_SIZE
    bound.launch(programs, (*inputs, output, n_elements), (ELEMENTWISE_BLOCK_SIZE,), ELEMENTWISE_NUM_WARPS)
    return output


def sigmoid_forward(input: torch.Tensor) -> torch.Tensor:
    """Sigmoid of a dense tensor; the output has the input's layout."""
    return _launch_elementwise(sigmoid_forward_kernel, (input,))


def sigmoid_backward(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Gradient of sigmoid from the saved output; both tensors must share one dense layout."""
    return _launch_elementwise(sigmoid_backward_kernel, (grad_output, output))


def tanh_forward(input: torch.Tensor) -> torch.Tensor:
    """Tanh of a dense tensor; the output has the input's layout."""
    return _launch_elementwise(tanh_forward_kernel, (input,))


def tanh_backward(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Gradient of tanh from the saved output; both tensors must share one dense layout."""
    return _launch_elementwise(tanh_backward_kernel, (grad_output, output))


def relu_forward(input: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Relu of a dense float or integer tensor, into ``out`` (may be ``input`` itself) or a new tensor."""
    return _launch_elementwise(relu_forward_kernel, (input,), out)


def relu_backward(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Gradient of relu from the saved output; both tensors must share one dense layout."""
    return _launch_elementwise(relu_backward_kernel, (grad_output, output))
