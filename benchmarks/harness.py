"""What every benchmark shares: the case classes, sizes, providers, modes, and one way to time a call.

Each op family has one benchmark file, ``benchmarks/bench_<family>.py``, named like its
``fused_ops/<family>.py``, ``kernels/<family>.py`` and ``tests/test_<family>.py``. That file
defines the family's cases and times them:

- ``CASES``: a tuple of :class:`OpCase` (an op: its inputs, the fused call, torch's call,
  what its gradient must read) or :class:`OptimizerCase` (an optimizer configuration);
- one pytest-benchmark test, parametrized with :func:`op_params` or
  :func:`optimizer_params` over those ``CASES``.

Every instrument reads the cases from there: the pytest-benchmark suites (``make bench``),
the traffic report (``benchmarks/traffic_report.py``, which imports every
``bench_*.py`` and collects its ``CASES``), the static sm_90 report
(``benchmarks/static_report.py``) and the traffic tests (``tests/test_traffic.py``, which
fails when a public op or optimizer has no case). So adding a family to the benchmarks
and reports is writing ``benchmarks/bench_<family>.py`` with its ``CASES`` and its test,
and nothing else; ``bench_softmax.py`` is a short example to copy.

Timing:

- On a GPU: every round (and every untimed setup) ends with ``torch.cuda.synchronize()``,
  and ``extra_info["gbps"]`` is the minimum bytes ÷ the median round (effective bandwidth).
- On a CPU: the fused provider runs Triton's interpreter (or the eager fallback), so its
  timings say nothing about a GPU; ``extra_info["timing"]`` says so, and no GB/s is recorded.
- ``FUSED_OPS_BENCH_SMOKE=1`` (used by ``tests/test_benchmarks.py`` with
  ``--benchmark-disable``): tiny sizes, one run each, so the suites cannot rot.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence

import pytest
import torch

from fused_ops import _dispatch
from fused_ops.profiling import minimum_bytes

# The dtypes a case runs in, by the name the reports and the command lines use.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODES = ("forward", "backward", "full")
# Every op case is a (rows, COLS) problem: elementwise ops see rows × COLS elements,
# softmax reduces rows of COLS, cross-entropy has COLS classes. A multiple of 16, so
# Triton specializes the sizes as divisible and can vectorize.
COLS = 4096


def randn(rows: int, cols: int, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """``(rows, cols)`` standard normal values drawn in fp32 from ``generator``, cast to ``dtype``."""
    return torch.randn(rows, cols, generator=generator).to(dtype)


def one_input(rows, cols, dtype, generator):
    """``make_inputs`` of a unary op: one ``(rows, cols)`` input that requires grad."""
    return (randn(rows, cols, dtype, generator).requires_grad_(),)


def saved_output(inputs, output):
    """``backward_reads`` of an op whose gradient reads only its output (sigmoid, softmax, ...)."""
    return (output,)


def all_inputs(inputs, output):
    """``backward_reads`` of an op whose gradient reads its inputs (the losses)."""
    return inputs


@dataclasses.dataclass(frozen=True)
class OpCase:
    """One op as the benchmarks, the reports and the traffic tests run it.

    Attributes:
        name: the op's attribute in fused_ops.
        call: what the case runs, in words.
        make_inputs: ``(rows, cols, dtype, generator) -> inputs`` on the CPU; the inputs
            that are differentiated have ``requires_grad``.
        fused: ``fused(*inputs)`` runs the fused op (``fused_ops`` is looked up at call time).
        eager: ``eager(*inputs)`` runs torch's op.
        backward_reads: ``(inputs, output) -> tensors`` that the gradient formula must
            read besides ``grad_output`` (the saved output, or the inputs).
        one_pass: the fused forward also writes the gradient (the losses, when their input
            requires grad), so forward + backward can read each input once in all: its
            *full* minimum is each input read once and the loss and each gradient written
            once. (Forward and backward alone keep the minimums of separate passes.)

    Example:
        >>> case = OpCase("sigmoid", "sigmoid(x)", one_input, lambda x: fused_ops.sigmoid(x), torch.sigmoid,
        ...               saved_output)  # doctest: +SKIP
    """

    name: str
    call: str
    make_inputs: Callable[..., tuple[torch.Tensor, ...]]
    fused: Callable[..., torch.Tensor]
    eager: Callable[..., torch.Tensor]
    backward_reads: Callable[..., Sequence[torch.Tensor]]
    one_pass: bool = False

    def inputs(self, rows: int, cols: int, dtype: torch.dtype, device="cpu", seed: int = 0):
        """Fresh inputs of shape ``(rows, cols)`` (and targets), seeded, on ``device``."""
        generator = torch.Generator().manual_seed(seed)
        made = self.make_inputs(rows, cols, dtype, generator)
        return tuple(t.detach().to(device).requires_grad_(t.requires_grad) for t in made)

    def minimum(self, mode: str, inputs: Sequence[torch.Tensor], output: torch.Tensor) -> int:
        """Minimum bytes of one mode, each tensor read or written once.

        Args:
            mode: "forward" (read the inputs, write the output), "backward" (read
                ``grad_output`` and :attr:`backward_reads`, write each input's gradient) or
                "full" (their sum: the two are separate ops in a training step).
            inputs: the case's inputs.
            output: the forward's output (``grad_output`` has its shape and dtype).

        Returns:
            Bytes.
        """
        forward = minimum_bytes(inputs, [output])
        gradients = [t for t in inputs if t.requires_grad]
        # `output` stands for grad_output, which has its shape and dtype.
        backward = minimum_bytes([output, *self.backward_reads(inputs, output)], gradients)
        full = minimum_bytes([*inputs, output], [output, *gradients]) if self.one_pass else forward + backward
        return {"forward": forward, "backward": backward, "full": full}[mode]


# Provider -> the torch.optim keyword that selects its implementation.
OPTIMIZER_PROVIDERS = {
    "fused_ops": {},
    "torch for-loop": {"foreach": False},
    "torch foreach": {"foreach": True},
    "torch fused": {"fused": True},
}


@dataclasses.dataclass(frozen=True)
class OptimizerCase:
    """One optimizer configuration, run by fused_ops and by torch's three implementations.

    Attributes:
        name: what the report calls it.
        class_name: the class in ``fused_ops.optim`` and ``torch.optim``.
        kwargs: constructor arguments shared by every provider.
        state_tensors: tensors per parameter that a step reads and writes besides the
            gradient: the parameter and its state (Adam: p, m, v; amsgrad adds the max;
            SGD with momentum: p and the buffer; plain SGD: p).
        clip_max_norm: when set, every step is preceded by gradient clipping to this norm:
            torch's ``clip_grad_norm_`` for torch's providers, and the fused optimizer's
            own ``clip_grad_norm_`` (norm pass, coefficient applied inside the step).
        fused_kwargs: constructor arguments for fused_ops only (``state_dtype``); torch's
            providers run the same math with their own state.
        state_dtype: dtype of the state tensors besides the parameter (None: the
            parameter's), for the minimum bytes: bf16 moments move half, uint8 codes a
            quarter (their per-256 scales are left out of the minimum).
        torch_class_name: the class torch's providers run when torch has no
            ``class_name`` (AdamW for AdamW8bit); None: ``class_name``.
    """

    name: str
    class_name: str
    kwargs: dict
    state_tensors: int = 3
    clip_max_norm: float | None = None
    fused_kwargs: dict = dataclasses.field(default_factory=dict)
    state_dtype: torch.dtype | None = None
    torch_class_name: str | None = None

    def build(self, provider: str, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The optimizer of ``provider`` (one of :data:`OPTIMIZER_PROVIDERS`) over ``params``."""
        if provider == "fused_ops":
            import fused_ops.optim

            return getattr(fused_ops.optim, self.class_name)(params, **self.kwargs, **self.fused_kwargs)
        torch_class = getattr(torch.optim, self.torch_class_name or self.class_name)
        return torch_class(params, **self.kwargs, **OPTIMIZER_PROVIDERS[provider])

    def step(self, provider: str, optimizer: torch.optim.Optimizer) -> Callable[[], None]:
        """What one training step of this case runs after ``backward()``: (clip, then) step."""
        if self.clip_max_norm is None:
            return optimizer.step
        if provider == "fused_ops":

            def clip_then_step():
                optimizer.clip_grad_norm_(self.clip_max_norm)
                optimizer.step()

            return clip_then_step
        params = [p for group in optimizer.param_groups for p in group["params"]]
        foreach = OPTIMIZER_PROVIDERS[provider].get("foreach", provider == "torch fused")

        def torch_clip_then_step():
            torch.nn.utils.clip_grad_norm_(params, self.clip_max_norm, foreach=foreach)
            optimizer.step()

        return torch_clip_then_step

    def minimum(self, params: Sequence[torch.Tensor]) -> int:
        """Each parameter, gradient and state tensor read once, parameter and state written once;
        clipping must read every gradient once more, for the norm, before the step."""
        reads = 2 + (1 if self.clip_max_norm is not None else 0)  # p and g (and g for the norm)
        total = 0
        for p in params:
            state = p if self.state_dtype is None else torch.empty(p.shape, dtype=self.state_dtype, device="meta")
            moments = [state] * (self.state_tensors - 1)
            total += minimum_bytes([p] * reads + moments, [p, *moments])
        return total


def make_parameters(tensors: int, rows: int, cols: int, dtype: torch.dtype, device="cpu", seed: int = 0):
    """``tensors`` parameters of shape ``(rows, cols)``, each with a gradient."""
    generator = torch.Generator().manual_seed(seed)
    params = []
    for _ in range(tensors):
        param = torch.nn.Parameter(torch.randn(rows, cols, generator=generator).to(dtype=dtype, device=device))
        param.grad = torch.randn(rows, cols, generator=generator).to(dtype=dtype, device=device)
        params.append(param)
    return params


ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
SMOKE = os.environ.get("FUSED_OPS_BENCH_SMOKE") == "1"

if SMOKE:
    SIZES = [(2, 64)]
    BENCH_DTYPES = [torch.float32]
    OPTIMIZER_SIZES = [(2, 1, 64)]  # (tensors, rows, cols)
elif ON_GPU:
    # From launch-bound (one row of 4096) to bandwidth-bound (33.5M elements).
    SIZES = [(1, COLS), (64, COLS), (1024, COLS), (8192, COLS)]
    BENCH_DTYPES = [torch.float32, torch.bfloat16]
    OPTIMIZER_SIZES = [(1, 1, COLS), (16, 16, COLS), (16, 256, COLS)]
else:
    # The interpreter runs a few hundred thousand elements a second: keep CPU runs short.
    SIZES = [(1, COLS), (16, COLS)]
    BENCH_DTYPES = [torch.float32]
    OPTIMIZER_SIZES = [(1, 1, COLS), (16, 4, COLS)]

ROUNDS = 50 if ON_GPU else 3
WARMUP_ROUNDS = 5 if ON_GPU else 1

if ON_GPU:
    FUSED_LABEL = "fused_ops"
    TIMING_NOTE = "GPU: every round ends with torch.cuda.synchronize(); gbps = minimum bytes / median"
elif _dispatch.TRITON_INTERPRETED:
    FUSED_LABEL = "fused_ops(interpreter)"
    TIMING_NOTE = "CPU: fused_ops runs in Triton's interpreter; these are not GPU timings"
else:
    FUSED_LABEL = "fused_ops(eager-fallback)"
    TIMING_NOTE = "CPU: fused_ops runs its eager PyTorch fallback; these are not GPU timings"
PROVIDERS = (FUSED_LABEL, "torch", "torch.compile")
BENCH_OPTIMIZER_PROVIDERS = tuple(FUSED_LABEL if p == "fused_ops" else p for p in OPTIMIZER_PROVIDERS)
# torch.compile takes seconds per graph: the smoke run compiles one op (its forward and
# backward graphs serve all three modes).
SMOKE_COMPILE = "sigmoid"


def op_params(cases: Sequence[OpCase]) -> list:
    """``pytest.param`` rows (case, provider, mode, size, dtype) for a family's op cases."""
    params = []
    for case in cases:
        for provider in PROVIDERS:
            for mode in MODES:
                if SMOKE and provider == "torch.compile" and case.name != SMOKE_COMPILE:
                    continue
                for rows, cols in SIZES:
                    for dtype in BENCH_DTYPES:
                        dtype_name = str(dtype).removeprefix("torch.")
                        name = f"{case.name}-{provider}-{mode}-{rows}x{cols}-{dtype_name}"
                        params.append(pytest.param(case, provider, mode, (rows, cols), dtype, id=name))
    return params


def optimizer_params(cases: Sequence[OptimizerCase]) -> list:
    """``pytest.param`` rows (case, provider, size) for a family's optimizer cases."""
    params = []
    for case in cases:
        for provider in BENCH_OPTIMIZER_PROVIDERS:
            for size in OPTIMIZER_SIZES:
                name = f"{case.name}-{provider}-{size[0]}x{size[1]}x{size[2]}".replace(" ", "_")
                params.append(pytest.param(case, provider, size, id=name))
    return params


@functools.cache
def _compiled(case: OpCase):
    return torch.compile(case.eager, backend="inductor")


def _callable(case: OpCase, provider: str):
    if provider == FUSED_LABEL:
        return case.fused
    if provider == "torch":
        return case.eager
    return _compiled(case)


def time_call(benchmark, run, minimum_bytes: int, elements: int, setup=None, teardown=None) -> None:
    """Time ``run`` with pytest-benchmark, synchronizing on a GPU, and record what it means.

    ``setup`` (untimed) returns ``(args, kwargs)`` for ``run``; ``teardown`` gets them after.
    On a GPU both end with ``torch.cuda.synchronize()``, so a round times exactly the
    kernels ``run`` launched, and ``extra_info["gbps"]`` is minimum bytes ÷ median time.
    """
    benchmark.extra_info.update(timing=TIMING_NOTE, minimum_bytes=minimum_bytes, elements=elements)
    target = run
    if ON_GPU:

        def target(*args, **kwargs):
            run(*args, **kwargs)
            torch.cuda.synchronize()

        if setup is not None:
            unsynchronized_setup = setup

            def setup():
                arguments = unsynchronized_setup()
                torch.cuda.synchronize()
                return arguments

    benchmark.pedantic(target, setup=setup, teardown=teardown, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)
    if ON_GPU and benchmark.enabled:
        median = benchmark.stats.stats.median
        benchmark.extra_info.update(median_s=median, gbps=minimum_bytes / median / 1e9)


def bench_op(benchmark, case: OpCase, provider: str, mode: str, size: tuple[int, int], dtype) -> None:
    """Benchmark one op case in one mode.

    forward: the op on inputs that require grad (a training forward, saving for backward);
    backward: ``output.backward`` of a forward run (untimed) before each round; full: both.
    Gradients are reset to None between rounds, so no accumulation kernel is timed.
    """
    rows, cols = size
    benchmark.group = f"{case.name} {mode} {rows}x{cols} {str(dtype).removeprefix('torch.')}"
    fn = _callable(case, provider)
    inputs = case.inputs(rows, cols, dtype, device=DEVICE)
    leaves = [t for t in inputs if t.requires_grad]
    output = fn(*inputs)  # warm-up: compiles
    grad_output = torch.randn_like(output)

    def clear_grads(*args):
        for leaf in leaves:
            leaf.grad = None

    minimum = case.minimum(mode, inputs, output.detach())
    if mode == "forward":
        time_call(benchmark, lambda: fn(*inputs), minimum, inputs[0].numel())
    elif mode == "backward":
        # A fresh graph each round: torch.compile's backward frees (donates) its buffers,
        # so a retained graph cannot be run twice.
        time_call(
            benchmark,
            lambda out: out.backward(grad_output),
            minimum,
            inputs[0].numel(),
            setup=lambda: ((fn(*inputs),), {}),
            teardown=clear_grads,
        )
    else:
        time_call(
            benchmark, lambda: fn(*inputs).backward(grad_output), minimum, inputs[0].numel(), teardown=clear_grads
        )


def bench_optimizer(benchmark, case: OptimizerCase, provider: str, size: tuple[int, int, int]) -> None:
    """Benchmark one optimizer step (after a first step has created the state)."""
    tensors, rows, cols = size
    benchmark.group = f"{case.name} step {tensors}x{rows}x{cols}"
    params = make_parameters(tensors, rows, cols, torch.float32, device=DEVICE)
    provider = "fused_ops" if provider == FUSED_LABEL else provider
    step = case.step(provider, case.build(provider, params))
    step()
    time_call(benchmark, step, case.minimum(params), sum(p.numel() for p in params))
