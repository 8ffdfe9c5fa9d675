"""The repository's shape: five places per op family, no instruments in the package, one test device.

- Every op family ``F`` (a Triton module ``kernels/F.py``) has its four other places:
  ``fused_ops/F.py`` (or ``fused_ops/optim/F.py``), a ``*_ref`` function per public op in
  ``fused_ops/reference.py``, ``tests/test_F.py`` and ``benchmarks/bench_F.py``.
- ``import fused_ops`` loads no instrument, and the wheel ships none.
- Tests allocate on the suite's device (conftest's ``device`` fixture): no test names the
  CPU for a tensor, and interpreter-only tests re-run in a CPU subprocess on a GPU machine.
"""

import ast
import inspect
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import conftest
import pytest
import torch

import fused_ops
from fused_ops import reference

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = sorted(path.stem for path in (ROOT / "kernels").glob("*.py") if not path.stem.startswith("_"))
# Modules of the package that only fused_ops' own developers would run: they live in
# benchmarks/ and examples/, never in what `pip install` ships.
INSTRUMENTS = (
    "report",
    "static_report",
    "aot",
    "demo",
    "traffic_report",
    "host_time",
    "standin_driver",
    "harness",
    "interpreter",
    "gpu_check",
)


def _functional_module(family: str) -> Path:
    for candidate in (ROOT / "fused_ops" / f"{family}.py", ROOT / "fused_ops" / "optim" / f"{family}.py"):
        if candidate.exists():
            return candidate
    raise AssertionError(f"family {family!r} has kernels/{family}.py but no fused_ops/{family}.py or fused_ops/optim/")


def _public_ops(family: str) -> list[str]:
    """The public functions of ``fused_ops`` (and ``fused_ops.optim``) defined in this family's module."""
    module_name = "fused_ops." + str(_functional_module(family).relative_to(ROOT / "fused_ops").with_suffix(""))
    module_name = module_name.replace(os.sep, ".")
    public = [getattr(fused_ops, name) for name in fused_ops.__all__]
    public += [getattr(fused_ops.optim, name) for name in fused_ops.optim.__all__]
    return sorted({obj.__name__ for obj in public if getattr(obj, "__module__", None) == module_name})


def test_there_are_op_families():
    assert {"activations", "softmax", "mse", "cross_entropy", "adam"} <= set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_its_five_places(family):
    assert (ROOT / "kernels" / f"{family}.py").exists()
    _functional_module(family)
    assert (ROOT / "tests" / f"test_{family}.py").exists(), f"tests/test_{family}.py"
    assert (ROOT / "benchmarks" / f"bench_{family}.py").exists(), f"benchmarks/bench_{family}.py"
    ops = _public_ops(family)
    assert ops, f"fused_ops/{family}.py exports no public op"
    references = [name for name, _ in inspect.getmembers(reference, inspect.isfunction) if name.endswith("_ref")]
    for op in ops:
        # An optimizer class (AdamW) is covered by its family's step reference (adam_step_ref).
        prefix = family if op[0].isupper() else op
        assert any(name.startswith(prefix) for name in references), f"fused_ops/reference.py has no {prefix}*_ref"


def test_import_loads_no_instrument():
    code = "import sys, fused_ops; print(' '.join(sorted(m for m in sys.modules if m.startswith('fused_ops'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "fused_ops" in loaded
    for module in loaded:
        assert module.rsplit(".", 1)[-1] not in INSTRUMENTS, module


def test_the_wheel_ships_no_instrument(tmp_path):
    # From a copy of the sources, so that a stale build/ folder in the work tree cannot
    # put old files into the wheel (or hide new ones).
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "gpu-check", "docs")
    shutil.copytree(ROOT, source, ignore=ignore)
    build = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*build, "-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    [wheel] = tmp_path.glob("fused_ops-*.whl")
    shipped = [name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")]
    assert "fused_ops/kernels/softmax.py" in shipped and "fused_ops/profiling.py" in shipped
    assert "fused_ops/csrc/autograd_node.cpp" in zipfile.ZipFile(wheel).namelist(), "the C++ node's source"
    for name in shipped:
        assert name.startswith("fused_ops/"), name
        assert Path(name).stem not in INSTRUMENTS, name


def test_the_suite_device_is_the_gpu_when_there_is_one(device):
    forced = os.environ.get("FUSED_OPS_TEST_DEVICE")
    expected = forced if forced else ("cuda" if torch.cuda.is_available() else "cpu")
    assert device.type == conftest.DEVICE.type == expected
    assert (os.environ.get("TRITON_INTERPRET") == "1") == (device.type == "cpu")


def test_tensors_made_in_a_test_live_on_the_suite_device(device):
    assert torch.randn(3).device.type == device.type
    assert torch.empty(2, 2).device.type == device.type


# Naming the CPU for a tensor in a test would keep it off the GPU on a GPU machine, where
# the kernels then fall back to the reference and the test proves nothing. Allowed only on
# a line that says why with "host:" (e.g. a GradScaler's device string for CPU autocast).
_CPU_TENSOR = re.compile(r"""device\s*=\s*["']cpu["']|\.cpu\(\)|torch\.device\(["']cpu["']\)""")


def test_no_test_allocates_on_the_cpu_by_name():
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name in ("conftest.py", "test_layout.py"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _CPU_TENSOR.search(line) and "host:" not in line:
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "tests must allocate on the device fixture's device:\n" + "\n".join(offenders)


def test_interpreter_only_tests_report_their_outcome_from_one_cpu_subprocess():
    passing = "tests/test_layout.py::test_tensors_made_in_a_test_live_on_the_suite_device"
    failing = "tests/test_layout.py::test_a_deliberate_failure_for_the_subprocess_check"
    run = conftest.InterpreterRun([passing, failing], str(ROOT))
    env_before = dict(os.environ)
    os.environ["FUSED_OPS_LAYOUT_DELIBERATE_FAILURE"] = "1"
    try:
        run.check(passing)
        with pytest.raises(pytest.fail.Exception, match="FAILED under the interpreter"):
            run.check(failing)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    assert run.outcomes == {passing: "PASSED", failing: "FAILED"}


def test_a_deliberate_failure_for_the_subprocess_check():
    # Fails only inside the subprocess of the test above, which sets this variable.
    assert os.environ.get("FUSED_OPS_LAYOUT_DELIBERATE_FAILURE") != "1"


# What only Triton's interpreter records: bytes per launch and grids (compiled launches
# are seen by name only). A test that reads them must say it needs the interpreter.
_INTERPRETER_ONLY_ATTRIBUTES = {"bytes_loaded", "bytes_stored", "bytes_moved", "grid"}


def _marked_interpreter_only(node: ast.AST) -> bool:
    return any("interpreter_only" in ast.unparse(decorator) for decorator in getattr(node, "decorator_list", []))


def test_tests_that_count_bytes_are_marked_interpreter_only():
    offenders = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        if any(
            isinstance(node, ast.Assign)
            and any(getattr(t, "id", None) == "pytestmark" for t in node.targets)
            and "interpreter_only" in ast.unparse(node.value)
            for node in tree.body
        ):
            continue
        functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}

        def reads_interpreter_records(node: ast.AST) -> bool:
            return any(
                isinstance(sub, ast.Attribute) and sub.attr in _INTERPRETER_ONLY_ATTRIBUTES for sub in ast.walk(node)
            )

        for name, node in functions.items():
            if not name.startswith("test_") or _marked_interpreter_only(node):
                continue
            # The test itself, or a module-level helper it calls by name.
            called = {
                sub.func.id for sub in ast.walk(node) if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name)
            }
            helpers = [functions[c] for c in called if c in functions]
            if reads_interpreter_records(node) or any(reads_interpreter_records(h) for h in helpers):
                offenders.append(f"{path.name}::{name}")
    assert not offenders, "mark these @pytest.mark.interpreter_only (they count bytes):\n" + "\n".join(offenders)
