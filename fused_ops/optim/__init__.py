"""Fused optimizers: drop-in replacements for torch.optim.Adam, AdamW and SGD, 8-bit Adam(W), and clip_grad_norm_.

>>> optimizer = fused_ops.optim.AdamW(model.parameters(), lr=1e-3)  # was torch.optim.AdamW
"""

from .adam import Adam, AdamW
from .adam8bit import Adam8bit, AdamW8bit
from .clip_grad_norm import clip_grad_norm_
from .sgd import SGD

__all__ = ["SGD", "Adam", "Adam8bit", "AdamW", "AdamW8bit", "clip_grad_norm_"]
