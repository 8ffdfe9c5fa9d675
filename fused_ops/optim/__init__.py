"""Fused optimizers: drop-in replacements for torch.optim.Adam, AdamW and SGD, and clip_grad_norm_.

>>> optimizer = fused_ops.optim.AdamW(model.parameters(), lr=1e-3)  # was torch.optim.AdamW
"""

from .adam import Adam, AdamW
from .clip_grad_norm import clip_grad_norm_
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "clip_grad_norm_"]
