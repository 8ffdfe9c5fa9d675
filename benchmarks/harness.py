"""What every benchmark suite shares: sizes, providers, modes, and one way to time a call.

The cases (inputs, fused call, eager call, minimum bytes) come from the registry in
:mod:`fused_ops.report`, the same one the traffic report and its tests use.

- On a GPU: every round (and every untimed setup) ends with ``torch.cuda.synchronize()``,
  and ``extra_info["gbps"]`` is the minimum bytes ÷ the median round (effective bandwidth).
- On a CPU: the fused provider runs Triton's interpreter (or the eager fallback), so its
  timings say nothing about a GPU; ``extra_info["timing"]`` says so, and no GB/s is recorded.
- ``FUSED_OPS_BENCH_SMOKE=1`` (used by ``tests/test_benchmarks.py`` with
  ``--benchmark-disable``): tiny sizes, one run each, so the suites cannot rot.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch

from fused_ops import _dispatch, report

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
SMOKE = os.environ.get("FUSED_OPS_BENCH_SMOKE") == "1"

if SMOKE:
    SIZES = [(2, 64)]
    DTYPES = [torch.float32]
    OPTIMIZER_SIZES = [(2, 1, 64)]  # (tensors, rows, cols)
elif ON_GPU:
    # From launch-bound (one row of 4096) to bandwidth-bound (33.5M elements).
    SIZES = [(1, 4096), (64, 4096), (1024, 4096), (8192, 4096)]
    DTYPES = [torch.float32, torch.bfloat16]
    OPTIMIZER_SIZES = [(1, 1, 4096), (16, 16, 4096), (16, 256, 4096)]
else:
    # The interpreter runs a few hundred thousand elements a second: keep CPU runs short.
    SIZES = [(1, 4096), (16, 4096)]
    DTYPES = [torch.float32]
    OPTIMIZER_SIZES = [(1, 1, 4096), (16, 4, 4096)]

MODES = ("forward", "backward", "full")
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
OPTIMIZER_PROVIDERS = tuple(FUSED_LABEL if p == "fused_ops" else p for p in report.OPTIMIZER_PROVIDERS)
# torch.compile takes seconds per graph: the smoke run compiles one op (its forward and
# backward graphs serve all three modes).
SMOKE_COMPILE = "sigmoid"


def op_params(family: str) -> list:
    """``pytest.param`` rows (case, provider, mode, size, dtype) for one op family."""
    params = []
    for case in (c for c in report.OP_CASES if c.family == family):
        for provider in PROVIDERS:
            for mode in MODES:
                if SMOKE and provider == "torch.compile" and case.name != SMOKE_COMPILE:
                    continue
                for rows, cols in SIZES:
                    for dtype in DTYPES:
                        dtype_name = str(dtype).removeprefix("torch.")
                        name = f"{case.name}-{provider}-{mode}-{rows}x{cols}-{dtype_name}"
                        params.append(pytest.param(case, provider, mode, (rows, cols), dtype, id=name))
    return params


def optimizer_params() -> list:
    """``pytest.param`` rows (case, provider, size) for the optimizer suite."""
    params = []
    for case in report.OPTIMIZER_CASES:
        for provider in OPTIMIZER_PROVIDERS:
            for size in OPTIMIZER_SIZES:
                name = f"{case.name}-{provider}-{size[0]}x{size[1]}x{size[2]}".replace(" ", "_")
                params.append(pytest.param(case, provider, size, id=name))
    return params


@functools.cache
def _compiled(case: report.OpCase):
    return torch.compile(case.eager, backend="inductor")


def _callable(case: report.OpCase, provider: str):
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


def bench_op(benchmark, case: report.OpCase, provider: str, mode: str, size: tuple[int, int], dtype) -> None:
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


def bench_optimizer(benchmark, case: report.OptimizerCase, provider: str, size: tuple[int, int, int]) -> None:
    """Benchmark one optimizer step (after a first step has created the state)."""
    tensors, rows, cols = size
    benchmark.group = f"{case.name} step {tensors}x{rows}x{cols}"
    params = report.make_parameters(tensors, rows, cols, torch.float32, device=DEVICE)
    optimizer = case.build("fused_ops" if provider == FUSED_LABEL else provider, params)
    optimizer.step()
    time_call(benchmark, optimizer.step, case.minimum(params), sum(p.numel() for p in params))
