"""``torch.nn`` modules backed by fused_ops, with torch.nn's constructor arguments."""

from __future__ import annotations

import torch

from . import activations


class Sigmoid(torch.nn.Module):
    """Drop-in for :class:`torch.nn.Sigmoid`, computed by :func:`fused_ops.sigmoid`."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return activations.sigmoid(input)
