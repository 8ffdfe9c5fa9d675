"""Fused optimizers: drop-in replacements for torch.optim.Adam, AdamW and SGD.

>>> optimizer = fused_ops.optim.AdamW(model.parameters(), lr=1e-3)  # was torch.optim.AdamW
"""

from .adam import Adam, AdamW
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW"]
