"""Pure-PyTorch references: the test oracle, and the fallback where Triton cannot run.

Each ``<op>_ref`` computes exactly what the matching Triton kernel computes, with eager
PyTorch ops, in the same compute dtype (fp32 for half types, fp64 for fp64).
"""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype kernels compute in: fp64 stays fp64, every other float computes in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def sigmoid_ref(input: torch.Tensor) -> torch.Tensor:
    """sigmoid(input), computed in the compute dtype and returned in ``input.dtype``."""
    return torch.sigmoid(input.to(compute_dtype(input.dtype))).to(input.dtype)


def sigmoid_backward_ref(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """grad_output * output * (1 - output), the gradient of sigmoid from its output."""
    acc = compute_dtype(output.dtype)
    y = output.to(acc)
    return (grad_output.to(acc) * y * (1 - y)).to(output.dtype)


def tanh_ref(input: torch.Tensor) -> torch.Tensor:
    """tanh(input), computed in the compute dtype and returned in ``input.dtype``."""
    return torch.tanh(input.to(compute_dtype(input.dtype))).to(input.dtype)


def tanh_backward_ref(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """grad_output * (1 - output^2), the gradient of tanh from its output."""
    acc = compute_dtype(output.dtype)
    y = output.to(acc)
    return (grad_output.to(acc) * (1 - y * y)).to(output.dtype)


def relu_ref(input: torch.Tensor) -> torch.Tensor:
    """input < 0 ? 0 : input, exact in every dtype, so computed in ``input.dtype`` (integers too)."""
    return torch.where(input < 0, torch.zeros((), dtype=input.dtype), input)


def relu_backward_ref(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """output <= 0 ? 0 : grad_output (torch's threshold_backward at 0; a NaN output passes the gradient)."""
    return torch.where(output <= 0, torch.zeros((), dtype=grad_output.dtype), grad_output)


def mse_loss_ref(input: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """(input - target)^2, reduced by 'none' | 'mean' | 'sum', accumulated in the compute dtype.

    ``input`` and ``target`` have one shape (already broadcast); the result has their
    promoted dtype, as torch's mse_loss.
    """
    out_dtype = torch.promote_types(input.dtype, target.dtype)
    acc = compute_dtype(out_dtype)
    loss = (input.to(acc) - target.to(acc)).square()
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(out_dtype)


def mse_loss_backward_ref(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str,
    input_grad: bool,
    target_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(grad_input, grad_target) = (scale * (input - target) * grad_output, -grad_input).

    ``scale`` is 2 / numel for 'mean' and 2 otherwise; ``grad_output`` is 0-d unless
    ``reduction`` is 'none'. A gradient whose flag is False is None.
    """
    acc = compute_dtype(torch.promote_types(input.dtype, target.dtype))
    scale = 2.0 / input.numel() if reduction == "mean" and input.numel() > 0 else 2.0
    grad = scale * (input.to(acc) - target.to(acc)) * grad_output.to(acc)
    grad_input = grad.to(input.dtype) if input_grad else None
    grad_target = (-grad).to(target.dtype) if target_grad else None
    return grad_input, grad_target


def softmax_ref(input: torch.Tensor, dim: int, output_dtype: torch.dtype) -> torch.Tensor:
    """softmax over ``dim``, computed in ``output_dtype``'s compute dtype, returned in ``output_dtype``."""
    return torch.softmax(input.to(compute_dtype(output_dtype)), dim).to(output_dtype)


def log_softmax_ref(input: torch.Tensor, dim: int, output_dtype: torch.dtype) -> torch.Tensor:
    """log_softmax over ``dim``, computed in ``output_dtype``'s compute dtype, returned in ``output_dtype``."""
    return torch.log_softmax(input.to(compute_dtype(output_dtype)), dim).to(output_dtype)


def softmax_backward_ref(
    grad_output: torch.Tensor, output: torch.Tensor, dim: int, input_dtype: torch.dtype
) -> torch.Tensor:
    """output * (grad_output - sum(grad_output * output)), softmax's input gradient in ``input_dtype``."""
    acc = compute_dtype(output.dtype)
    g, y = grad_output.to(acc), output.to(acc)
    return (y * (g - (g * y).sum(dim, keepdim=True))).to(input_dtype)


def log_softmax_backward_ref(
    grad_output: torch.Tensor, output: torch.Tensor, dim: int, input_dtype: torch.dtype
) -> torch.Tensor:
    """grad_output - exp(output) * sum(grad_output), log_softmax's input gradient in ``input_dtype``."""
    acc = compute_dtype(output.dtype)
    g, y = grad_output.to(acc), output.to(acc)
    return (g - y.exp() * g.sum(dim, keepdim=True)).to(input_dtype)
