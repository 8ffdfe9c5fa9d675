"""Every kernel compiles ahead of time for H100 (sm_90) and A100 (sm_80), as the tests launch it.

For each op family, ``tests/test_<family>.py`` defines ``aot_workload()``, which calls the
family's ops on every code path and dtype the tests use. Its launches are recorded under
the interpreter in one subprocess and compiled with ``triton.compile`` for both targets in
others where ``TRITON_INTERPRET`` is unset (see fused_ops.aot for why).
"""

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent
FAMILIES = sorted(
    path.stem.removeprefix("test_")
    for path in TESTS_DIR.glob("test_*.py")
    if re.search(r"^def aot_workload\(", path.read_text(), re.MULTILINE)
)
ARCHS = (90, 80)


def _compiler_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    return env


def _kernel_names(family: str) -> set[str]:
    # Importing the kernels module compiles nothing; it only lists its @triton.jit kernels.
    module = importlib.import_module(f"fused_ops.kernels.{family}")
    return {name for name in vars(module) if name.endswith("_kernel")}


@pytest.mark.parametrize("family", FAMILIES)
def test_kernels_compile_ahead_of_time(family, tmp_path):
    launches_path = tmp_path / "launches.json"
    subprocess.run(
        [sys.executable, str(TESTS_DIR / "record_launches.py"), str(TESTS_DIR / f"test_{family}.py"), launches_path],
        check=True,
        env=dict(os.environ, TRITON_INTERPRET="1"),
    )
    launches = json.loads(launches_path.read_text())
    missing = _kernel_names(family) - {launch["kernel"] for launch in launches}
    assert not missing, f"aot_workload() in test_{family}.py never launches {sorted(missing)}"

    compilers = {
        arch: subprocess.Popen(
            [sys.executable, "-m", "fused_ops.aot", str(launches_path), str(arch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_compiler_env(),
        )
        for arch in ARCHS
    }
    for arch, process in compilers.items():
        stdout, stderr = process.communicate()
        results = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        failed = [f"{r['kernel']}: {r['error']}" for r in results if not r["ok"]]
        assert not failed, f"sm_{arch}:\n" + "\n".join(failed)
        assert len(results) == len(launches), f"sm_{arch} compiler stopped early:\n{stderr[-4000:]}"


def test_every_kernel_family_has_an_aot_workload():
    kernel_modules = {
        path.stem for path in (Path(importlib.import_module("fused_ops.kernels").__file__).parent).glob("[!_]*.py")
    }
    assert kernel_modules <= set(FAMILIES), f"no aot_workload() for {sorted(kernel_modules - set(FAMILIES))}"
