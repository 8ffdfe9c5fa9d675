"""Triton kernels and their host launchers (installed as ``fused_ops.kernels``).

This package holds Triton only: ``@triton.jit`` kernels and the thin Python functions
that allocate outputs, compute grids and launch them. Autograd, validation and dispatch
live on the PyTorch side in :mod:`fused_ops`.
"""
