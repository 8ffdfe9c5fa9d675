"""Test setup: one device for every kernel test, seeded tests, a launch counter, NaN-filled allocations.

The suite runs unchanged on two kinds of machine:

- with a GPU, on CUDA tensors through compiled Triton kernels;
- without one, on CPU tensors through the same kernels in Triton's interpreter.

:data:`DEVICE` is that choice, made once. The autouse ``device`` fixture makes it torch's
default device for every test, so ``torch.randn(...)`` in a test allocates where the
kernels run without naming a device. Tests that only make sense under the interpreter
(byte counting, AOT compilation) carry the ``interpreter_only`` marker: here they run as
any test; on a GPU machine each runs in a subprocess under the interpreter on the CPU,
rather than being skipped. ``FUSED_OPS_TEST_DEVICE=cpu`` forces the CPU choice (that
subprocess uses it).
"""

import os
import subprocess
import sys

import torch

os.environ.setdefault("FUSED_OPS_TEST_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
# Triton reads TRITON_INTERPRET when a kernel is decorated, so this must run before
# fused_ops (and its kernels) is imported by any test module.
if os.environ["FUSED_OPS_TEST_DEVICE"] == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"
# Triton 3.9 warns on every compile until this is set; 1 keeps today's default (FMA fusion).
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import pytest
from torch._subclasses.fake_tensor import FakeTensor

from fused_ops.profiling import KernelTrace

DEVICE = torch.device(os.environ["FUSED_OPS_TEST_DEVICE"])

INTERPRETER_ONLY = "interpreter_only"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        f"{INTERPRETER_ONLY}: needs Triton's interpreter (byte counting, AOT compilation); on a GPU machine "
        "the test runs in a subprocess on the CPU under the interpreter",
    )


class InterpreterRun:
    """The interpreter-only tests of a GPU session, run together in one CPU subprocess.

    One process for all of them, at the first one's turn, because each pytest start costs
    seconds (torch, Triton); every test then reports its own outcome from that run. They
    share one xdist group, so a parallel session runs them all on one worker.
    """

    def __init__(self, nodeids: list[str], rootdir: str) -> None:
        self.nodeids, self.rootdir = nodeids, rootdir
        self.outcomes: dict[str, str] | None = None
        self.output = ""

    def run(self) -> None:
        env = dict(os.environ, TRITON_INTERPRET="1", FUSED_OPS_TEST_DEVICE="cpu")
        command = [sys.executable, "-m", "pytest", *self.nodeids, "-p", "no:xdist", "-q", "-rA"]
        result = subprocess.run(command, cwd=self.rootdir, env=env, capture_output=True, text=True, timeout=3600)
        self.output = result.stdout[-8000:] + result.stderr[-2000:]
        # -rA's summary: one "PASSED <nodeid>" / "FAILED <nodeid> - reason" line per test.
        self.outcomes = {}
        for line in result.stdout.splitlines():
            outcome, _, rest = line.partition(" ")
            if outcome in ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS"):
                self.outcomes[rest.split(" - ")[0]] = outcome

    def check(self, nodeid: str) -> None:
        if self.outcomes is None:
            self.run()
        outcome = self.outcomes.get(nodeid)
        if outcome not in ("PASSED", "XFAIL"):
            pytest.fail(f"{nodeid}: {outcome or 'no result'} under the interpreter (CPU subprocess):\n{self.output}")


def pytest_collection_modifyitems(config, items):
    """On a GPU machine, interpreter-only tests run in a CPU subprocess under the interpreter."""
    if DEVICE.type == "cpu":
        return
    marked = [item for item in items if item.get_closest_marker(INTERPRETER_ONLY) is not None]
    interpreter_run = InterpreterRun([item.nodeid for item in marked], str(config.rootpath))
    for item in marked:
        item.add_marker(pytest.mark.xdist_group(INTERPRETER_ONLY))
        item.runtest = lambda nodeid=item.nodeid: interpreter_run.check(nodeid)


@pytest.fixture(autouse=True)
def device():
    """The device every kernel test allocates on: CUDA with a GPU, else CPU (interpreter).

    It is also torch's default device for the duration of the test.
    """
    if DEVICE.type == "cpu":
        # CPU is already the default; setting it would only slow every factory call.
        yield DEVICE
        return
    with torch.device(DEVICE):
        yield DEVICE


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def kernel_launches():
    """A :class:`KernelTrace` active for the whole test: proves which Triton kernels ran."""
    with KernelTrace() as trace:
        yield trace


_real_empty = torch.empty
_real_empty_like = torch.empty_like


def _nan_filled(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.is_floating_point() and tensor.device.type != "meta" and not isinstance(tensor, FakeTensor):
        with torch.no_grad():
            tensor.fill_(float("nan"))
    return tensor


@pytest.fixture(autouse=True)
def _nan_filled_allocations(monkeypatch):
    """Fill every float ``torch.empty``/``empty_like`` with NaN (fla's trick).

    An element that a kernel forgot to write then fails a comparison loudly instead of
    passing by luck with whatever the allocator returned.
    """
    monkeypatch.setattr(torch, "empty", lambda *a, **k: _nan_filled(_real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: _nan_filled(_real_empty_like(*a, **k)))
