"""Every kernel compiles ahead of time for H100 (sm_90) and A100 (sm_80), as the tests launch it.

For each op family, ``tests/test_<family>.py`` defines ``aot_workload()``, which calls the
family's ops on every code path and dtype the tests use. Its launches are recorded under
the interpreter in one subprocess and compiled with ``triton.compile`` for both targets in
others where ``TRITON_INTERPRET`` is unset (see benchmarks/aot.py for why).
"""

import importlib
import json
import os
import re
import subprocess
import textwrap
from pathlib import Path

import aot
import interpreter
import pytest

TESTS_DIR = Path(__file__).parent
FAMILIES = sorted(
    path.stem.removeprefix("test_")
    for path in TESTS_DIR.glob("test_*.py")
    if re.search(r"^def aot_workload\(", path.read_text(), re.MULTILINE)
)
ARCHS = (90, 80)


def _record_launches(workload_module: Path, out_path: Path) -> list[dict]:
    """Run ``workload_module.aot_workload()`` under the interpreter; return its distinct launches."""
    interpreter.run_python(
        [str(TESTS_DIR / "record_launches.py"), str(workload_module), str(out_path)], interpret=True, check=True
    )
    return json.loads(out_path.read_text())


def _compile_for_all_archs(launches_path: Path, extra_pythonpath: str = "") -> dict[int, list[dict]]:
    """Compile the recorded launches for every arch in parallel processes; results per arch."""
    compilers = {
        arch: interpreter.start_python(
            [aot.__file__, str(launches_path), str(arch)],
            interpret=False,
            extra_pythonpath=[extra_pythonpath] if extra_pythonpath else [],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for arch in ARCHS
    }
    results = {}
    for arch, process in compilers.items():
        stdout, stderr = process.communicate(timeout=1200)
        results[arch] = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        results[arch].append({"stderr": stderr[-4000:]})
    return results


def _failures(results: list[dict]) -> list[str]:
    return [f"{r['kernel']}: {r['error']}" for r in results if "ok" in r and not r["ok"]]


def _kernel_names(family: str) -> set[str]:
    # Importing the kernels module compiles nothing; it only lists its @triton.jit kernels.
    module = importlib.import_module(f"fused_ops.kernels.{family}")
    return {name for name in vars(module) if name.endswith("_kernel")}


@pytest.mark.parametrize("family", FAMILIES)
def test_kernels_compile_ahead_of_time(family, tmp_path):
    launches = _record_launches(TESTS_DIR / f"test_{family}.py", tmp_path / "launches.json")
    missing = _kernel_names(family) - {launch["kernel"] for launch in launches}
    assert not missing, f"aot_workload() in test_{family}.py never launches {sorted(missing)}"

    for arch, results in _compile_for_all_archs(tmp_path / "launches.json").items():
        assert not _failures(results), f"sm_{arch}:\n" + "\n".join(_failures(results))
        compiled = [r for r in results if r.get("ok")]
        assert len(compiled) == len(launches), f"sm_{arch} compiler stopped early:\n{results[-1]['stderr']}"
        # Spilled registers live in local memory: every launch of every family, not only
        # the benchmark cases of tests/test_static_report.py, must have none.
        spilling = [f"{r['kernel']} {r['key']}: {r['local_bytes']} B" for r in compiled if r["local_bytes"]]
        assert not spilling, f"sm_{arch} local memory (spills):\n" + "\n".join(spilling)


def test_every_kernel_family_has_an_aot_workload():
    kernels_dir = Path(importlib.import_module("fused_ops.kernels").__file__).parent
    kernel_modules = {path.stem for path in kernels_dir.glob("[!_]*.py")}
    assert kernel_modules <= set(FAMILIES), f"no aot_workload() for {sorted(kernel_modules - set(FAMILIES))}"


def test_aot_rejects_what_only_the_interpreter_accepts(tmp_path):
    # Both kernels run under the interpreter; neither compiles for a GPU. If this test
    # fails, the AOT tests above would be passing kernels that cannot run on hardware.
    (tmp_path / "interpreter_only.py").write_text(
        textwrap.dedent(
            """
            import torch
            import triton
            import triton.language as tl

            @triton.jit
            def loop_with_break_kernel(x_ptr, n, BLOCK: tl.constexpr):
                for i in range(0, 4):
                    if i == 2:
                        break
                    offsets = i * BLOCK + tl.arange(0, BLOCK)
                    tl.store(x_ptr + offsets, 1.0, mask=offsets < n)

            @triton.jit
            def mistyped_option_kernel(x_ptr, n, BLOCK: tl.constexpr):
                offsets = tl.arange(0, BLOCK)
                tl.store(x_ptr + offsets, 1.0, mask=offsets < n)

            def aot_workload():
                x = torch.zeros(100)
                loop_with_break_kernel[(1,)](x, 100, BLOCK=32)
                mistyped_option_kernel[(1,)](x, 100, BLOCK=32, num_warp=4)  # num_warps
                assert x[:64].eq(1).all()
            """
        )
    )
    _record_launches(tmp_path / "interpreter_only.py", tmp_path / "launches.json")
    results = _compile_for_all_archs(tmp_path / "launches.json", extra_pythonpath=str(tmp_path))[90]
    errors = dict(line.split(": ", 1) for line in _failures(results))
    assert "unsupported AST node type: Break" in errors["loop_with_break_kernel"]
    assert "num_warp was specified but unrecognised" in errors["mistyped_option_kernel"]


def test_children_run_with_the_interpreter_on_or_off(monkeypatch):
    # A compiler child that inherited TRITON_INTERPRET=1 would interpret instead of compiling.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert "TRITON_INTERPRET" not in interpreter.environment(interpret=False)
    monkeypatch.delenv("TRITON_INTERPRET")
    assert interpreter.environment(interpret=True)["TRITON_INTERPRET"] == "1"
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = interpreter.environment(False, extra_pythonpath=["/first"], overrides={"TRITON_ALWAYS_COMPILE": "1"})
    assert env["PYTHONPATH"].split(os.pathsep) == ["/first", "/elsewhere"]
    assert env["TRITON_ALWAYS_COMPILE"] == "1"
