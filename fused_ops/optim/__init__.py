"""Fused optimizers: drop-in replacements for torch.optim.Adam and torch.optim.AdamW.

>>> optimizer = fused_ops.optim.AdamW(model.parameters(), lr=1e-3)  # was torch.optim.AdamW
"""

from .adam import Adam, AdamW

__all__ = ["Adam", "AdamW"]
