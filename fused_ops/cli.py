"""Command line: ``fused-ops demo | bench | check``, also run as ``python -m fused_ops ...``.

- ``demo``: trains the same MLP twice, on eager torch and on fused_ops, and compares them
  (see :mod:`fused_ops.demo`).
- ``bench``: the benchmark and traffic report, from :mod:`fused_ops.report` when installed.
- ``check``: prints the environment and runs every fused op once against torch.

Triton decides whether kernels are interpreted when they are decorated, that is when
``fused_ops`` is imported, which happens before :func:`main` runs. On a machine without a
GPU, :func:`main` therefore re-runs the same command in a fresh process with
``TRITON_INTERPRET=1``, so that the real Triton kernels run in Triton's interpreter
instead of the library falling back to its eager reference.

To add a command, write ``_run_<name>(args) -> int`` (and ``_add_<name>_arguments(parser)``
if it takes options) and add a :class:`Command` row to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence

import torch

import fused_ops
import fused_ops.optim
from fused_ops import _dispatch, demo
from fused_ops.profiling import KernelTrace

REEXEC_MESSAGE = (
    "fused-ops: no GPU found, so re-running with TRITON_INTERPRET=1: "
    "the Triton kernels run on the CPU in Triton's interpreter"
)


def needs_interpreter_reexec(environ: Mapping[str, str] = os.environ) -> bool:
    """True when this process would run the eager reference although the interpreter could run the kernels."""
    return _dispatch.TRITON_AVAILABLE and not torch.cuda.is_available() and environ.get("TRITON_INTERPRET") != "1"


def reexec_under_interpreter(argv: Sequence[str]) -> None:
    """Replace this process with ``python -m fused_ops <argv>`` under ``TRITON_INTERPRET=1``; never returns."""
    print(REEXEC_MESSAGE, file=sys.stderr)
    # exec discards whatever is still buffered in this process.
    sys.stdout.flush()
    sys.stderr.flush()
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    os.execve(sys.executable, [sys.executable, "-m", "fused_ops", *argv], env)


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = demo.DemoConfig()
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="images per batch (default: %(default)s)"
    )
    parser.add_argument("--hidden", type=int, default=defaults.hidden, help="hidden layer width (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed for weights and batches")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=demo.TOLERANCE,
        help="largest allowed |eager loss - fused loss| of an epoch (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _run_demo(args: argparse.Namespace) -> int:
    config = demo.DemoConfig(epochs=args.epochs, batch_size=args.batch_size, hidden=args.hidden, seed=args.seed)
    return demo.main(config, tolerance=args.tolerance, progress=not args.no_progress)


def _run_bench(args: argparse.Namespace) -> int:
    # Imported here: the report pulls in matplotlib, which demo and check do not need.
    report = importlib.import_module("fused_ops.report")
    status = report.main(args.extra_arguments)
    return 0 if status is None else int(status)


@dataclasses.dataclass(frozen=True)
class Probe:
    """One fused op run once against torch: ``run(fused, device)`` returns (fused results, torch results)."""

    name: str
    run: Callable[[Callable, torch.device], tuple[list[torch.Tensor], list[torch.Tensor]]]


def _functional_probe(torch_fn: Callable, *make_inputs: Callable[[torch.Generator], torch.Tensor], **kwargs):
    """A probe comparing the output and the gradient of every float input, for a fixed grad_output."""

    def results(fn: Callable, device: torch.device) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        inputs = [make(generator).to(device) for make in make_inputs]
        leaves = [t.requires_grad_() if t.is_floating_point() else t for t in inputs]
        output = fn(*leaves, **kwargs)
        output.backward(torch.linspace(-1, 1, output.numel(), device=device).view_as(output))
        return [output.detach(), *(leaf.grad for leaf in leaves if leaf.requires_grad)]

    return lambda fused, device: (results(fused, device), results(torch_fn, device))


def _optimizer_probe(torch_cls: type[torch.optim.Optimizer]):
    """A probe comparing parameters after three steps of the fused and the torch optimizer."""

    def results(cls: type[torch.optim.Optimizer], device: torch.device) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        param = torch.nn.Parameter(torch.randn(5, 33, generator=generator).to(device))
        optimizer = cls([param], lr=1e-2, weight_decay=0.1)
        for _ in range(3):
            param.grad = torch.randn(5, 33, generator=generator).to(device)
            optimizer.step()
        return [param.detach()]

    return lambda fused, device: (results(fused, device), results(torch_cls, device))


def _values(generator: torch.Generator) -> torch.Tensor:
    # 33 columns: not a multiple of any block size, so the kernels' masks are exercised.
    return torch.randn(4, 33, generator=generator)


def _classes(generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 33, (4,), generator=generator)


# One row per public op and optimizer (tests/test_cli.py checks that none is left out).
PROBES = (
    Probe("sigmoid", _functional_probe(torch.sigmoid, _values)),
    Probe("tanh", _functional_probe(torch.tanh, _values)),
    Probe("relu", _functional_probe(torch.relu, _values)),
    Probe("softmax", _functional_probe(torch.softmax, _values, dim=-1)),
    Probe("log_softmax", _functional_probe(torch.log_softmax, _values, dim=-1)),
    Probe("mse_loss", _functional_probe(torch.nn.functional.mse_loss, _values, _values)),
    Probe("cross_entropy", _functional_probe(torch.nn.functional.cross_entropy, _values, _classes)),
    Probe("optim.Adam", _optimizer_probe(torch.optim.Adam)),
    Probe("optim.AdamW", _optimizer_probe(torch.optim.AdamW)),
)


def _matches(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """torch.testing.assert_close's verdict with its default tolerances for the dtype."""
    try:
        torch.testing.assert_close(actual, expected)
    except AssertionError:
        return False
    return True


def find_fused(path: str) -> object:
    """``fused_ops.<path>`` for a dotted path such as ``"optim.AdamW"``."""
    return functools.reduce(getattr, path.split("."), fused_ops)


def _run_check(args: argparse.Namespace) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    triton_version = "not installed (every op runs on the eager reference)"
    if _dispatch.TRITON_AVAILABLE:
        import triton

        triton_version = triton.__version__
    print(f"fused_ops {fused_ops.__version__}, Python {platform.python_version()}")
    print(f"torch     {torch.__version__}, CUDA {'available' if torch.cuda.is_available() else 'not available'}")
    print(f"triton    {triton_version}")
    print(f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '(unset)')}")
    backends = {"cpu": _dispatch.choose_backend("check", torch.empty(0))}
    if device.type == "cuda":
        backends["cuda"] = _dispatch.choose_backend("check", torch.empty(0, device=device))
    for device_type, backend in backends.items():
        print(f"backend for {device_type} tensors: {backend.value} ({demo.BACKEND_DESCRIPTIONS[backend]})")
    backend = backends[device.type]
    # Only interpreted launches can be traced; compiled kernels leave the trace empty.
    traced = backend is _dispatch.Backend.INTERPRETER

    print(f"\nEach op once on {device.type} against torch (forward and backward; optimizers: 3 steps):")
    failures = []
    for probe in PROBES:
        fused = find_fused(probe.name)
        problems, difference = [], 0.0
        with KernelTrace() as trace:
            try:
                fused_results, torch_results = probe.run(fused, device)
            except Exception as error:  # a diagnostic reports every op, even after one crashes
                fused_results, torch_results = [], []
                problems.append(f"raised {type(error).__name__}: {error}")
        for fused_result, torch_result in zip(fused_results, torch_results, strict=True):
            difference = max(difference, (fused_result.double() - torch_result.double()).abs().max().item())
        if not all(_matches(f, t) for f, t in zip(fused_results, torch_results, strict=True)):
            problems.append("differs from torch")
        if traced and trace.launch_count() == 0:
            problems.append("no kernel launched")
        if traced:
            kernels = ", ".join(sorted(trace.kernel_names()))
            launches = f"{trace.launch_count()} launches: {kernels}"
        else:
            launches = "launches not traced" if backend is _dispatch.Backend.TRITON else "no kernels (reference)"
        status = "FAIL " + " and ".join(problems) if problems else "ok"
        print(f"  {probe.name:<14} {status:<4}  max |diff| {difference:.1e}  {launches}")
        if problems:
            failures.append(probe.name)
    if failures:
        print(f"FAILED: {', '.join(failures)}")
        return 1
    print("every op matches torch")
    return 0


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, argument declarations and runner (returns the exit status)."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    # True: arguments the command does not declare reach it as ``args.extra_arguments``.
    passes_on_arguments: bool = False


COMMANDS = (
    Command(
        "demo",
        "train an MLP on scikit-learn's digits with eager torch and with fused_ops, and compare",
        _run_demo,
        _add_demo_arguments,
    ),
    Command(
        "bench",
        "benchmark and memory-traffic report (further arguments go to the report)",
        _run_bench,
        passes_on_arguments=True,
    ),
    Command("check", "print the environment and run every fused op once against torch", _run_check),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``fused-ops`` argument parser, one subparser per row of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="fused-ops", description="Fused Triton kernels for PyTorch.")
    parser.add_argument("--version", action="version", version=f"fused_ops {fused_ops.__version__}")
    subparsers = parser.add_subparsers(
        dest="command_name", required=True, metavar="{" + ",".join(c.name for c in COMMANDS) + "}"
    )
    for command in COMMANDS:
        subparser = subparsers.add_parser(command.name, help=command.help, description=command.help)
        if command.add_arguments is not None:
            command.add_arguments(subparser)
        subparser.set_defaults(command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fused-ops`` and ``python -m fused_ops``; returns the exit status.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 1 when a check or the demo's comparison fails, 2 for usage errors
        and for a command that is not available.

    Example:
        >>> main(["check"])  # doctest: +SKIP
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra_arguments = parser.parse_known_args(argv)
    if extra_arguments and not args.command.passes_on_arguments:
        parser.error(f"unrecognized arguments: {' '.join(extra_arguments)}")
    args.extra_arguments = extra_arguments
    if needs_interpreter_reexec():
        reexec_under_interpreter(argv)
    return args.command.run(args)
