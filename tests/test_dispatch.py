"""The dispatch point: interpreter under test, eager reference without Triton, logged once."""

import logging
import os
import subprocess
import sys

import torch

import fused_ops
from fused_ops import _dispatch
from fused_ops._dispatch import Backend, choose_backend, reference_backend


def test_the_suite_device_runs_the_kernels(device):
    # CPU: the interpreter (TRITON_INTERPRET=1 set by conftest); a GPU: compiled Triton.
    expected = Backend.INTERPRETER if device.type == "cpu" else Backend.TRITON
    assert (os.environ.get("TRITON_INTERPRET") == "1") == (device.type == "cpu")
    assert choose_backend("sigmoid", torch.ones(1)) is expected


def test_reference_backend_runs_no_kernel(kernel_launches):
    x = torch.randn(10)
    with reference_backend():
        y = fused_ops.sigmoid(x)
    torch.testing.assert_close(y, torch.sigmoid(x))
    assert kernel_launches.launch_count() == 0


def test_fallback_is_logged_once_per_op_and_reason(monkeypatch, caplog):
    monkeypatch.setattr(_dispatch, "TRITON_INTERPRETED", False)
    monkeypatch.setattr(_dispatch, "_already_logged", set())
    with caplog.at_level(logging.WARNING, logger="fused_ops"):
        for _ in range(3):
            assert choose_backend("sigmoid", torch.ones(1)) is Backend.REFERENCE
        choose_backend("softmax", torch.ones(1))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "fused_ops.sigmoid runs on the eager PyTorch reference" in messages[0]
    assert "TRITON_INTERPRET=1" in messages[0]


def test_without_triton_the_library_imports_and_runs_on_the_reference():
    # A fresh interpreter in which `import triton` fails, as on a platform without wheels.
    script = """
import logging, sys
sys.modules["triton"] = None
logging.basicConfig(level=logging.WARNING, format="%(message)s")
import torch, fused_ops
x = torch.randn(5, requires_grad=True)
y = fused_ops.sigmoid(x)
y.sum().backward()
torch.testing.assert_close(y, torch.sigmoid(x))
torch.testing.assert_close(x.grad, torch.sigmoid(x) * (1 - torch.sigmoid(x)))
assert not fused_ops._dispatch.TRITON_AVAILABLE
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
    assert "Triton is not installed" in result.stderr
