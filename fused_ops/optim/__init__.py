"""Fused optimizers (drop-in replacements for torch.optim)."""
