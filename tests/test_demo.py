"""The demo (examples/demo.py): eager torch and fused_ops train the same MLP to the same losses."""

import dataclasses
import math

import demo
import pytest
import torch
import torch.nn.functional as F

import fused_ops
from fused_ops.profiling import KernelTrace

# Small enough for the interpreter (2 batches of 64 per epoch), large enough to train.
TINY = demo.DemoConfig(epochs=2, batch_size=64, hidden=32, train_images=128)


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
    assert result.parts.patch is fused_ops.patch
    assert result.parts.loss is F.cross_entropy  # rerouted to fused_ops.cross_entropy by patch()
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


def test_demo_command_line_sets_the_config():
    argv = ["--epochs", "3", "--batch-size", "32", "--hidden", "16", "--seed", "7", "--no-progress"]
    config = demo.DemoConfig(epochs=3, batch_size=32, hidden=16, seed=7)
    assert demo.parse_arguments(argv) == (config, demo.TOLERANCE, False)
