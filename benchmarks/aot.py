"""Ahead-of-time compilation of recorded kernel launches for real GPU targets, without a GPU.

Triton's interpreter accepts code that its compiler rejects (``break`` in a loop, a
mistyped launch option, too much shared memory), so a kernel that passes under the
interpreter is only proven once it also compiles for the hardware. This module takes
launches recorded by :class:`fused_ops.profiling.KernelTrace` and compiles each one for a
``GPUTarget`` with the same specialization that a GPU launch would use: the same
signature, constexprs, integer/alignment attributes and launch options.

Compile in a process where ``TRITON_INTERPRET`` is unset: once an interpreted kernel has
run, the interpreter leaves ``triton.language`` patched for the rest of the process.

    python benchmarks/aot.py launches.json 90      # prints one JSON line per compiled kernel

``tests/test_aot.py`` runs it on the launches of every test module's ``aot_workload()``
(recorded by ``tests/record_launches.py``), and ``benchmarks/static_report.py`` on the
launches of the benchmark cases.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch


def launch_record(launch) -> dict[str, Any]:
    """One launch seen by :class:`fused_ops.profiling.KernelTrace`, as JSON that :func:`compile_launch` takes."""
    return {"module": launch.module, "kernel": launch.kernel, "args": launch.args, "kwargs": launch.kwargs}


def launch_key(launch: dict[str, Any]) -> str:
    """A string that is equal for two launches exactly when they compile to the same kernel."""
    return json.dumps([launch["module"], launch["kernel"], launch["args"], launch["kwargs"]], sort_keys=True)


def _rebuild_argument(description: Any) -> Any:
    if description is None:
        return None
    if "tensor" in description:
        # A placeholder with the recorded dtype and 16-byte alignment: specialization
        # reads only those two properties of a tensor argument.
        # KernelTrace records a dtype by its name in torch ("bfloat16", "int64", ...).
        dtype = getattr(torch, description["tensor"])
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"{description['tensor']!r} is not a torch dtype")
        storage = torch.zeros(64, dtype=dtype)
        return storage if description["aligned16"] else storage[1:]
    for kind in ("bool", "int", "float"):
        if kind in description:
            return description[kind]
    raise ValueError(f"cannot rebuild launch argument {description!r}")


def compile_launch(launch: dict[str, Any], arch: int, warp_size: int = 32):
    """Compile one recorded launch for ``GPUTarget("cuda", arch, warp_size)``.

    Returns Triton's ``CompiledKernel``, whose ``asm`` holds ``ptx`` and ``cubin`` and whose
    ``metadata`` holds ``shared`` (bytes of shared memory) and ``num_warps``.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel = getattr(importlib.import_module(launch["module"]), launch["kernel"])
    if not hasattr(kernel, "params"):
        raise RuntimeError(f"{launch['kernel']} is interpreted here: unset TRITON_INTERPRET to compile it")
    target = GPUTarget("cuda", arch, warp_size)
    backend = make_backend(target)
    args = [_rebuild_argument(a) for a in launch["args"]]
    kwargs = {k: _rebuild_argument(v) for k, v in launch["kwargs"].items()}
    # The same two steps as JITFunction.run, with a backend for the target instead of
    # the (absent) active device.
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound_args, specialization, options)
    source = ASTSource(kernel, signature, constexprs, attrs)
    return triton.compile(source, target=target, options=options.__dict__)


_RESOURCE_LINE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


def resource_usage(compiled) -> tuple[int, int, int, int]:
    """(registers, stack bytes, shared bytes, local bytes) per thread of a compiled kernel's cubin.

    Read with ``cuobjdump --dump-resource-usage`` (shipped with Triton). Spilled registers
    live in local memory, so ``local bytes > 0`` is how a spill shows in the binary.
    """
    from triton import knobs

    with tempfile.TemporaryDirectory() as scratch:
        cubin = Path(scratch, "kernel.cubin")
        cubin.write_bytes(compiled.asm["cubin"])
        command = [knobs.nvidia.cuobjdump.path, "--dump-resource-usage", str(cubin)]
        usage = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = _RESOURCE_LINE.search(usage)
    if found is None:
        raise RuntimeError(f"no resource usage in cuobjdump output:\n{usage}")
    registers, stack, shared, local = map(int, found.groups())
    return registers, stack, shared, local


def main(argv: list[str]) -> int:
    """Compile every distinct launch in a JSON file for one arch; one JSON result per line."""
    path, arch = argv[0], int(argv[1])
    with open(path) as f:
        launches = json.load(f)
    failures = 0
    for launch in launches:
        result = {"kernel": launch["kernel"], "arch": arch, "key": launch_key(launch)}
        try:
            compiled = compile_launch(launch, arch)
            local_bytes = resource_usage(compiled)[3]
            result.update(
                ok=True, shared=compiled.metadata.shared, num_warps=compiled.metadata.num_warps, local_bytes=local_bytes
            )
        except Exception as error:  # report every failing kernel, not just the first
            failures += 1
            result.update(ok=False, error=f"{type(error).__name__}: {error}"[-4000:])
        print(json.dumps(result), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
