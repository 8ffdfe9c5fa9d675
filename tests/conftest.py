"""Test setup: one device for every kernel test, seeded tests, a launch counter, NaN-filled allocations.

The suite runs unchanged on two kinds of machine:

- with a GPU, on CUDA tensors through compiled Triton kernels;
- without one, on CPU tensors through the same kernels in Triton's interpreter.

:data:`DEVICE` is that choice, made once. The autouse ``device`` fixture makes it torch's
default device for every test, so ``torch.randn(...)`` in a test allocates where the
kernels run without naming a device. Tests that only make sense under the interpreter
(byte counting, AOT compilation) say so with :func:`helpers.interpreter_only`.
"""

import os

import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# Triton reads TRITON_INTERPRET when a kernel is decorated, so this must run before
# fused_ops (and its kernels) is imported by any test module.
if DEVICE.type == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"
# Triton 3.9 warns on every compile until this is set; 1 keeps today's default (FMA fusion).
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import pytest
from torch._subclasses.fake_tensor import FakeTensor

from fused_ops.profiling import KernelTrace


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
