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

Bytes can only be counted under the interpreter (``TRITON_INTERPRET=1``). Launches are
counted in both modes: compiled kernels are seen through Triton's
``knobs.runtime.launch_enter_hook``, which the launcher calls with the kernel's name, so a
test that asserts a kernel ran proves the same thing on a GPU as on a CPU. A compiled
launch records its name only (``compiled=True``, no grid, arguments or bytes). Each
interpreted launch also records its argument types, which the ahead-of-time tests use to
compile exactly the signatures that ran.

The same figures for eager PyTorch come from :class:`TorchTrace`, a ``TorchDispatchMode``
that models the bytes and kernels of every aten op (its docstring lists each
approximation), and :func:`minimum_bytes` gives the floor for any op: each input read
once, each output written once.

    >>> with TorchTrace() as eager:
    ...     torch.sigmoid(x)
    >>> eager.kernel_count(), eager.bytes_read, eager.bytes_written
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

_active_traces: list[KernelTrace] = []
_lock = threading.Lock()
_installed = False
# How many interpreted launches this thread is inside: the interpreter's own tensor
# copies (host staging of every argument) are not work of the traced program.
_launch_state = threading.local()


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
    # True for a compiled kernel seen through Triton's launch hook: name only, no traffic.
    compiled: bool = False

    @property
    def bytes_moved(self) -> int:
        return self.bytes_loaded + self.bytes_stored


class KernelTrace:
    """Context manager that records every Triton launch made inside it (interpreted or compiled)."""

    def __init__(self) -> None:
        self.launches: list[KernelLaunch] = []

    def __enter__(self) -> KernelTrace:
        _install_hooks()
        with _lock:
            if not _active_traces:
                _compiled_launch_hook.install()
            _active_traces.append(self)
        return self

    def __exit__(self, *exc_info) -> None:
        with _lock:
            _active_traces.remove(self)
            if not _active_traces:
                _compiled_launch_hook.uninstall()

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


class _CompiledLaunchHook:
    """Triton's launch-enter hook while a trace is active: records compiled launches by name.

    Triton 3.4+ keeps ``knobs.runtime.launch_enter_hook`` as a chain of hooks; this one is
    added to it only while some :class:`KernelTrace` is open, and removed after, so other
    hooks (a profiler such as proton) keep working. On an older Triton whose hook is a
    single callable, it replaces that callable for the trace and calls it too.
    """

    def __init__(self) -> None:
        self._replaced = None
        self._installed = False

    def install(self) -> None:
        knobs = _triton_knobs()
        if knobs is None or self._installed:
            return
        chain = knobs.runtime.launch_enter_hook
        if hasattr(chain, "add"):
            chain.add(self)
        else:
            self._replaced = chain
            knobs.runtime.launch_enter_hook = self._call_replaced_then_record
        self._installed = True

    def uninstall(self) -> None:
        knobs = _triton_knobs()
        if knobs is None or not self._installed:
            return
        chain = knobs.runtime.launch_enter_hook
        if hasattr(chain, "remove"):
            chain.remove(self)
        else:
            knobs.runtime.launch_enter_hook = self._replaced
        self._replaced, self._installed = None, False

    def _call_replaced_then_record(self, metadata) -> None:
        if self._replaced is not None:
            self._replaced(metadata)
        self(metadata)

    def __call__(self, metadata) -> None:
        name = metadata.get()["name"]
        for trace in _active_traces:
            trace.launches.append(KernelLaunch(kernel=name, module="", grid=(), compiled=True))


def _triton_knobs():
    """``triton.knobs``, or None without Triton (nothing can launch then)."""
    try:
        from triton import knobs
    except ImportError:
        return None
    return knobs


_compiled_launch_hook = _CompiledLaunchHook()


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
        _launch_state.depth = getattr(_launch_state, "depth", 0) + 1
        try:
            return original_run(self, *args, grid=grid, warmup=warmup, **kwargs)
        finally:
            _launch_state.depth -= 1

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


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes of the distinct elements a tensor addresses: a broadcast (stride-0) dim counts once.

    Args:
        tensor: any strided tensor (a non-strided layout counts ``numel() * element_size()``).

    Returns:
        The number of bytes a kernel must move to read (or write) the tensor once.

    Example:
        >>> tensor_bytes(torch.ones(4, 1).expand(4, 1000))  # 4 floats, not 4000
        16
    """
    if tensor.numel() == 0:
        return 0
    if tensor.layout != torch.strided:
        return tensor.numel() * tensor.element_size()
    distinct = math.prod(size for size, stride in zip(tensor.shape, tensor.stride(), strict=True) if stride != 0)
    return distinct * tensor.element_size()


def minimum_bytes(inputs: Iterable[torch.Tensor | None], outputs: Iterable[torch.Tensor | None]) -> int:
    """The least traffic any implementation of an op can have: each input read once, each output written once.

    Args:
        inputs: the tensors the op must read (``None`` entries are ignored).
        outputs: the tensors it must write.

    Returns:
        Bytes, counted with :func:`tensor_bytes`.

    Example:
        >>> x = torch.randn(1024)
        >>> minimum_bytes([x], [torch.sigmoid(x)])  # read 4 KiB, write 4 KiB
        8192
    """
    return sum(tensor_bytes(t) for t in (*inputs, *outputs) if t is not None)


@dataclasses.dataclass
class AtenOp:
    """One aten op as eager PyTorch runs it on a GPU: its kernels and traffic, modeled."""

    name: str
    kernels: int
    bytes_read: int
    bytes_written: int

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.bytes_written


# Allocation, aliasing and bookkeeping: no kernel and no traffic on a GPU. (Views are
# recognised from their schemas; these are the ones whose schemas do not say so.)
_NO_WORK = frozenset(
    {
        "empty",
        "empty_like",
        "empty_strided",
        "new_empty",
        "new_empty_strided",
        "set_",
        "resize_",
        "resize_as_",
        "is_same_size",
        "sym_size",
        "sym_stride",
        "sym_numel",
        "sym_storage_offset",
        "_unsafe_view",
        "_reshape_alias",
        "detach",
        "alias",
        "record_stream",
    }
)
# In-place ops that overwrite their target without reading it.
_WRITE_ONLY = frozenset(
    {"copy_", "fill_", "zero_", "normal_", "uniform_", "random_", "bernoulli_", "exponential_", "geometric_"}
)
# Tensors made from Python numbers, which torch code builds on the host.
_HOST_FACTORIES = frozenset({"lift_fresh", "lift_fresh_copy", "scalar_tensor"})
# CUDA's multi_tensor_apply (ATen/native/cuda/MultiTensorApply.cuh): one launch takes at
# most this many tensors per list depth and 320 chunks of 65536 elements.
_MULTI_TENSOR_MAX_TENSORS = {1: 110, 2: 64, 3: 48, 4: 36, 5: 30}
_MULTI_TENSOR_MAX_CHUNKS = 320
_MULTI_TENSOR_CHUNK = 65536
# torch.nn.functional reduction enum as aten receives it.
_REDUCTION_NONE = 0


def _tensors_in(value: Any) -> list[torch.Tensor]:
    return [leaf for leaf in tree_leaves(value) if isinstance(leaf, torch.Tensor)]


def _bytes_of(value: Any) -> int:
    return sum(tensor_bytes(t) for t in _tensors_in(value))


def _bind(schema, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Argument name -> value, from a call of an op with this schema."""
    bound = {}
    positional = [argument for argument in schema.arguments if not argument.kwarg_only]
    # Trailing arguments with defaults may be left out of a call.
    for argument, value in zip(positional, args, strict=False):
        bound[argument.name] = value
    bound.update(kwargs)
    return bound


def _multi_tensor_launches(depth: int, sizes: list[int]) -> int:
    sizes = [n for n in sizes if n > 0]
    if not sizes:
        return 0
    max_tensors = _MULTI_TENSOR_MAX_TENSORS.get(depth, min(_MULTI_TENSOR_MAX_TENSORS.values()))
    chunks = sum(math.ceil(n / _MULTI_TENSOR_CHUNK) for n in sizes)
    return max(math.ceil(len(sizes) / max_tensors), math.ceil(chunks / _MULTI_TENSOR_MAX_CHUNKS))


def _model_aten_op(func, args: tuple, kwargs: dict, out: Any) -> AtenOp:
    """Kernels and bytes of one aten op that does work (see TorchTrace for the rules)."""
    schema = func._schema
    packet = func.overloadpacket.__name__
    bound = _bind(schema, args, kwargs)
    read = written = 0
    tensor_lists: list[list[torch.Tensor]] = []
    for argument in schema.arguments:
        value = bound.get(argument.name)
        tensors = _tensors_in(value)
        if not tensors:
            continue
        if isinstance(value, (list, tuple)) and argument.name != "state_steps":
            tensor_lists.append(tensors)
        mutated = argument.alias_info is not None and argument.alias_info.is_write
        # The fused optimizers write their gradients back only when unscaling them.
        if packet.startswith("_fused_") and argument.name == "grads" and bound.get("grad_scale") is None:
            mutated = False
        if not mutated or not (argument.kwarg_only or packet in _WRITE_ONLY):
            read += sum(tensor_bytes(t) for t in tensors)
        if mutated:
            written += sum(tensor_bytes(t) for t in tensors)
    returned = out if isinstance(out, tuple) else (out,)
    # An op returning nothing gives None, which pairs with no declared return.
    for result, value in zip(schema.returns, returned, strict=False):
        if result.alias_info is None:
            written += _bytes_of(value)
            if isinstance(value, (list, tuple)) and _tensors_in(value):
                tensor_lists.append(_tensors_in(value))
    kernels = 1

    if packet.startswith(("_foreach_", "_fused_")):
        sizes = [t.numel() for t in tensor_lists[0]] if tensor_lists else []
        kernels = _multi_tensor_launches(len(tensor_lists), sizes)
    elif packet == "mse_loss" and bound.get("reduction", 1) != _REDUCTION_NONE:
        # One kernel writes the squared errors to a temporary, a second one reduces it.
        temporary = tensor_bytes(torch.broadcast_tensors(bound["self"], bound["target"])[0])
        read, written, kernels = read + temporary, written + temporary, 2
    elif packet == "nll_loss_forward":
        # A gather: one element of each row of log-probabilities (and of the weights).
        log_probs, target, weight = bound["self"], bound["target"], bound.get("weight")
        rows = target.numel()
        read = tensor_bytes(target) + rows * log_probs.element_size()
        read += rows * weight.element_size() if weight is not None else 0
    elif packet == "nll_loss_backward":
        # A zero fill of the whole gradient, then a scatter of one element per row.
        target, weight = bound["target"], bound.get("weight")
        rows = target.numel()
        read = tensor_bytes(bound["grad_output"]) + tensor_bytes(target) + tensor_bytes(bound["total_weight"])
        read += rows * weight.element_size() if weight is not None else 0
        written += rows * returned[0].element_size()
        kernels = 2
    elif packet == "_local_scalar_dense":
        # .item() of a device tensor: a one-element copy to the host that waits for the GPU.
        written = 0
    return AtenOp(str(func), kernels, read, written)


class TorchTrace(TorchDispatchMode):
    """Records the kernels and bytes that eager PyTorch's aten ops would move on a GPU.

    Use it like :class:`KernelTrace`; it counts the aten ops run inside it, on any device.
    On the CPU the same aten ops reach the dispatcher as on a GPU, so the figures are the
    GPU's, except where torch chooses a device-specific op before dispatch (attention
    backends, for example; none of fused_ops' report cases do):

        >>> with TorchTrace() as trace:
        ...     torch.nn.functional.cross_entropy(logits, target).backward()
        >>> trace.kernel_count(), trace.bytes_moved

    Each op is modeled on CUDA's implementation. The rules, and every approximation:

    - An op that does work is one kernel that reads each input tensor once and writes each
      output once. An in-place op reads and writes its target; ``out=`` arguments and the
      targets of ``copy_``, ``fill_``, ``zero_`` and the random fills are written only.
    - A tensor's bytes are its distinct elements times the element size
      (:func:`tensor_bytes`): a broadcast input counts once. Nothing is cached: a tensor
      read by two kernels counts twice. A single kernel's internal re-reads are not
      counted (softmax over rows too long for shared memory re-reads them, mostly from L2).
    - Views, metadata and allocations (``view``, ``detach``, ``empty``, ``set_``, ...)
      and ops without tensors (``promote_types``) count nothing; zero-filling
      allocations (``zeros``) are kernels.
    - Op-specific models, where one op is not one simple kernel:
      ``mse_loss`` with a reduction is two kernels (squared errors into a temporary, then
      a reduction of it); ``nll_loss_forward`` gathers one element per row;
      ``nll_loss_backward`` is two kernels (zero fill of the gradient, then a scatter);
      ``_foreach_*`` and ``_fused_*`` ops launch as CUDA's ``multi_tensor_apply`` does on
      its fast path (at most 110/64/48/36/30 tensors for 1-5 lists, and 320 chunks of
      65536 elements, per launch), with the ``state_steps`` list not counted as a list.
    - Host work costs nothing: an op whose tensors are all host tensors (``host_tensors``,
      such as the step counters torch's Adam keeps on the CPU, plus tensors made from
      Python numbers by ``lift_fresh``/``scalar_tensor``, and every result of such an op)
      is not counted. ``.item()`` of a device tensor counts as one launch reading one
      element (a copy to the host that also waits for the GPU).
    - Ops of other namespaces (``fused_ops::*`` custom ops) are not counted themselves:
      the aten ops they run are, and their Triton launches are :class:`KernelTrace`'s.
      The interpreter's staging copies of launch arguments are excluded.
    - The CUDA caching allocator, CPU-side dispatch and the autograd engine's bookkeeping
      are not modeled; ``profiler`` record-function markers count nothing.
    """

    def __init__(self, host_tensors: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.ops: list[AtenOp] = []
        self._host_storages = {_storage_key(t) for t in host_tensors}

    def __enter__(self) -> TorchTrace:
        _install_hooks()  # tracks interpreted launches, whose staging copies are excluded
        return super().__enter__()

    def clear(self) -> None:
        """Forget the ops recorded so far."""
        self.ops.clear()

    def kernel_count(self) -> int:
        """Kernels that the recorded ops launch on a GPU."""
        return sum(op.kernels for op in self.ops)

    @property
    def bytes_read(self) -> int:
        return sum(op.bytes_read for op in self.ops)

    @property
    def bytes_written(self) -> int:
        return sum(op.bytes_written for op in self.ops)

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.bytes_written

    def by_op(self) -> dict[str, AtenOp]:
        """The recorded ops summed by name, in order of first use (for reports and debugging)."""
        totals: dict[str, AtenOp] = {}
        for op in self.ops:
            total = totals.setdefault(op.name, AtenOp(op.name, 0, 0, 0))
            total.kernels += op.kernels
            total.bytes_read += op.bytes_read
            total.bytes_written += op.bytes_written
        return totals

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(_launch_state, "depth", 0) or func.namespace == "profiler":
            return func(*args, **kwargs)
        if func.namespace not in ("aten", "prims"):
            # Run the custom op's implementation below this mode's dispatch key, with the
            # mode active again, so the aten ops inside it are seen (and the op is not).
            keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
            for tensor in _tensors_in((args, kwargs)):
                keys = keys | torch._C._dispatch_keys(tensor)
            below_python = torch._C._dispatch_keyset_full_after(torch._C.DispatchKey.Python)
            with self:
                return func.redispatch(keys & below_python, *args, **kwargs)
        out = func(*args, **kwargs)
        packet = func.overloadpacket.__name__
        touched = _tensors_in((args, kwargs, out))
        if packet in _HOST_FACTORIES or (touched and all(_storage_key(t) in self._host_storages for t in touched)):
            self._host_storages.update(_storage_key(t) for t in _tensors_in(out))
            return out
        # No tensor at all (promote_types, ...) is host bookkeeping.
        if not touched or func.is_view or packet in _NO_WORK:
            return out
        self.ops.append(_model_aten_op(func, args, kwargs, out))
        return out


def _storage_key(tensor: torch.Tensor) -> int:
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. some subclasses)
        return id(tensor)
