"""Host time of fused_ops' GPU path against eager torch, with or without a GPU.

    python benchmarks/host_time.py [--quick] [--out FILE.md] [--json FILE.json]
    python benchmarks/host_time.py --only sigmoid,adamw  # some ops, and/or the optimizers (adamw, sgd)
    python benchmarks/host_time.py --profile sigmoid     # or softmax, ..., adamw64, sgd64

On a GPU, an op costs its host time or its kernels' time, whichever is larger, and for
the small and medium tensors of most models the host time wins. This measures it:

- Without a GPU, Triton gets the stand-in CUDA driver of ``standin_driver.py``: every
  kernel really compiles for sm_90, and every call goes through fused_ops' real GPU path
  (validation, autograd, torch.library, allocation, ``JITFunction.run`` with its binder
  and cache lookup), on CPU tensors, except that Triton's C launcher and
  ``cuLaunchKernel`` (about 5 µs a launch on a real GPU) are a no-op.
- With a GPU, the same calls run for real on CUDA tensors, without the stand-in.

Eager torch runs on the same tensors in the same process, alternating with fused_ops
repeat by repeat, and the table gives ratios, since shared machines are noisy. Each
figure is the minimum over repeats of the mean over many calls, in µs per call, of this
process's CPU time without a GPU (time spent waiting for a core is not host time) and of
wall time with one (``--clock`` chooses).

Ops: every op of ``fused_ops.__all__`` on a (4, 8) float32 tensor (cross_entropy: (4, 8)
logits and int64 targets; linear_cross_entropy: (4, 8) hidden states and a (16, 8) head
weight, both trained, against ``F.cross_entropy(F.linear(x, w), t)``), no-grad forward and
forward+backward. Optimizer:
``fused_ops.optim.AdamW`` and ``fused_ops.optim.SGD`` (momentum 0.9) steps with 4, 64
and 256 parameters of 64 elements, with the same gradient tensors every step and with
new ones (``zero_grad(set_to_none=True)`` then new tensors), against torch's AdamW and
SGD with ``fused=True`` and ``foreach=True`` (on the CPU, torch's steps include their
arithmetic; the stand-in's do not). Only
``step()`` is timed. A least-squares line through the three sizes gives a fixed cost and
a cost per parameter.

The targets of issue 9 are flagged in the table: forward+backward at most 1.5x eager
torch; no-grad forward at most 15 µs; the optimizer step, with new gradients, at most
1 µs per parameter above a fixed cost of at most 50 µs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCHMARKS_DIR = Path(__file__).resolve().parent
SHAPE = (4, 8)
OPTIMIZER_SIZES = (4, 64, 256)
PARAM_NUMEL = 64
# Issue 9's targets.
MAX_FWD_BWD_RATIO = 1.5
MAX_NO_GRAD_FWD_US = 15.0
MAX_OPTIMIZER_US_PER_PARAM = 1.0
MAX_OPTIMIZER_FIXED_US = 50.0


@dataclasses.dataclass
class Clock:
    """What a measurement reads: this process's CPU time, or wall time."""

    name: str
    seconds: Callable[[], float]
    nanoseconds: Callable[[], int]


# CPU time by default without a GPU: the host path is this one thread's work (torch runs
# one thread here), and CPU time does not count the time the process waits for a core,
# which on a shared machine is most of wall time (load 10 on 2 cores inflated every
# wall-clock figure 2 to 3 times). With a GPU, wall time: waits for the device are real.
CLOCKS = {
    "cpu": Clock("process CPU time", time.process_time, time.process_time_ns),
    "wall": Clock("wall time", time.perf_counter, time.perf_counter_ns),
}
_CLOCK = CLOCKS["cpu"]


@dataclasses.dataclass
class Settings:
    """How many calls make one repeat, and how many repeats, for ops and for optimizer steps."""

    # Many short repeats rather than a few long ones: the minimum then comes from the
    # quiet moments of a shared machine.
    op_calls: int = 200
    op_repeats: int = 25
    optimizer_steps: int = 15
    optimizer_repeats: int = 20


QUICK = Settings(op_calls=20, op_repeats=2, optimizer_steps=4, optimizer_repeats=2)


@dataclasses.dataclass
class OpCase:
    """One op: its inputs, the fused and eager calls, and the grads' leaves."""

    name: str
    make_inputs: Callable[[], tuple[Any, ...]]
    fused: Callable[..., Any]
    eager: Callable[..., Any]
    # How many float inputs require grad in the forward+backward (the first ones).
    n_leaves: int = 1


@dataclasses.dataclass
class OpResult:
    name: str
    fwd_us: float
    fwd_eager_us: float
    fwd_bwd_us: float
    fwd_bwd_eager_us: float
    fwd_launches: list[str] | None
    fwd_bwd_launches: list[str] | None

    @property
    def fwd_bwd_ratio(self) -> float:
        return self.fwd_bwd_us / self.fwd_bwd_eager_us

    @property
    def fwd_ratio(self) -> float:
        return self.fwd_us / self.fwd_eager_us

    @property
    def fwd_bwd_target(self) -> bool:
        return self.fwd_bwd_ratio <= MAX_FWD_BWD_RATIO

    @property
    def fwd_target(self) -> bool:
        return self.fwd_us <= MAX_NO_GRAD_FWD_US


@dataclasses.dataclass
class StepResult:
    optimizer: str
    grads: str  # "same" or "new"
    n_params: int
    us_per_step: float
    launches: list[str] | None

    @property
    def us_per_param(self) -> float:
        return self.us_per_step / self.n_params


@dataclasses.dataclass
class Fit:
    """us_per_step = fixed_us + per_param_us * n_params, least squares over the sizes measured."""

    optimizer: str
    grads: str
    fixed_us: float
    per_param_us: float

    @property
    def target(self) -> bool:
        return self.per_param_us <= MAX_OPTIMIZER_US_PER_PARAM and self.fixed_us <= MAX_OPTIMIZER_FIXED_US


def _op_cases(device) -> list[OpCase]:
    """Every op of fused_ops.__all__ that has a case here or can be called like torch's as op(x)."""
    import torch
    import torch.nn.functional as F

    import fused_ops

    def activation(shape=SHAPE):
        return lambda: (torch.randn(shape, device=device),)

    def two_tensors():
        return (torch.randn(SHAPE, device=device), torch.randn(SHAPE, device=device))

    def hidden_head_and_targets():
        classes = 2 * SHAPE[1]
        return (
            torch.randn(SHAPE, device=device),
            torch.randn(classes, SHAPE[1], device=device),
            torch.randint(0, classes, SHAPE[:1], device=device),
        )

    def logits_and_targets():
        return (torch.randn(SHAPE, device=device), torch.randint(0, SHAPE[1], SHAPE[:1], device=device))

    cases = {
        "sigmoid": OpCase("sigmoid", activation(), fused_ops.sigmoid, torch.sigmoid),
        "tanh": OpCase("tanh", activation(), fused_ops.tanh, torch.tanh),
        "relu": OpCase("relu", activation(), fused_ops.relu, torch.relu),
        "softmax": OpCase(
            "softmax", activation(), lambda x: fused_ops.softmax(x, dim=-1), lambda x: torch.softmax(x, dim=-1)
        ),
        "log_softmax": OpCase(
            "log_softmax",
            activation(),
            lambda x: fused_ops.log_softmax(x, dim=-1),
            lambda x: torch.log_softmax(x, dim=-1),
        ),
        "mse_loss": OpCase("mse_loss", two_tensors, fused_ops.mse_loss, F.mse_loss),
        "cross_entropy": OpCase("cross_entropy", logits_and_targets, fused_ops.cross_entropy, F.cross_entropy),
        # The hidden states and the head's weight both train: (4, 8) x (16, 8) logits.
        "linear_cross_entropy": OpCase(
            "linear_cross_entropy",
            hidden_head_and_targets,
            fused_ops.linear_cross_entropy,
            lambda x, w, t: F.cross_entropy(F.linear(x, w), t),
            n_leaves=2,
        ),
    }
    # Ops added to fused_ops later (gelu, silu, ...) join when torch has a same-named
    # function callable as op(x) and the fused op accepts the same call.
    for name in getattr(fused_ops, "__all__", []):
        if name in cases:
            continue
        fused = getattr(fused_ops, name, None)
        eager = getattr(F, name, None) or getattr(torch, name, None)
        if not callable(fused) or not callable(eager) or isinstance(fused, type):
            continue
        try:
            x = torch.randn(SHAPE, device=device)
            if fused(x).shape != eager(x).shape:
                continue
        except Exception:  # not callable as op(x): leave it out of the generic rows
            continue
        cases[name] = OpCase(name, activation(), fused, eager)
    return list(cases.values())


def _grad_leaves(inputs, n_leaves: int = 1) -> list:
    """The first ``n_leaves`` float inputs, as leaves that require grad (not losses' targets)."""
    return [t for t in inputs if t.is_floating_point()][:n_leaves]


def _fwd_bwd_call(op, inputs, leaves, grad) -> Callable[[], None]:
    def call() -> None:
        for leaf in leaves:
            leaf.grad = None
        op(*inputs).backward(grad)

    return call


def _sync(device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def _interleaved_min_us(calls: dict[str, Callable[[], Any]], number: int, repeats: int, device) -> dict[str, float]:
    """µs per call of each callable: the minimum over repeats, alternating callables per repeat."""
    timers = {name: timeit.Timer(call, timer=_CLOCK.seconds) for name, call in calls.items()}
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeats):
        for name, timer in timers.items():
            _sync(device)
            seconds = timer.timeit(number)  # timeit disables gc while it runs
            _sync(device)
            best[name] = min(best[name], seconds / number * 1e6)
    return best


def _launches(call: Callable[[], Any], counting: bool) -> list[str] | None:
    if not counting:
        return None
    from fused_ops.profiling import KernelTrace  # counts compiled launches through Triton's hook

    with KernelTrace() as trace:
        call()
    return [launch.kernel for launch in trace.launches]


def measure_op(case: OpCase, settings: Settings, device, counting: bool) -> OpResult:
    """No-grad forward and forward+backward of one op, fused and eager, on the same tensors."""
    import torch

    inputs = case.make_inputs()
    with torch.no_grad():
        fwd = {"fused": lambda: case.fused(*inputs), "eager": lambda: case.eager(*inputs)}
        for call in fwd.values():
            call()  # compiles the kernels for this signature
        fwd_launches = _launches(fwd["fused"], counting)
        fwd_us = _interleaved_min_us(fwd, settings.op_calls, settings.op_repeats, device)

    leaves = _grad_leaves(inputs, case.n_leaves)
    for leaf in leaves:
        leaf.requires_grad_(True)
    output = case.eager(*inputs)
    grad = None if output.dim() == 0 else torch.randn_like(output)
    fwd_bwd = {
        "fused": _fwd_bwd_call(case.fused, inputs, leaves, grad),
        "eager": _fwd_bwd_call(case.eager, inputs, leaves, grad),
    }
    for call in fwd_bwd.values():
        call()
    fwd_bwd_launches = _launches(fwd_bwd["fused"], counting)
    fwd_bwd_us = _interleaved_min_us(fwd_bwd, settings.op_calls, settings.op_repeats, device)
    return OpResult(
        case.name,
        fwd_us["fused"],
        fwd_us["eager"],
        fwd_bwd_us["fused"],
        fwd_bwd_us["eager"],
        fwd_launches,
        fwd_bwd_launches,
    )


# Per family (the name ``--only`` takes): fused_ops' optimizer, then torch's fused and
# foreach ones with the same hyperparameters. Ratios are against torch's fused step.
FAMILIES = {
    "adamw": ("fused_ops AdamW", "torch AdamW fused=True", "torch AdamW foreach=True"),
    "sgd": ("fused_ops SGD", "torch SGD fused=True", "torch SGD foreach=True"),
}
OPTIMIZERS = tuple(name for names in FAMILIES.values() for name in names)
# SGD with momentum: the variant with state (one momentum buffer), as models train with it.
SGD_MOMENTUM = 0.9


def _make_optimizer(name: str, params):
    import torch

    import fused_ops

    if name == "fused_ops AdamW":
        return fused_ops.optim.AdamW(params, lr=1e-3)
    if name == "torch AdamW fused=True":
        return torch.optim.AdamW(params, lr=1e-3, fused=True)
    if name == "torch AdamW foreach=True":
        return torch.optim.AdamW(params, lr=1e-3, foreach=True)
    if name == "fused_ops SGD":
        return fused_ops.optim.SGD(params, lr=1e-3, momentum=SGD_MOMENTUM)
    if name == "torch SGD fused=True":
        return torch.optim.SGD(params, lr=1e-3, momentum=SGD_MOMENTUM, fused=True)
    return torch.optim.SGD(params, lr=1e-3, momentum=SGD_MOMENTUM, foreach=True)


class _StepBench:
    """One optimizer over its own ``n_params`` parameters, with the gradients of every timed step."""

    def __init__(self, name: str, n_params: int, new_grads: bool, settings: Settings, device) -> None:
        import torch

        self.name, self.n_params, self.new_grads = name, n_params, new_grads
        self.params = [torch.randn(PARAM_NUMEL, device=device, requires_grad=True) for _ in range(n_params)]
        self.optimizer = _make_optimizer(name, self.params)
        # New gradients are new tensors, at new addresses, for every timed step; made up
        # front so that only step() is timed.
        self.n_sets = settings.optimizer_steps + 1 if new_grads else 1
        self.grad_sets = [[torch.randn(PARAM_NUMEL, device=device) for _ in self.params] for _ in range(self.n_sets)]
        self.set_grads(0)
        self.optimizer.step()  # creates the state and compiles the kernel
        self.set_grads(1)

    def set_grads(self, index: int) -> None:
        if self.new_grads:
            self.optimizer.zero_grad(set_to_none=True)
        for param, grad in zip(self.params, self.grad_sets[index % self.n_sets], strict=True):
            param.grad = grad

    def time_steps(self, steps: int) -> float:
        """Mean µs of ``steps`` calls of step(), timing only the step."""
        total_ns = 0
        for step in range(steps):
            self.set_grads(step)
            start = _CLOCK.nanoseconds()
            self.optimizer.step()
            total_ns += _CLOCK.nanoseconds() - start
        return total_ns / steps / 1e3


def measure_steps(
    family: str, n_params: int, new_grads: bool, settings: Settings, device, counting: bool
) -> list[StepResult]:
    """µs per ``step()`` of every optimizer of ``family`` over ``n_params`` parameters of PARAM_NUMEL elements.

    The optimizers alternate repeat by repeat, so that a change in the machine's load
    affects them alike.
    """
    names = FAMILIES[family]
    benches = [_StepBench(name, n_params, new_grads, settings, device) for name in names]
    launches = [_launches(b.optimizer.step, counting and b.name == names[0]) for b in benches]
    best = [float("inf")] * len(benches)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(settings.optimizer_repeats):
            for i, bench in enumerate(benches):
                _sync(device)
                us = bench.time_steps(settings.optimizer_steps)
                _sync(device)
                best[i] = min(best[i], us)
    finally:
        if gc_was_enabled:
            gc.enable()
    grads = "new" if new_grads else "same"
    return [
        StepResult(b.name, grads, n_params, us, names) for b, us, names in zip(benches, best, launches, strict=True)
    ]


def fit(results: list[StepResult]) -> Fit:
    """Least-squares fixed cost and per-parameter slope of one optimizer's steps."""
    xs = [r.n_params for r in results]
    ys = [r.us_per_step for r in results]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)
    return Fit(results[0].optimizer, results[0].grads, mean_y - slope * mean_x, slope)


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _launch_text(names: list[str] | None) -> str:
    return "-" if names is None else str(len(names))


def render(mode: str, settings: Settings, ops: list[OpResult], steps: list[StepResult], fits: list[Fit]) -> str:
    """The report as Markdown: the ops table, the optimizer table and the fits (those measured)."""
    lines = ["# Host time: fused_ops against eager torch", "", f"{mode}."]
    if ops:
        lines += [
            "",
            f"Ops: µs per call, the minimum over {settings.op_repeats} repeats of the mean of "
            f"{settings.op_calls} calls, fused_ops and eager torch alternating on the same tensors; "
            "(4, 8) float32 inputs. Launches: kernel launches per call, counted through Triton's launch hook.",
            "",
            "| op | no-grad fwd µs | eager µs | ratio | fwd+bwd µs | eager µs | ratio | launches fwd / fwd+bwd "
            f"| fwd <= {MAX_NO_GRAD_FWD_US:g} µs | fwd+bwd <= {MAX_FWD_BWD_RATIO:g}x |",
            "|---|--:|--:|--:|--:|--:|--:|--:|:-:|:-:|",
        ]
        for r in ops:
            lines.append(
                f"| {r.name} | {r.fwd_us:.1f} | {r.fwd_eager_us:.1f} | {r.fwd_ratio:.1f}x | {r.fwd_bwd_us:.1f} "
                f"| {r.fwd_bwd_eager_us:.1f} | {r.fwd_bwd_ratio:.2f}x "
                f"| {_launch_text(r.fwd_launches)} / {_launch_text(r.fwd_bwd_launches)} "
                f"| {_yes(r.fwd_target)} | {_yes(r.fwd_bwd_target)} |"
            )
    if steps:
        lines += [
            "",
            f"Optimizer: µs per `step()` (only the step is timed), the minimum over {settings.optimizer_repeats} "
            f"repeats of the mean of {settings.optimizer_steps} steps, the optimizers alternating; parameters of "
            f"{PARAM_NUMEL} float32 elements. `new` grads: `zero_grad(set_to_none=True)` and new gradient tensors "
            "before every step. Without a GPU, torch's steps include their CPU arithmetic.",
            "",
            "| optimizer | grads | params | µs / step | µs / param | vs torch's fused=True | launches / step |",
            "|---|---|--:|--:|--:|--:|--:|",
        ]
        torch_fused = {
            (names[0], r.grads, r.n_params): r.us_per_step
            for names in FAMILIES.values()
            for r in steps
            if r.optimizer == names[1]
        }
        for r in steps:
            family = next(names for names in FAMILIES.values() if r.optimizer in names)
            lines.append(
                f"| {r.optimizer} | {r.grads} | {r.n_params} | {r.us_per_step:.1f} | {r.us_per_param:.2f} "
                f"| {r.us_per_step / torch_fused[family[0], r.grads, r.n_params]:.2f}x | {_launch_text(r.launches)} |"
            )
    if fits:
        lines += [
            "",
            f"Fit: µs / step = fixed + slope x params (least squares over {', '.join(map(str, OPTIMIZER_SIZES))} "
            f"params). Target (fused_ops, new grads): slope <= {MAX_OPTIMIZER_US_PER_PARAM:g} µs and fixed <= "
            f"{MAX_OPTIMIZER_FIXED_US:g} µs.",
            "",
            "| optimizer | grads | fixed µs | µs / param | target |",
            "|---|---|--:|--:|:-:|",
        ]
        for f in fits:
            target = _yes(f.target) if f.optimizer.startswith("fused_ops") and f.grads == "new" else "-"
            lines.append(f"| {f.optimizer} | {f.grads} | {f.fixed_us:.1f} | {f.per_param_us:.2f} | {target} |")
    return "\n".join(lines) + "\n"


def _describe_mode(on_gpu: bool, arch: int) -> str:
    import torch
    import triton

    versions = f"torch {torch.__version__}, Triton {triton.__version__}, Python {platform.python_version()}"
    if on_gpu:
        return f"Real GPU ({torch.cuda.get_device_name()}), CUDA tensors, {_CLOCK.name}; {versions}"
    return (
        f"No GPU: stand-in CUDA driver (kernels compiled for sm_{arch}, launches are no-ops), CPU tensors, "
        f"{_CLOCK.name}; torch.set_num_threads(1); {versions}; {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    )


def run(settings: Settings, arch: int = 90, only: list[str] | None = None, clock: str | None = None) -> dict[str, Any]:
    """Measure everything (or the ops, and ``adamw``/``sgd``, named in ``only``); the results and the Markdown report.

    ``clock`` is a key of :data:`CLOCKS`; by default CPU time without a GPU, wall time with one.
    """
    global _CLOCK
    import contextlib

    import torch

    sys.path.insert(0, str(BENCHMARKS_DIR))
    import standin_driver

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    _CLOCK = CLOCKS[clock or ("wall" if on_gpu else "cpu")]
    if not on_gpu:
        # The host path is one thread's work. Eager torch's CPU kernels (softmax, the fused
        # AdamW step) otherwise wake OpenMP workers for 32-element tensors, which costs
        # tens of µs and, on a loaded machine, milliseconds: noise, not host time.
        torch.set_num_threads(1)
    torch.manual_seed(0)
    context = contextlib.nullcontext() if on_gpu else standin_driver.standin_cuda_driver(arch)
    with context:
        cases = [c for c in _op_cases(device) if only is None or c.name in only]
        ops = [measure_op(case, settings, device, counting=True) for case in cases]
        measured = [
            measure_steps(family, n, new_grads, settings, device, counting=True)
            for family in FAMILIES
            for new_grads in (True, False)
            for n in OPTIMIZER_SIZES
            if only is None or family in only
        ]
        steps = sorted(
            (r for results in measured for r in results),
            key=lambda r: (OPTIMIZERS.index(r.optimizer), r.grads != "new", r.n_params),
        )
    fits = [
        fit([s for s in steps if s.optimizer == name and s.grads == grads])
        for name in OPTIMIZERS
        for grads in ("new", "same")
        if any(s.optimizer == name for s in steps)
    ]
    markdown = render(_describe_mode(on_gpu, arch), settings, ops, steps, fits)
    return {
        "mode": "gpu" if on_gpu else f"standin-sm{arch}",
        "clock": _CLOCK.name,
        "ops": [dataclasses.asdict(r) | {"fwd_bwd_ratio": r.fwd_bwd_ratio} for r in ops],
        "steps": [dataclasses.asdict(r) for r in steps],
        "fits": [dataclasses.asdict(f) | {"target": f.target} for f in fits],
        "markdown": markdown,
    }


def _profiled_call(target: str, device) -> Callable[[], Any]:
    """The fused call that ``--profile`` profiles: an op's forward+backward, or an AdamW or SGD step."""
    import torch

    family = next((f for f in FAMILIES if target.startswith(f)), None)
    if family is not None:
        n_params = int(target.removeprefix(family) or 64)
        params = [torch.randn(PARAM_NUMEL, device=device, requires_grad=True) for _ in range(n_params)]
        optimizer = _make_optimizer(FAMILIES[family][0], params)

        def step() -> None:
            # New gradient tensors every step, as after a backward (zero_grad(set_to_none=True)).
            optimizer.zero_grad(set_to_none=True)
            for param in params:
                param.grad = torch.empty_like(param)
            optimizer.step()

        return step
    (case,) = [c for c in _op_cases(device) if c.name == target]
    inputs = case.make_inputs()
    leaves = _grad_leaves(inputs, case.n_leaves)
    for leaf in leaves:
        leaf.requires_grad_(True)
    output = case.eager(*inputs)
    return _fwd_bwd_call(case.fused, inputs, leaves, None if output.dim() == 0 else torch.randn_like(output))


def profile(target: str, calls: int, arch: int = 90) -> str:
    """A profile of ``calls`` fused calls (pyinstrument if installed, else cProfile), as text.

    Args:
        target: an op name (its forward+backward is profiled), ``adamw<N>`` or ``sgd<N>``
            (an AdamW, or SGD with momentum, step over N parameters with new gradients,
            N = 64 by default).
        calls: how many calls to profile, after a warm-up call.
    """
    import contextlib

    import torch

    sys.path.insert(0, str(BENCHMARKS_DIR))
    import standin_driver

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    if not on_gpu:
        torch.set_num_threads(1)
    with contextlib.nullcontext() if on_gpu else standin_driver.standin_cuda_driver(arch):
        call = _profiled_call(target, device)
        call()
        try:
            import pyinstrument
        except ImportError:
            pyinstrument = None
        if pyinstrument is not None:
            profiler = pyinstrument.Profiler(interval=0.0001)
            with profiler:
                for _ in range(calls):
                    call()
            return profiler.output_text(unicode=True, color=False, show_all=True)
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(calls):
            call()
        profiler.disable()
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(40)
        return stream.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few calls: a smoke run, not a measurement")
    parser.add_argument("--out", type=Path, help="also write the Markdown table to this file")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--arch", type=int, default=90, help="compute capability the stand-in compiles for")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        help="what to measure: process CPU time (default without a GPU) or wall time (default with one)",
    )
    parser.add_argument(
        "--only",
        help="comma-separated op names, and adamw and/or sgd for the optimizers, to measure (default: everything)",
    )
    parser.add_argument(
        "--profile",
        metavar="TARGET",
        help="instead of the table, profile an op's fused forward+backward (e.g. sigmoid) or an AdamW "
        "or SGD step with new grads (adamw64, sgd64: 64 parameters), with pyinstrument if installed, else cProfile",
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls to profile with --profile")
    args = parser.parse_args(argv)

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") and not _cuda_available():
        # Triton would interpret the kernels (it reads this when they are decorated):
        # measure in a fresh process without it.
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        argv = sys.argv[1:] if argv is None else argv
        return subprocess.run([sys.executable, __file__, *argv], env=env).returncode
    # Triton 3.9 warns on every compile until this is set; 1 keeps its default (FMA fusion).
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

    if args.profile:
        print(profile(args.profile, args.calls, arch=args.arch))
        return 0
    settings = QUICK if args.quick else Settings()
    result = run(settings, arch=args.arch, only=args.only.split(",") if args.only else None, clock=args.clock)
    print(result["markdown"])
    if args.out:
        args.out.write_text(result["markdown"])
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in result.items() if k != "markdown"}, indent=1))
    return 0


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
