"""Tolerances and comparison helpers shared by every test module."""

from __future__ import annotations

import math

import torch

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

# (rtol, atol) per dtype for one elementwise result that went through at most a few
# roundings in the compute dtype and one rounding into the storage dtype.
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (2e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
}


def tolerance(dtype: torch.dtype, reduction_size: int = 1) -> tuple[float, float]:
    """(rtol, atol) for ``dtype``; atol grows with sqrt(length) of any reduction involved."""
    rtol, atol = TOLERANCES[dtype]
    return rtol, atol * max(1.0, math.sqrt(reduction_size))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, reduction_size: int = 1, **kwargs) -> None:
    """Compare in ``expected``'s dtype with the table's tolerance; NaNs must match."""
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
    rtol, atol = tolerance(expected.dtype, reduction_size)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True, **kwargs)


def reference_in_fp64(fn, *tensors: torch.Tensor, out_dtype: torch.dtype | None = None, **kwargs) -> torch.Tensor:
    """``fn`` evaluated in fp64 on the same (already rounded) inputs, rounded to ``out_dtype``."""
    out_dtype = out_dtype or tensors[0].dtype
    upcast = [t.double() if t.is_floating_point() else t for t in tensors]
    return fn(*upcast, **kwargs).to(out_dtype)


def strided_variants(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The same values in awkward layouts: contiguous, transposed, sliced with gaps, expanded."""
    base = torch.randn(*shape, dtype=dtype)
    variants = {"contiguous": base}
    if base.dim() >= 2:
        variants["transposed"] = base.transpose(0, -1).contiguous().transpose(0, -1)
        variants["sliced"] = torch.randn(*shape[:-1], shape[-1] * 2, dtype=dtype)[..., ::2]
    variants["expanded"] = torch.randn(*shape[:-1], 1, dtype=dtype).expand(shape) if base.dim() >= 1 else base
    return variants
