"""Command line: ``fused-ops check``, also run as ``python -m fused_ops check``.

``check`` prints the environment and the backend ops will use, then runs every fused op
and optimizer once against torch, with the kernels each launched. The demo lives in
``examples/demo.py`` and the developers' instruments (benchmarks, traffic and static
reports, AOT compilation) in ``benchmarks/``: none of them is part of the installed package.

Triton decides whether kernels are interpreted when they are decorated, that is when
``fused_ops`` is imported, which happens before :func:`main` runs. On a machine without a
GPU, :func:`main` therefore re-runs the same command in a fresh process with
``TRITON_INTERPRET=1`` (:func:`rerun_under_interpreter_if_needed`, which the demo and the
benchmark scripts use too), so that the real Triton kernels run in Triton's interpreter
instead of the library falling back to its eager reference.

To add a command, write ``_run_<name>(args) -> int`` (and ``_add_<name>_arguments(parser)``
if it takes options) and add a :class:`Command` row to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence

import torch

import fused_ops
import fused_ops.optim
from fused_ops import _dispatch, _native
from fused_ops.profiling import KernelTrace

REEXEC_MESSAGE = (
    "fused-ops: no GPU found, so re-running with TRITON_INTERPRET=1: "
    "the Triton kernels run on the CPU in Triton's interpreter"
)


def needs_interpreter_reexec(environ: Mapping[str, str] = os.environ) -> bool:
    """True when this process would run the eager reference although the interpreter could run the kernels."""
    return _dispatch.TRITON_AVAILABLE and not torch.cuda.is_available() and environ.get("TRITON_INTERPRET") != "1"


def reexec_under_interpreter(command: Sequence[str]) -> None:
    """Replace this process with ``command`` (``[python, ...]``) under ``TRITON_INTERPRET=1``; never returns."""
    print(REEXEC_MESSAGE, file=sys.stderr)
    # exec discards whatever is still buffered in this process.
    sys.stdout.flush()
    sys.stderr.flush()
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    os.execve(command[0], list(command), env)


def rerun_under_interpreter_if_needed(command: Sequence[str]) -> None:
    """Re-run ``command`` under the interpreter when this process could only run the eager reference.

    Call it first thing in a script that runs fused ops, with the command that started it:
    ``rerun_under_interpreter_if_needed([sys.executable, __file__, *sys.argv[1:]])``.
    Returns (doing nothing) on a GPU, under the interpreter already, or without Triton.

    Args:
        command: the full command line to re-run, the Python executable first.
    """
    if needs_interpreter_reexec():
        reexec_under_interpreter(command)


BACKEND_DESCRIPTIONS = {
    _dispatch.Backend.TRITON: "compiled Triton kernels",
    _dispatch.Backend.INTERPRETER: "Triton kernels in Triton's interpreter",
    _dispatch.Backend.REFERENCE: "the eager PyTorch reference: no Triton kernel runs",
}


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


def _optimizer_probe(torch_cls: type[torch.optim.Optimizer], **kwargs):
    """A probe comparing parameters after three steps of the fused and the torch optimizer."""

    def results(cls: type[torch.optim.Optimizer], device: torch.device) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        param = torch.nn.Parameter(torch.randn(5, 33, generator=generator).to(device))
        optimizer = cls([param], lr=1e-2, weight_decay=0.1, **kwargs)
        for _ in range(3):
            param.grad = torch.randn(5, 33, generator=generator).to(device)
            optimizer.step()
        return [param.detach()]

    return lambda fused, device: (results(fused, device), results(torch_cls, device))


def _clip_probe(fused: Callable, device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Clipped gradients and total norm of two parameters, fused against torch's clip_grad_norm_."""

    def results(clip: Callable) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(n, generator=generator).to(device)) for n in (33, 7)]
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator).to(device)
        norm = clip(params, max_norm=1.0)
        return [norm, *(param.grad for param in params)]

    return results(fused), results(torch.nn.utils.clip_grad_norm_)


def _values(generator: torch.Generator) -> torch.Tensor:
    # 33 columns: not a multiple of any block size, so the kernels' masks are exercised.
    return torch.randn(4, 33, generator=generator)


def _weight(generator: torch.Generator) -> torch.Tensor:
    # A linear layer from _values' 33 features to 33 classes.
    return torch.randn(33, 33, generator=generator) / 33**0.5


def _classes(generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 33, (4,), generator=generator)


# One row per public op and optimizer (tests/test_cli.py checks that none is left out).
PROBES = (
    Probe("sigmoid", _functional_probe(torch.sigmoid, _values)),
    Probe("tanh", _functional_probe(torch.tanh, _values)),
    Probe("relu", _functional_probe(torch.relu, _values)),
    Probe("gelu", _functional_probe(torch.nn.functional.gelu, _values)),
    Probe("silu", _functional_probe(torch.nn.functional.silu, _values)),
    Probe("softmax", _functional_probe(torch.softmax, _values, dim=-1)),
    Probe("log_softmax", _functional_probe(torch.log_softmax, _values, dim=-1)),
    Probe("mse_loss", _functional_probe(torch.nn.functional.mse_loss, _values, _values)),
    Probe("cross_entropy", _functional_probe(torch.nn.functional.cross_entropy, _values, _classes)),
    Probe(
        "linear_cross_entropy",
        _functional_probe(torch.nn.functional.linear_cross_entropy, _values, _weight, _classes),
    ),
    Probe("optim.Adam", _optimizer_probe(torch.optim.Adam)),
    Probe("optim.AdamW", _optimizer_probe(torch.optim.AdamW)),
    Probe("optim.SGD", _optimizer_probe(torch.optim.SGD, momentum=0.9)),
    # The probe's 165-element parameter is under the 4,096 elements below which the 8-bit
    # optimizers keep fp32 moments, so they match torch exactly; docs/lowmem.md has their
    # 8-bit accuracy.
    Probe("optim.Adam8bit", _optimizer_probe(torch.optim.Adam)),
    Probe("optim.AdamW8bit", _optimizer_probe(torch.optim.AdamW)),
    Probe("optim.clip_grad_norm_", _clip_probe),
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


CHECK_HELP = "print the environment and run every fused op once against torch"


def _run_check() -> int:
    """Print the environment, then run every probe; 0 when every op matches torch, else 1."""
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
        print(f"backend for {device_type} tensors: {backend.value} ({BACKEND_DESCRIPTIONS[backend]})")
    # Builds the extension now if it was never built on this machine (about a minute).
    node = "C++ (fused_ops/csrc)" if _native.attach() is not None else "Python Functions (C++ node not built)"
    print(f"autograd node of the eager path: {node}")
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
        print(f"  {probe.name:<22} {status:<4}  max |diff| {difference:.1e}  {launches}")
        if problems:
            failures.append(probe.name)
    if failures:
        print(f"FAILED: {', '.join(failures)}")
        return 1
    print("every op matches torch")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``fused-ops`` argument parser: one subcommand, ``check``."""
    parser = argparse.ArgumentParser(prog="fused-ops", description="Fused Triton kernels for PyTorch.")
    parser.add_argument("--version", action="version", version=f"fused_ops {fused_ops.__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    subparsers.add_parser("check", help=CHECK_HELP, description=CHECK_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fused-ops`` and ``python -m fused_ops``; returns the exit status.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 1 when a check fails, 2 for usage errors.

    Example:
        >>> main(["check"])  # doctest: +SKIP
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    build_parser().parse_args(argv)  # usage errors exit here, before any re-run
    rerun_under_interpreter_if_needed([sys.executable, "-m", "fused_ops", *argv])
    return _run_check()
