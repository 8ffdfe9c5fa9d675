"""Tolerances and comparison helpers shared by every test module."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
from pathlib import Path

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


class LiveBytes:
    """Peak bytes of CPU tensor memory allocated inside a ``with`` block, from the profiler.

    The profiler's allocator events see every allocation, including those made inside
    custom ops and by their kernels' launchers (a ``TorchDispatchMode`` would see only the
    outputs of the ops it intercepts). Tensors that existed before the block do not count.

        >>> with LiveBytes() as live:
        ...     loss = f(x); grads = torch.autograd.grad(loss, params)
        >>> live.peak_excluding(grads)   # the peak, not counting the returned grads

    Allocations on every device are added together (CPU here; CUDA on a GPU machine).
    """

    def __init__(self) -> None:
        self._events: list[tuple[int, int, int]] = []

    def __enter__(self) -> LiveBytes:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        self._profile = profile(activities=activities, profile_memory=True)
        self._profile.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        from torch._C._profiler import _EventType

        self._profile.__exit__(*exc_info)
        events = []

        def walk(nodes):
            for node in nodes:
                if node.tag == _EventType.Allocation:
                    fields = node.extra_fields
                    events.append((node.start_time_ns, fields.ptr, fields.alloc_size))
                walk(node.children)

        walk(self._profile.profiler.kineto_results.experimental_event_tree())
        self._events = sorted(events)

    def peak_excluding(self, keep: list[torch.Tensor | None] = ()) -> int:
        """The most bytes live at once inside the block, not counting the storages in ``keep``.

        A storage in ``keep`` (typically the gradients the block returns) is excluded from
        its last allocation on, wherever it is live; an earlier allocation at the same
        address (a freed temporary) still counts.
        """
        keep_ptrs = {t.untyped_storage().data_ptr() for t in keep if t is not None}
        last_alloc = {}
        for index, (_, ptr, size) in enumerate(self._events):
            if size > 0 and ptr in keep_ptrs:
                last_alloc[ptr] = index
        excluded = set(last_alloc.values())
        live, peak = 0, 0
        excluded_ptrs: set[int] = set()
        for index, (_, ptr, size) in enumerate(self._events):
            if index in excluded:
                excluded_ptrs.add(ptr)
                continue
            if size < 0 and ptr in excluded_ptrs:
                excluded_ptrs.discard(ptr)
                continue
            live += size
            peak = max(peak, live)
        return peak

    @property
    def peak(self) -> int:
        """The most bytes live at once inside the block."""
        return self.peak_excluding([])


def forward_backward(fn, *inputs: torch.Tensor, grad_output: torch.Tensor | None = None, wrt=None, **kwargs):
    """``fn(*inputs, **kwargs)`` and its gradients, for a random (or the given) ``grad_output``.

    The one forward/backward helper of the suite. Every floating-point input (or the inputs
    at the indices in ``wrt``) becomes a fresh leaf that requires grad; the others (class
    targets, say) pass as they are. The random ``grad_output`` is drawn in fp64 and rounded
    to the output's dtype, so every dtype sees the same values.

    Returns:
        ``(output, *gradients, grad_output)``, one gradient per differentiated input, in order.

    Example:
        >>> y, grad_x, grad_output = forward_backward(fused_ops.sigmoid, x)
        >>> loss, grad_input, grad_target, _ = forward_backward(fused_ops.mse_loss, input, target)
    """
    indices = [i for i, t in enumerate(inputs) if t.is_floating_point()] if wrt is None else list(wrt)
    leaves = list(inputs)
    for i in indices:
        leaves[i] = inputs[i].detach().requires_grad_()
    output = fn(*leaves, **kwargs)
    if grad_output is None:
        grad_output = torch.randn(output.shape, dtype=torch.float64).to(output.dtype)
    grads = torch.autograd.grad(output, [leaves[i] for i in indices], grad_output)
    return (output, *grads, grad_output)


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_compiled_script(path: Path, source: str, timeout: int = 900) -> str:
    """Write ``source`` to ``path`` and run it in a fresh process with compiled kernels.

    The process has no ``TRITON_INTERPRET`` (so the stand-in CUDA driver of
    benchmarks/standin_driver.py, which ``source`` imports, makes kernels compile for a
    GPU); ``source`` must print ``ok`` last. Returns its standard output.
    """
    path.write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok"), result.stdout
    return result.stdout
