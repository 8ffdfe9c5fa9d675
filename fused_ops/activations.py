"""Fused elementwise activations: sigmoid.

Each op has three layers, read top to bottom:

- the functional (``sigmoid``) validates arguments like torch and calls the Function;
- the ``torch.autograd.Function`` (``SigmoidFunction``) saves what backward needs with
  ``ctx.save_for_backward``, so a second backward through a freed graph raises;
- ``torch.library`` custom ops (``fused_ops::sigmoid_forward`` and ``_backward``) run the
  kernels, with fake implementations so ``torch.compile(fullgraph=True)`` traces them
  without a graph break. The backward op has its own autograd formula in eager ops,
  which is what makes double backward (``gradgradcheck``) work.
"""

from __future__ import annotations

import torch

from . import reference
from ._dispatch import TRITON_AVAILABLE, use_triton
from ._validation import check_floating, dense_layout, promote_to_floating

if TRITON_AVAILABLE:
    from .kernels import activations as kernels


@torch.library.custom_op("fused_ops::sigmoid_forward", mutates_args=())
def _sigmoid_forward(input: torch.Tensor) -> torch.Tensor:
    if use_triton("sigmoid", input):
        (input,) = dense_layout(input)
        return kernels.sigmoid_forward(input)
    return reference.sigmoid_ref(input)


@_sigmoid_forward.register_fake
def _(input: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(input)


@torch.library.custom_op("fused_ops::sigmoid_backward", mutates_args=())
def _sigmoid_backward(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    if use_triton("sigmoid", grad_output, output):
        grad_output, output = dense_layout(grad_output, output)
        return kernels.sigmoid_backward(grad_output, output)
    return reference.sigmoid_backward_ref(grad_output, output)


@_sigmoid_backward.register_fake
def _(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(output)


def _sigmoid_backward_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _sigmoid_double_backward(ctx, grad_grad_input: torch.Tensor):
    # grad_input = g * y * (1 - y), so d/dg = y * (1 - y) and d/dy = g * (1 - 2y).
    grad_output, output = ctx.saved_tensors
    grad_grad_output = grad_grad_input * output * (1 - output)
    grad_output_saved = grad_grad_input * grad_output * (1 - 2 * output)
    return grad_grad_output, grad_output_saved


_sigmoid_backward.register_autograd(_sigmoid_double_backward, setup_context=_sigmoid_backward_setup_context)


class SigmoidFunction(torch.autograd.Function):
    """Sigmoid whose forward and backward are Triton kernels; backward uses the saved output."""

    @staticmethod
    def forward(ctx, input: torch.Tensor) -> torch.Tensor:
        output = torch.ops.fused_ops.sigmoid_forward(input)
        ctx.save_for_backward(output)
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (output,) = ctx.saved_tensors
        return torch.ops.fused_ops.sigmoid_backward(grad_output, output)


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
    input = promote_to_floating(input)
    check_floating("sigmoid", input)
    return SigmoidFunction.apply(input)
