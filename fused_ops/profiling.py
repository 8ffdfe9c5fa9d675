"""Traffic accounting for Triton kernels run by Triton's interpreter.

Memory-bound kernels on a GPU take about (bytes moved) / (bandwidth), so the bytes each
kernel loads and stores, and the number of launches, are the performance figures that can
be measured exactly on any machine. :class:`KernelTrace` records them:

    >>> with KernelTrace() as trace:
    ...     fused_ops.sigmoid(x)
    >>> trace.launch_count(), trace.bytes_loaded, trace.bytes_stored

What is counted, and how:

- A launch is one call of an interpreted ``@triton.jit`` kernel over its grid.
- Bytes loaded (stored) are, for every ``tl.load`` (``tl.store``) that a program executes,
  the number of masked-in elements times the element size. Atomics count as one load
  and one store of each masked-in element. Masked-out lanes move nothing, as on a GPU.
- Every access counts, as if nothing were cached: a value loaded twice counts twice.
  On a GPU a second read of a small, recently read block may hit in L2, so these
  figures are an upper bound on DRAM traffic, never flattering.

Only the interpreter can be instrumented this way (``TRITON_INTERPRET=1``); with compiled
kernels a trace records nothing. Each launch also records its argument types, which the
ahead-of-time tests use to compile exactly the signatures that ran.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import torch

_active_traces: list[KernelTrace] = []
_lock = threading.Lock()
_installed = False


@dataclasses.dataclass
class KernelLaunch:
    """One kernel launch: its name, grid, traffic, and a description of its arguments."""

    kernel: str
    module: str
    grid: tuple[int, ...]
    bytes_loaded: int = 0
    bytes_stored: int = 0
    args: list[Any] = dataclasses.field(default_factory=list)
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def bytes_moved(self) -> int:
        return self.bytes_loaded + self.bytes_stored


class KernelTrace:
    """Context manager that records every interpreted Triton launch made inside it."""

    def __init__(self) -> None:
        self.launches: list[KernelLaunch] = []

    def __enter__(self) -> KernelTrace:
        _install_hooks()
        with _lock:
            _active_traces.append(self)
        return self

    def __exit__(self, *exc_info) -> None:
        with _lock:
            _active_traces.remove(self)

    def clear(self) -> None:
        """Forget the launches recorded so far."""
        self.launches.clear()

    def launch_count(self, kernel: str | None = None) -> int:
        """Launches recorded, of every kernel or of the kernel with this name."""
        return sum(1 for launch in self.launches if kernel is None or launch.kernel == kernel)

    def kernel_names(self) -> set[str]:
        """Names of the kernels launched at least once."""
        return {launch.kernel for launch in self.launches}

    @property
    def bytes_loaded(self) -> int:
        return sum(launch.bytes_loaded for launch in self.launches)

    @property
    def bytes_stored(self) -> int:
        return sum(launch.bytes_stored for launch in self.launches)

    @property
    def bytes_moved(self) -> int:
        return self.bytes_loaded + self.bytes_stored


def describe_argument(value: Any) -> Any:
    """A JSON-able description of a launch argument, enough to rebuild its signature."""
    if isinstance(value, torch.Tensor):
        return {"tensor": str(value.dtype).removeprefix("torch."), "aligned16": value.data_ptr() % 16 == 0}
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    if isinstance(value, float):
        return {"float": value}
    if value is None:
        return None
    return {"repr": repr(value)}


def _current_launches() -> list[KernelLaunch]:
    # A launch being executed is the last one appended to every active trace.
    return [trace.launches[-1] for trace in _active_traces if trace.launches]


def _install_hooks() -> None:
    """Wrap the interpreter's launch, load, store and atomic entry points (once)."""
    global _installed
    if _installed:
        return
    try:
        import numpy as np
        from triton.runtime import interpreter
    except ImportError:  # no Triton: nothing can launch, so nothing to record
        _installed = True
        return

    builder_cls = interpreter.InterpreterBuilder
    original_run = interpreter.InterpretedFunction.run
    original_load = builder_cls.create_masked_load
    original_store = builder_cls.create_masked_store
    original_atomic_rmw = builder_cls.create_atomic_rmw
    original_atomic_cas = builder_cls.create_atomic_cas

    def element_count(ptrs, mask) -> int:
        if mask is None:
            return int(np.size(ptrs.data))
        return int(np.broadcast_to(mask.data, np.shape(ptrs.data)).sum())

    def element_size(ptrs) -> int:
        return ptrs.get_element_ty().primitive_bitwidth // 8

    def add_traffic(loaded: int, stored: int) -> None:
        for launch in _current_launches():
            launch.bytes_loaded += loaded
            launch.bytes_stored += stored

    def run(self, *args, grid, warmup, **kwargs):
        if _active_traces and not warmup:
            grid_tuple = tuple(grid) if isinstance(grid, (tuple, list)) else (grid,)
            for trace in _active_traces:
                trace.launches.append(
                    KernelLaunch(
                        kernel=self.fn.__name__,
                        module=self.fn.__module__,
                        grid=grid_tuple,
                        args=[describe_argument(a) for a in args],
                        kwargs={k: describe_argument(v) for k, v in kwargs.items()},
                    )
                )
        return original_run(self, *args, grid=grid, warmup=warmup, **kwargs)

    def create_masked_load(self, ptrs, mask, other, cache_policy, is_volatile):
        if _active_traces:
            add_traffic(element_count(ptrs, mask) * element_size(ptrs), 0)
        return original_load(self, ptrs, mask, other, cache_policy, is_volatile)

    def create_masked_store(self, ptrs, value, mask, cache_policy):
        if _active_traces:
            add_traffic(0, element_count(ptrs, mask) * element_size(ptrs))
        return original_store(self, ptrs, value, mask, cache_policy)

    def create_atomic_rmw(self, rmw_op, ptr, val, mask, sem, scope):
        if _active_traces:
            moved = element_count(ptr, mask) * element_size(ptr)
            add_traffic(moved, moved)
        return original_atomic_rmw(self, rmw_op, ptr, val, mask, sem, scope)

    def create_atomic_cas(self, ptr, cmp, val, sem, scope):
        if _active_traces:
            moved = element_count(ptr, None) * element_size(ptr)
            add_traffic(moved, moved)
        return original_atomic_cas(self, ptr, cmp, val, sem, scope)

    interpreter.InterpretedFunction.run = run
    builder_cls.create_masked_load = create_masked_load
    builder_cls.create_masked_store = create_masked_store
    builder_cls.create_atomic_rmw = create_atomic_rmw
    builder_cls.create_atomic_cas = create_atomic_cas
    _installed = True
