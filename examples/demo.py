"""The demo: train one MLP twice, on eager torch and on fused_ops, and compare.

The data set is scikit-learn's digits (1797 8x8 images of handwritten digits, 10 classes),
which ships inside scikit-learn, so nothing is downloaded. Both runs start from the same
weights and see the same batches in the same order; the only difference is that the
fused run computes its activations, its loss and its optimizer step with fused_ops. The
demo prints both runs' loss per epoch side by side and fails (exit status 1) when they
drift apart by more than :data:`TOLERANCE`.

On a machine without a GPU the fused run executes the real Triton kernels in Triton's
interpreter, which costs several milliseconds of CPU per program launched; the default
configuration is sized to finish in about a minute on two CPU cores that way (about
1200 launches of one to eight programs).

    python examples/demo.py [--epochs N] [--batch-size N] [--hidden N] [--seed N] [--no-progress]

(``make demo`` runs it.) Without a GPU it re-runs itself under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import fused_ops
import fused_ops.optim
from fused_ops import _dispatch, cli
from fused_ops.profiling import KernelTrace

# Largest allowed |eager loss - fused loss| of any epoch. The two runs differ only by
# fp32 rounding inside the ops (a few ulps per step), which AdamW carries over from step
# to step: the default run measures below 1e-7. A wrong gradient anywhere moves the loss
# by far more than this.
TOLERANCE = 1e-5
DESCRIPTION = "Train an MLP on scikit-learn's digits with eager torch and with fused_ops, and compare."


@dataclasses.dataclass(frozen=True)
class FusedParts:
    """What the fused run uses, with the printable name of the loss and the optimizer."""

    patch: Callable[[torch.nn.Module], Any]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    loss_name: str
    optimizer: type[torch.optim.Optimizer]
    optimizer_name: str


def fused_parts() -> FusedParts:
    """The fused run's parts: the same model code under fused_ops.patch(), and fused AdamW.

    The training loop is the eager run's, calling ``F.cross_entropy``: inside
    ``fused_ops.patch(model)`` the model's torch.nn activations are swapped for fused
    modules and that call is rerouted to ``fused_ops.cross_entropy``.
    """
    return FusedParts(
        patch=fused_ops.patch,
        loss=F.cross_entropy,
        loss_name="F.cross_entropy, run by fused_ops.cross_entropy under patch()",
        optimizer=fused_ops.optim.AdamW,
        optimizer_name="fused_ops.optim.AdamW",
    )


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Model size and training schedule of the demo.

    Args:
        epochs: passes over the training images.
        batch_size: images per optimizer step.
        hidden: width of each of the three hidden layers.
        seed: seeds the train/test split, the initial weights and the batch order.
        train_images: use only the first this many training images (None: all 1437).
        lr: AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
    """

    epochs: int = 10
    batch_size: int = 128
    hidden: int = 64
    seed: int = 0
    train_images: int | None = None
    lr: float = 1e-2
    weight_decay: float = 1e-2


@dataclasses.dataclass
class RunResult:
    """One training run: mean training loss of each epoch and accuracy on the held-out images."""

    epoch_losses: list[float]
    test_accuracy: float


@dataclasses.dataclass
class DemoResult:
    """Both runs, what the fused one used, and the Triton launches it made (None when not traced)."""

    config: DemoConfig
    train_images: int
    test_images: int
    eager: RunResult
    fused: RunResult
    fused_modules: list[str]
    parts: FusedParts
    backend: _dispatch.Backend
    kernel_launches: dict[str, int] | None

    @property
    def differences(self) -> list[float]:
        """|eager loss - fused loss| of each epoch."""
        return [abs(e - f) for e, f in zip(self.eager.epoch_losses, self.fused.epoch_losses, strict=True)]

    @property
    def max_difference(self) -> float:
        """The largest epoch difference; infinite when either run's loss became NaN."""
        return max((math.inf if math.isnan(d) else d for d in self.differences), default=0.0)


@dataclasses.dataclass(frozen=True)
class Digits:
    """scikit-learn's digits as float32 pixels in [0, 1] and int64 labels, split into train and test."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits(seed: int, train_images: int | None = None, device: torch.device | str = "cpu") -> Digits:
    """A stratified 80/20 split of scikit-learn's digits, fixed by ``seed``.

    Args:
        seed: the split's random state.
        train_images: keep only the first this many training images (None: all 1437).
        device: where the tensors go.

    Returns:
        :class:`Digits`: ``x_*`` of shape ``(N, 64)``, float32 in [0, 1]; ``y_*`` of shape ``(N,)``, int64.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise SystemExit("fused-ops demo needs scikit-learn for its data set: pip install 'fused_ops[test]'") from error
    images, labels = sklearn_load_digits(return_X_y=True)
    # Pixels are integers 0..16.
    x = torch.from_numpy(images).float() / 16
    y = torch.from_numpy(labels).long()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    if train_images is not None:
        x_train, y_train = x_train[:train_images], y_train[:train_images]
    return Digits(x_train.to(device), y_train.to(device), x_test.to(device), y_test.to(device))


def build_model(hidden: int, seed: int) -> torch.nn.Sequential:
    """An eager torch MLP, 64 -> hidden (tanh) -> hidden (relu) -> hidden (sigmoid) -> 10 logits."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.Sigmoid(),
        torch.nn.Linear(hidden, 10),
    )


def _describe_activation(eager_module: torch.nn.Module, fused_module: torch.nn.Module) -> str:
    name = type(eager_module).__name__
    if type(fused_module).__module__.startswith("fused_ops"):
        return f"fused_ops.nn.{type(fused_module).__name__}"
    return f"torch.nn.{name} (not fused in this version)"


def train(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer_cls: type[torch.optim.Optimizer],
    data: Digits,
    batch_orders: list[torch.Tensor],
    config: DemoConfig,
    progress_label: str | None = None,
) -> RunResult:
    """Train ``model`` with AdamW, one epoch per entry of ``batch_orders``.

    Args:
        model: maps ``(B, 64)`` images to ``(B, 10)`` logits.
        loss_fn: ``loss_fn(logits, labels)``, a scalar mean over the batch.
        optimizer_cls: an AdamW class, built with ``config.lr`` and ``config.weight_decay``.
        data: the images and labels.
        batch_orders: one permutation of the training images per epoch, cut into batches.
        config: batch size and optimizer settings.
        progress_label: the progress bar's label; None shows no bar.

    Returns:
        The mean training loss of each epoch and the accuracy on ``data``'s test images.
    """
    from tqdm.auto import tqdm

    optimizer = optimizer_cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(data.x_train) / config.batch_size)
    epoch_losses = []
    with tqdm(
        total=len(batch_orders) * steps_per_epoch, desc=progress_label, unit="step", disable=progress_label is None
    ) as bar:
        for order in batch_orders:
            total = 0.0
            for batch in order.split(config.batch_size):
                loss = loss_fn(model(data.x_train[batch]), data.y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                # Weight each batch by its size, so the epoch loss is the mean over images.
                total += loss.item() * len(batch)
                bar.update()
            epoch_losses.append(total / len(order))
    with torch.no_grad():
        predictions = model(data.x_test).argmax(dim=1)
    return RunResult(epoch_losses, (predictions == data.y_test).double().mean().item())


def run(config: DemoConfig = DemoConfig(), progress: bool = False) -> DemoResult:
    """Train the demo MLP on eager torch and on fused_ops from the same start.

    Args:
        config: model size and schedule; ``DemoConfig(epochs=1, train_images=128)`` runs in seconds.
        progress: show a tqdm progress bar per run on stderr.

    Returns:
        :class:`DemoResult` with both runs' epoch losses and test accuracies.

    Example:
        >>> result = run(DemoConfig(epochs=1, train_images=128))  # doctest: +SKIP
        >>> result.max_difference < TOLERANCE  # doctest: +SKIP
        True
    """
    # On a GPU both runs train there, so the fused run uses the compiled kernels.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_digits(config.seed, config.train_images, device)
    generator = torch.Generator().manual_seed(config.seed)
    batch_orders = [torch.randperm(len(data.x_train), generator=generator) for _ in range(config.epochs)]
    parts = fused_parts()
    eager_model = build_model(config.hidden, config.seed).to(device)
    fused_model = copy.deepcopy(eager_model)  # the same weights

    eager = train(
        eager_model, F.cross_entropy, torch.optim.AdamW, data, batch_orders, config, "eager torch" if progress else None
    )
    backend = _dispatch.choose_backend("demo", data.x_train)
    # One line makes the unmodified model and training loop use the kernels.
    with KernelTrace() as trace, parts.patch(fused_model):
        fused_modules = [
            _describe_activation(eager_module, fused_module)
            for eager_module, fused_module in zip(eager_model, fused_model, strict=True)
            if not isinstance(eager_module, torch.nn.Linear)
        ]
        fused = train(
            fused_model, parts.loss, parts.optimizer, data, batch_orders, config, "fused_ops  " if progress else None
        )
    launches = None
    if backend is _dispatch.Backend.INTERPRETER:
        launches = {name: trace.launch_count(name) for name in sorted(trace.kernel_names())}
    return DemoResult(
        config, len(data.x_train), len(data.x_test), eager, fused, fused_modules, parts, backend, launches
    )


def report(result: DemoResult, tolerance: float = TOLERANCE) -> list[str]:
    """The demo's printed report, one string per line."""
    config = result.config
    hidden = config.hidden
    lines = [
        f"fused_ops demo: a 64-{hidden}-{hidden}-{hidden}-10 MLP (tanh, relu, sigmoid) on scikit-learn's digits, "
        f"{result.train_images} training and {result.test_images} test images.",
        f"Both runs start from the same weights and see the same batches "
        f"(seed {config.seed}, batch {config.batch_size}, {config.epochs} epoch{'s' if config.epochs != 1 else ''}, "
        f"AdamW lr {config.lr}).",
        "  eager run: torch.nn.Tanh, torch.nn.ReLU, torch.nn.Sigmoid; torch.nn.functional.cross_entropy; "
        "torch.optim.AdamW",
        "  fused run:",
        f"    activations  {', '.join(result.fused_modules)} (swapped by fused_ops.patch)",
        f"    loss         {result.parts.loss_name}",
        f"    optimizer    {result.parts.optimizer_name}",
        f"    backend      {result.backend.value} ({cli.BACKEND_DESCRIPTIONS[result.backend]})",
        "",
        "epoch   eager loss   fused loss   |difference|",
    ]
    for epoch, (eager, fused, difference) in enumerate(
        zip(result.eager.epoch_losses, result.fused.epoch_losses, result.differences, strict=True), start=1
    ):
        lines.append(f"{epoch:5d}   {eager:10.6f}   {fused:10.6f}   {difference:12.2e}")
    lines += [
        "",
        f"largest difference over all epochs: {result.max_difference:.2e} (tolerance {tolerance:.0e})",
        f"test accuracy: eager {result.eager.test_accuracy:.2%}, fused {result.fused.test_accuracy:.2%}",
    ]
    if result.kernel_launches is not None:
        launches = ", ".join(f"{name} {count}" for name, count in result.kernel_launches.items())
        lines.append(f"Triton kernel launches in the fused run: {sum(result.kernel_launches.values())} ({launches})")
    if result.max_difference <= tolerance:
        lines.append("OK: the fused run matches eager torch within the tolerance.")
    else:
        lines.append("FAILED: the fused run drifted from eager torch beyond the tolerance.")
    return lines


def main(config: DemoConfig = DemoConfig(), tolerance: float = TOLERANCE, progress: bool = True) -> int:
    """Run the demo and print its report.

    Args:
        config: model size and schedule.
        tolerance: largest allowed ``|eager loss - fused loss|`` of any epoch.
        progress: show progress bars on stderr.

    Returns:
        The exit status: 0 when both runs agree within ``tolerance``, else 1.
    """
    result = run(config, progress=progress)
    print("\n".join(report(result, tolerance)))
    return 0 if result.max_difference <= tolerance else 1


def parse_arguments(argv: list[str] | None = None) -> tuple[DemoConfig, float, bool]:
    """(config, tolerance, progress) from the command line."""
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="images per batch (default: %(default)s)"
    )
    parser.add_argument("--hidden", type=int, default=defaults.hidden, help="hidden layer width (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed for weights and batches")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=TOLERANCE,
        help="largest allowed |eager loss - fused loss| of an epoch (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    config = DemoConfig(epochs=args.epochs, batch_size=args.batch_size, hidden=args.hidden, seed=args.seed)
    return config, args.tolerance, not args.no_progress


if __name__ == "__main__":
    config, tolerance, progress = parse_arguments()
    cli.rerun_under_interpreter_if_needed([sys.executable, __file__, *sys.argv[1:]])
    sys.exit(main(config, tolerance, progress))
