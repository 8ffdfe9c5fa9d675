"""The command line, `fused-ops check`, and its re-run under the interpreter without a GPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fused_ops
from fused_ops import cli


class _Exec(Exception):
    """Raised by the fake os.execve: a real exec never returns either."""


def test_check_runs_every_op_through_its_kernels(capsys, kernel_launches):
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert f"torch     {torch.__version__}" in out
    assert "TRITON_INTERPRET=1" in out
    assert "backend for cpu tensors: interpreter" in out
    for name in (probe.name for probe in cli.PROBES):
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert " ok " in line and " launches: " in line, line
    assert "sigmoid_forward_kernel" in out and "sigmoid_backward_kernel" in out
    assert kernel_launches.launch_count("sigmoid_forward_kernel") == 1
    assert kernel_launches.launch_count("sigmoid_backward_kernel") == 1


def test_check_fails_when_an_op_disagrees_with_torch(monkeypatch, capsys):
    real_sigmoid = fused_ops.sigmoid
    monkeypatch.setattr(fused_ops, "sigmoid", lambda x: real_sigmoid(x) * 1.01)
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    assert f"{'sigmoid':<22} FAIL differs from torch" in out
    assert "FAILED: sigmoid" in out


def test_check_reports_an_op_that_raises(monkeypatch, capsys):
    def broken(x):
        raise RuntimeError("boom")

    monkeypatch.setattr(fused_ops, "sigmoid", broken)
    assert cli.main(["check"]) == 1
    assert "FAIL raised RuntimeError: boom" in capsys.readouterr().out


def test_check_probes_every_public_op_and_optimizer():
    probed = {probe.name for probe in cli.PROBES}
    # patch() routes torch calls to the ops; it is not one itself.
    public_ops = {name for name in fused_ops.__all__ if callable(getattr(fused_ops, name))} - {"patch"}
    public_optimizers = {f"optim.{name}" for name in fused_ops.optim.__all__}
    assert public_ops | public_optimizers <= probed


def test_main_reexecs_under_the_interpreter_without_a_gpu(monkeypatch, capsys):
    calls = []

    def fake_execve(path, argv, env):
        calls.append((path, argv, env))
        raise _Exec

    monkeypatch.setattr(os, "execve", fake_execve)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(_Exec):
        cli.main(["check"])
    [(path, argv, env)] = calls
    assert path == sys.executable
    assert argv == [sys.executable, "-m", "fused_ops", "check"]
    assert env["TRITON_INTERPRET"] == "1"
    assert capsys.readouterr().err.strip() == cli.REEXEC_MESSAGE


def test_no_reexec_when_interpreted_or_on_a_gpu(monkeypatch):
    assert not cli.needs_interpreter_reexec({"TRITON_INTERPRET": "1"})
    assert cli.needs_interpreter_reexec({})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not cli.needs_interpreter_reexec({})


def test_usage_errors_exit_before_any_reexec(monkeypatch):
    monkeypatch.setattr(os, "execve", lambda *args: pytest.fail("re-exec on a usage error"))
    monkeypatch.delenv("TRITON_INTERPRET")
    for argv in (["no-such-command"], ["check", "--no-such-option"], []):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2


@pytest.mark.parametrize(
    "command",
    [[str(Path(sys.executable).parent / "fused-ops")], [sys.executable, "-m", "fused_ops"]],
    ids=["console-script", "python-m"],
)
def test_the_commands_rerun_themselves_under_the_interpreter(command):
    # A fresh process with TRITON_INTERPRET unset, as a user on a CPU-only machine runs it.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([*command, "check"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert cli.REEXEC_MESSAGE in result.stderr
    assert "TRITON_INTERPRET=1" in result.stdout
    assert "backend for cpu tensors: interpreter" in result.stdout
    assert "sigmoid_forward_kernel" in result.stdout
