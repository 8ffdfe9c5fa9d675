"""A stand-in CUDA driver for Triton: kernels compile for a real GPU target but launch as no-ops.

It measures the host path of fused_ops' GPU backend on a machine without a GPU: every
piece of Python and dispatcher work a real GPU call does (autograd, torch.library,
validation, allocation, Triton's ``JITFunction.run`` with its binder and cache lookup,
``CompiledKernel.launch_metadata``), except Triton's C launcher and ``cuLaunchKernel``
(about 5 µs a launch on a real GPU), which become a Python no-op.

    from standin_driver import standin_cuda_driver
    from fused_ops.profiling import KernelTrace

    with standin_cuda_driver():  # also forces fused_ops onto compiled Triton
        y = fused_ops.sigmoid(torch.randn(4, 8))  # CPU tensor; compiled for sm_90, not run
        with KernelTrace() as trace:  # counts compiled launches through Triton's hook
            fused_ops.softmax(torch.randn(4, 8), dim=-1)
        assert [launch.kernel for launch in trace.launches] == ["softmax_forward_kernel"]

What the stand-in does:

- ``triton.runtime.driver.set_active`` installs :class:`StandinCudaDriver`, whose target
  is ``GPUTarget("cuda", 90, 32)`` (H100). Each kernel is compiled for it by Triton's own
  compiler (ptxas ships in the triton wheel) the first time it is launched with a
  signature, exactly as on a GPU; Triton's on-disk cache makes later runs fast.
- Its ``utils.load_binary`` hands out fake module and function handles, and its
  ``launcher_cls`` is :class:`StandinLauncher`, whose call runs Triton's
  ``launch_enter_hook`` and ``launch_exit_hook`` with the launch metadata, as the real C
  launcher does, and launches nothing. Outputs therefore hold whatever was allocated.
- The stand-in reports a device index (:data:`STANDIN_DEVICE`) that no real GPU has, so
  the kernels it compiles live in their own entry of each ``JITFunction.device_caches``
  and are never mistaken for real ones.
- fused_ops is forced onto its compiled-Triton backend
  (``fused_ops._dispatch.force_backend(Backend.TRITON)``), so CPU tensors take the GPU path.
- ``torch._assert_async`` asserts on a constant true flag instead of its argument. On a
  GPU it is a device-side assertion, checked later; on the CPU it raises at once, and the
  flags it would check (cross_entropy's "every target is in bounds") come from kernels
  that did not run. The call still goes through torch's dispatcher, so its host cost stays.
  While torch.compile traces (a FakeTensor condition), the condition itself is recorded.

It depends on Triton internals, so it is pinned: :func:`check_triton` refuses any Triton
version outside :data:`SUPPORTED_TRITON_VERSIONS`, or one missing an attribute it patches,
with an error naming the version. It needs a process in which ``TRITON_INTERPRET`` was
unset when the kernels were decorated (Triton decides interpreted-or-compiled then), so
run it in its own process, never inside the interpreted test suite.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
from collections.abc import Iterator
from typing import Any

# Triton versions whose internals were read for this module (3.9.0: runtime/driver.py
# DriverConfig, compiler/compiler.py CompiledKernel._init_handles and launch_metadata,
# runtime/jit.py JITFunction.run, backends/nvidia/driver.py CudaLauncher.__call__).
SUPPORTED_TRITON_VERSIONS = ("3.9",)
# A device index that no real GPU has: kernels compiled for the stand-in are cached under it.
STANDIN_DEVICE = 1 << 20
# The device properties Triton reads (shared memory when it loads a kernel), per target:
# H100 SXM for sm_90, A100 SXM for sm_80 (other targets get H100's).
_H100_PROPERTIES = {
    "max_shared_mem": 232448,
    "max_num_regs": 65536,
    "multiprocessor_count": 132,
    "warpSize": 32,
    "sm_clock_rate": 1980000,
    "mem_clock_rate": 2619000,
    "mem_bus_width": 5120,
}
_DEVICE_PROPERTIES = {
    90: _H100_PROPERTIES,
    80: {
        **_H100_PROPERTIES,
        "max_shared_mem": 166912,
        "multiprocessor_count": 108,
        "sm_clock_rate": 1410000,
        "mem_clock_rate": 1593000,
    },
}
_MAX_THREADS_PER_BLOCK = 1024


class UnsupportedTritonError(RuntimeError):
    """The installed Triton is not one whose internals the stand-in driver knows."""


def _required_attributes() -> dict[str, Any]:
    """Every Triton internal this module reads or replaces, by dotted name (None if absent)."""
    import triton
    import triton.backends.compiler as backends_compiler
    import triton.backends.driver as backends_driver
    import triton.compiler.compiler as compiler
    import triton.runtime.jit as jit
    from triton import knobs

    # `from triton.runtime import driver` is the DriverConfig object, not the module.
    driver_module = importlib.import_module("triton.runtime.driver")

    def get(obj: Any, name: str) -> Any:
        return getattr(obj, name, None)

    def assigned(cls: type, name: str) -> bool:
        # An instance attribute: set in __init__, so look for it in its code.
        return name in cls.__init__.__code__.co_names

    return {
        "triton.runtime.driver.driver.set_active": get(driver_module.driver, "set_active"),
        "triton.runtime.driver.driver._active": hasattr(driver_module.driver, "_active"),
        "triton.backends.driver.DriverBase": get(backends_driver, "DriverBase"),
        "triton.compiler.compiler.CompiledKernel._init_handles": get(compiler.CompiledKernel, "_init_handles"),
        "triton.compiler.compiler.CompiledKernel.launch_metadata": get(compiler.CompiledKernel, "launch_metadata"),
        "triton.compiler.compiler.CompiledKernel._module_pid": assigned(compiler.CompiledKernel, "_module_pid"),
        "triton.runtime.jit.JITFunction.run": get(jit.JITFunction, "run"),
        "triton.runtime.jit.JITFunction.device_caches": assigned(jit.JITFunction, "device_caches"),
        "triton.runtime.jit._triton_jit_function_registry": get(jit, "_triton_jit_function_registry"),
        "triton.knobs.runtime.launch_enter_hook": get(knobs.runtime, "launch_enter_hook"),
        "triton.knobs.runtime.launch_exit_hook": get(knobs.runtime, "launch_exit_hook"),
        "triton.knobs.runtime.interpret": hasattr(knobs.runtime, "interpret"),
        "triton.backends.compiler.GPUTarget": get(backends_compiler, "GPUTarget"),
        "triton.__version__": get(triton, "__version__"),
    }


def check_triton(version: str | None = None) -> str:
    """Raise :class:`UnsupportedTritonError` unless the stand-in knows this Triton.

    Args:
        version: the version to check; the installed ``triton.__version__`` by default.

    Returns:
        The version checked.
    """
    import triton

    version = triton.__version__ if version is None else version
    if not any(version == known or version.startswith(known + ".") for known in SUPPORTED_TRITON_VERSIONS):
        raise UnsupportedTritonError(
            f"the stand-in CUDA driver (benchmarks/standin_driver.py) patches Triton internals and "
            f"knows Triton {', '.join(SUPPORTED_TRITON_VERSIONS)}, not Triton {version}: read its "
            "internals again (driver, CompiledKernel, JITFunction.run) and extend SUPPORTED_TRITON_VERSIONS"
        )
    missing = [name for name, value in _required_attributes().items() if value is None or value is False]
    if missing:
        raise UnsupportedTritonError(f"Triton {version} lacks what the stand-in CUDA driver patches: {missing}")
    return version


class _StandinUtils:
    """The part of Triton's ``CudaUtils`` that compiling and loading a kernel touches."""

    def __init__(self, arch: int) -> None:
        self._handles = itertools.count(1)
        self._capability = divmod(arch, 10)
        self._properties = _DEVICE_PROPERTIES.get(arch, _H100_PROPERTIES)

    def load_binary(self, name, kernel, shared, device):
        """Return (module, function, n_regs, n_spills, n_max_threads) without loading anything."""
        handle = next(self._handles)
        return handle, handle, 0, 0, _MAX_THREADS_PER_BLOCK

    def unload_module(self, module) -> None:
        pass

    def get_device_properties(self, device) -> dict[str, Any]:
        return dict(self._properties)

    def get_device_capability(self, device) -> tuple[int, int]:
        return self._capability

    def is_stream_capturing(self, stream) -> bool:
        return False


class StandinLauncher:
    """Triton's launcher for one compiled kernel, made a no-op that still runs the launch hooks.

    The real one (``CudaLauncher``, then ``launch`` in the nvidia backend's driver.c)
    calls ``launch_enter_hook(launch_metadata)``, extracts the arguments, calls
    ``cuLaunchKernelEx``, then calls ``launch_exit_hook(launch_metadata)``; this keeps the
    hooks and drops the rest.
    """

    def __init__(self, src, metadata) -> None:
        self.name = getattr(metadata, "name", None)

    def __call__(
        self,
        grid_x,
        grid_y,
        grid_z,
        stream,
        function,
        kernel_metadata,
        launch_metadata,
        launch_enter_hook,
        launch_exit_hook,
        *args,
    ) -> None:
        if launch_enter_hook is not None:
            launch_enter_hook(launch_metadata)
        if launch_exit_hook is not None:
            launch_exit_hook(launch_metadata)


def _driver_base():
    from triton.backends.driver import DriverBase

    return DriverBase


class StandinCudaDriver(_driver_base()):
    """A Triton driver for a GPU that is not there: compiles for ``GPUTarget("cuda", arch, 32)``.

    Args:
        arch: the compute capability to compile for (90 for H100, 80 for A100).
    """

    def __init__(self, arch: int = 90) -> None:
        super().__init__()
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)
        self.utils = _StandinUtils(arch)
        self.launcher_cls = StandinLauncher

    @classmethod
    def is_active(cls) -> bool:
        # Never picked by Triton's own driver discovery; only installed by set_active.
        return False

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return STANDIN_DEVICE

    def set_current_device(self, device) -> None:
        pass

    def get_current_stream(self, device) -> int:
        return 0

    def get_active_torch_device(self):
        import torch

        return torch.device("cpu")

    def get_device_interface(self):
        import torch

        return torch.cpu

    def map_python_to_cpp_type(self, ty: str) -> str:
        from triton.backends.nvidia.driver import ty_to_cpp

        return ty_to_cpp(ty)

    def get_benchmarker(self):
        raise NotImplementedError("the stand-in driver runs no kernel, so there is nothing to benchmark on it")


def _standin_kernels() -> Iterator[Any]:
    """Every CompiledKernel compiled for the stand-in so far, in any JITFunction."""
    from triton.runtime.jit import _triton_jit_function_registry

    for function in list(_triton_jit_function_registry.values()):
        caches = getattr(function, "device_caches", None)
        if caches and STANDIN_DEVICE in caches:
            yield from list(caches[STANDIN_DEVICE][0].values())


@contextlib.contextmanager
def standin_cuda_driver(arch: int = 90, force_fused_ops: bool = True) -> Iterator[StandinCudaDriver]:
    """Install :class:`StandinCudaDriver` as Triton's active driver inside this block.

    Args:
        arch: the compute capability the kernels compile for (default 90, H100).
        force_fused_ops: also force fused_ops onto its compiled-Triton backend, so that
            its ops launch kernels for CPU tensors.

    Yields:
        The installed driver.

    Raises:
        UnsupportedTritonError: on a Triton version the stand-in does not know.
        RuntimeError: in a process where Triton interprets kernels (``TRITON_INTERPRET=1``).
    """
    check_triton()
    from triton import knobs

    driver_module = importlib.import_module("triton.runtime.driver")
    if knobs.runtime.interpret or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError(
            "the stand-in CUDA driver needs compiled Triton kernels: run it in a process where "
            "TRITON_INTERPRET is unset (Triton reads it when a kernel is decorated)"
        )
    import torch

    config = driver_module.driver
    previous = config._active
    driver = StandinCudaDriver(arch)
    config.set_active(driver)
    real_assert_async = torch._assert_async
    true_flag = torch.ones((), dtype=torch.bool)

    from torch._subclasses.fake_tensor import FakeTensor
    from torch._subclasses.functional_tensor import FunctionalTensor

    def assert_async_on_unwritten_flag(condition, *args, **kwargs):
        if isinstance(condition, (FakeTensor, FunctionalTensor)):
            # torch.compile is tracing: record the assertion itself (a real tensor there fails).
            return real_assert_async(condition, *args, **kwargs)
        # The condition was computed by no-op kernels; assert on a true flag instead.
        return real_assert_async(true_flag, *args, **kwargs)

    torch._assert_async = assert_async_on_unwritten_flag
    try:
        if force_fused_ops:
            from fused_ops._dispatch import Backend, force_backend

            with force_backend(Backend.TRITON):
                yield driver
        else:
            yield driver
    finally:
        torch._assert_async = real_assert_async
        # The kernels stay cached under STANDIN_DEVICE for the next block, but no later
        # driver must "unload" their fake modules when they are garbage collected
        # (CompiledKernel.__del__ does that only for a module loaded by this process).
        for kernel in _standin_kernels():
            if getattr(kernel, "module", None) is not None:
                kernel._module_pid = None
        # Restore exactly what was active (None means "not created yet": keep it lazy,
        # since creating the default driver raises on a machine without a GPU).
        config._active = previous
