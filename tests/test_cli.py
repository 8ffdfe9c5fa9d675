"""The command line (`fused-ops demo | bench | check`) and the demo's training comparison."""

import dataclasses
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import fused_ops
from fused_ops import cli, demo
from fused_ops.profiling import KernelTrace

# Small enough for the interpreter (2 batches of 64 per epoch), large enough to train.
TINY = demo.DemoConfig(epochs=2, batch_size=64, hidden=32, train_images=128)


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
    assert "sigmoid        FAIL differs from torch" in out
    assert "FAILED: sigmoid" in out


def test_check_reports_an_op_that_raises(monkeypatch, capsys):
    def broken(x):
        raise RuntimeError("boom")

    monkeypatch.setattr(fused_ops, "sigmoid", broken)
    assert cli.main(["check"]) == 1
    assert "FAIL raised RuntimeError: boom" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_demo():
    """The demo on TINY, run once for this module, with the launches its fused run made."""
    torch.manual_seed(0)
    with KernelTrace() as trace:
        result = demo.run(TINY)
    return result, trace


def test_demo_runs_agree_and_the_fused_run_launches_kernels(tiny_demo):
    result, trace = tiny_demo
    assert result.train_images == 128 and result.test_images == 360
    assert len(result.eager.epoch_losses) == len(result.fused.epoch_losses) == TINY.epochs
    assert all(math.isfinite(loss) for loss in result.eager.epoch_losses + result.fused.epoch_losses)
    # It learns: the second epoch's loss is lower than the first's.
    assert result.eager.epoch_losses[1] < result.eager.epoch_losses[0]
    assert result.max_difference <= demo.TOLERANCE
    assert result.fused.test_accuracy == pytest.approx(result.eager.test_accuracy, abs=1 / result.test_images)
    # Only the fused run launches kernels: the demo's own count is the whole trace.
    assert result.kernel_launches == {name: trace.launch_count(name) for name in trace.kernel_names()}
    # One forward launch per fused activation per step, plus one for the test set.
    steps = TINY.epochs * 2
    assert trace.launch_count("sigmoid_forward_kernel") == steps + 1
    assert trace.launch_count("sigmoid_backward_kernel") == steps


def test_demo_fused_run_uses_the_fused_modules_loss_and_optimizer(tiny_demo):
    result, trace = tiny_demo
    assert result.fused_modules == ["fused_ops.nn.Tanh", "fused_ops.nn.ReLU", "fused_ops.nn.Sigmoid"]
    assert result.parts.optimizer is fused_ops.optim.AdamW
    assert result.parts.loss is fused_ops.cross_entropy
    families = {name.split("_")[0] for name in trace.kernel_names()}
    assert {"tanh", "relu", "sigmoid", "adam", "cross"} <= families, families


def test_demo_report_shows_both_runs_side_by_side(tiny_demo):
    result, _ = tiny_demo
    lines = demo.report(result)
    table = lines[lines.index("epoch   eager loss   fused loss   |difference|") + 1 :][: TINY.epochs]
    for epoch, line in enumerate(table):
        number, eager, fused, difference = line.split()
        assert int(number) == epoch + 1
        assert float(eager) == pytest.approx(result.eager.epoch_losses[epoch], abs=1e-6)
        assert float(fused) == pytest.approx(result.fused.epoch_losses[epoch], abs=1e-6)
        assert float(difference) == pytest.approx(result.differences[epoch], rel=1e-2)
    assert any(line.startswith("largest difference over all epochs:") for line in lines)
    assert any(line.startswith("test accuracy: eager ") for line in lines)
    assert any(line.startswith("Triton kernel launches in the fused run:") for line in lines)
    assert lines[-1].startswith("OK:")
    failing = dataclasses.replace(result, fused=dataclasses.replace(result.fused, epoch_losses=[math.nan] * 2))
    assert failing.max_difference == math.inf
    assert demo.report(failing)[-1].startswith("FAILED:")


def test_demo_exits_1_when_the_runs_diverge(monkeypatch, capsys):
    real_parts = demo.fused_parts()

    def wrong_parts():
        # A loss off by 1%: its gradients are too, so training drifts.
        return dataclasses.replace(real_parts, loss=lambda logits, target: real_parts.loss(logits, target) * 1.01)

    monkeypatch.setattr(demo, "fused_parts", wrong_parts)
    config = dataclasses.replace(TINY, epochs=1, hidden=8)
    assert demo.main(config, progress=False) == 1
    assert "FAILED: the fused run drifted" in capsys.readouterr().out


def test_demo_command_passes_its_options(monkeypatch):
    calls = []
    monkeypatch.setattr(demo, "main", lambda config, tolerance, progress: calls.append((config, tolerance, progress)))
    cli.main(["demo", "--epochs", "3", "--batch-size", "32", "--hidden", "16", "--seed", "7", "--no-progress"])
    config = demo.DemoConfig(epochs=3, batch_size=32, hidden=16, seed=7)
    assert calls == [(config, demo.TOLERANCE, False)]


def test_check_probes_every_public_op_and_optimizer():
    probed = {probe.name for probe in cli.PROBES}
    public_ops = {name for name in fused_ops.__all__ if callable(getattr(fused_ops, name))}
    public_optimizers = {f"optim.{name}" for name in fused_ops.optim.__all__}
    assert public_ops | public_optimizers <= probed


def test_bench_calls_the_report_with_its_arguments(monkeypatch):
    calls = []
    report = types.ModuleType("fused_ops.report")
    report.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fused_ops.report", report)
    assert cli.main(["bench", "--sizes", "small"]) == 0
    assert calls == [["--sizes", "small"]]


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
