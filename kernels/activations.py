"""Elementwise activation kernels: sigmoid (forward and backward).

Every kernel here sees its tensors as flat arrays of ``n_elements``. The launchers accept
any tensor whose memory is dense and non-overlapping (contiguous, or a permutation of
contiguous such as a transpose); the PyTorch side copies other layouts first.
"""

import torch
import triton
import triton.language as tl

from ._common import upcast
from ._config import ELEMENTWISE_BLOCK_SIZE, ELEMENTWISE_NUM_WARPS


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


def _launch_elementwise(kernel, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Launch ``kernel(*inputs, output, n_elements)`` over inputs that share one dense layout.

    The output is allocated with the first input's layout (``empty_like``), which for a
    dense tensor has the same strides, so flat offsets address matching elements.
    """
    output = torch.empty_like(inputs[0])
    n_elements = output.numel()
    if n_elements == 0:
        return output
    grid = (triton.cdiv(n_elements, ELEMENTWISE_BLOCK_SIZE),)
    kernel[grid](*inputs, output, n_elements, BLOCK_SIZE=ELEMENTWISE_BLOCK_SIZE, num_warps=ELEMENTWISE_NUM_WARPS)
    return output


def sigmoid_forward(input: torch.Tensor) -> torch.Tensor:
    """Sigmoid of a dense tensor; the output has the input's layout."""
    return _launch_elementwise(sigmoid_forward_kernel, (input,))


def sigmoid_backward(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Gradient of sigmoid from the saved output; both tensors must share one dense layout."""
    return _launch_elementwise(sigmoid_backward_kernel, (grad_output, output))
