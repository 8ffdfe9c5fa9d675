"""``torch.nn`` modules backed by fused_ops, with torch.nn's constructor arguments."""

from __future__ import annotations

import torch

from . import activations, losses
from . import cross_entropy as _cross_entropy
from . import softmax as _softmax


class Sigmoid(torch.nn.Module):
    """Drop-in for :class:`torch.nn.Sigmoid`, computed by :func:`fused_ops.sigmoid`."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return activations.sigmoid(input)


class Tanh(torch.nn.Tanh):
    """Drop-in for :class:`torch.nn.Tanh`, computed by :func:`fused_ops.tanh`.

    A subclass, so ``isinstance(module, torch.nn.Tanh)`` still holds in code that checks.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return activations.tanh(input)


class ReLU(torch.nn.ReLU):
    """Drop-in for :class:`torch.nn.ReLU` (same ``inplace`` argument), computed by :func:`fused_ops.relu`.

    With ``inplace=True`` the kernel writes into the input, which is returned, exactly as
    torch's ``ReLU(inplace=True)`` does: autograd sees the write, so a leaf that requires
    grad raises ``RuntimeError`` and a stale saved copy of the input is caught in backward.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return activations.relu_(input) if self.inplace else activations.relu(input)


class MSELoss(torch.nn.MSELoss):
    """Drop-in for :class:`torch.nn.MSELoss` (same constructor), computed by :func:`fused_ops.mse_loss`.

    A subclass, so ``isinstance(module, torch.nn.MSELoss)`` still holds in code that checks.
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return losses.mse_loss(input, target, reduction=self.reduction)


class Softmax(torch.nn.Softmax):
    """Drop-in for :class:`torch.nn.Softmax` (same constructor), computed by :func:`fused_ops.softmax`.

    ``dim=None`` keeps torch's deprecated implicit choice and its warning.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = _softmax.implicit_softmax_dim("softmax", input.dim(), 5) if self.dim is None else self.dim
        return _softmax.softmax(input, dim)


class LogSoftmax(torch.nn.LogSoftmax):
    """Drop-in for :class:`torch.nn.LogSoftmax` (same constructor), computed by :func:`fused_ops.log_softmax`.

    ``dim=None`` keeps torch's deprecated implicit choice and its warning.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = _softmax.implicit_softmax_dim("log_softmax", input.dim(), 5) if self.dim is None else self.dim
        return _softmax.log_softmax(input, dim)


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """Drop-in for :class:`torch.nn.CrossEntropyLoss` (same constructor), computed by :func:`fused_ops.cross_entropy`.

    A subclass, so ``isinstance(module, torch.nn.CrossEntropyLoss)`` still holds. The one
    extra, keyword-only argument ``grad_in_forward`` selects the opt-in mode described in
    :func:`fused_ops.cross_entropy`.
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        grad_in_forward: bool = False,
    ) -> None:
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.grad_in_forward = grad_in_forward

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _cross_entropy.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            grad_in_forward=self.grad_in_forward,
        )
