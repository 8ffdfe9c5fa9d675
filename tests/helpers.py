"""Tolerances and comparison helpers shared by every test module."""

from __future__ import annotations

import contextlib
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


class HostSyncError(AssertionError):
    """A fused op read a tensor's value on the host (``.item()``, ``bool(t)``, ...)."""


_HOST_SYNC_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def no_host_sync():
    """Fail if code inside reads a tensor value on the host.

    On a GPU each of these calls stalls the stream until the kernel finishes and breaks
    CUDA graph capture. They all go through these Tensor methods, so the CPU tests catch
    them just as a GPU run would.
    """
    originals = {name: getattr(torch.Tensor, name) for name in _HOST_SYNC_METHODS}

    def refuse(name):
        def method(self, *args, **kwargs):
            raise HostSyncError(f"host sync: Tensor.{name} called on a tensor of shape {tuple(self.shape)}")

        return method

    try:
        for name in _HOST_SYNC_METHODS:
            setattr(torch.Tensor, name, refuse(name))
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def assert_compiled_matches_eager(fn, *inputs: torch.Tensor, backend: str = "inductor") -> None:
    """``torch.compile(fn, fullgraph=True)`` traces with no graph break and matches eager.

    Compares the output and the gradient of every input that requires grad, for a fixed
    random ``grad_output``.
    """
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend=backend)

    def run(f):
        leaves = [x.detach().requires_grad_(x.requires_grad) for x in inputs]
        out = f(*leaves)
        grad_output = torch.ones_like(out) if out.dim() == 0 else torch.linspace(-1, 1, out.numel()).view_as(out)
        out.backward(grad_output.to(out.dtype))
        return out, [leaf.grad for leaf in leaves if leaf.requires_grad]

    out_eager, grads_eager = run(fn)
    out_compiled, grads_compiled = run(compiled)
    assert_close(out_compiled, out_eager)
    for grad_compiled, grad_eager in zip(grads_compiled, grads_eager, strict=True):
        assert_close(grad_compiled, grad_eager)
