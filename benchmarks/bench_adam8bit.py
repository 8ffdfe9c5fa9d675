"""Benchmarks of one 8-bit Adam/AdamW step: fused_ops' AdamW8bit against torch's fp32 AdamW implementations.

``CASES`` are the family's cases for every instrument (see harness.py). torch has no
8-bit optimizer, so its providers run fp32 AdamW with the same hyperparameters: the
comparison is what the 8-bit state saves (16.06 B per fp32 parameter against 28).
Run with `make bench`.
"""

import harness
import pytest
import torch

CASES = (
    harness.OptimizerCase(
        "AdamW8bit",
        "AdamW8bit",
        {"lr": 1e-3, "weight_decay": 1e-2},
        state_dtype=torch.uint8,
        torch_class_name="AdamW",
    ),
    harness.OptimizerCase("Adam8bit", "Adam8bit", {"lr": 1e-3}, state_dtype=torch.uint8, torch_class_name="Adam"),
)

# On the CPU the interpreter runs an 8-bit step at ~10K elements per second (measured: 1.6 s
# for 4 x 4096 on 2 busy cores; decoding and encoding the code map per element), so
# harness' CPU sizes (up to 16 x 4 x 4096, 25 s a step) would take minutes: one and four
# 4096-element tensors keep this suite near a minute (65 s measured). GPU (and smoke)
# sizes are harness'.
CPU_SIZES = [(1, 1, harness.COLS), (4, 1, harness.COLS)]


def _params() -> list:
    if harness.ON_GPU or harness.SMOKE:
        return harness.optimizer_params(CASES)
    return [
        pytest.param(case, provider, size, id=f"{case.name}-{provider}-{'x'.join(map(str, size))}".replace(" ", "_"))
        for case in CASES
        for provider in harness.BENCH_OPTIMIZER_PROVIDERS
        for size in CPU_SIZES
    ]


@pytest.mark.parametrize(("case", "provider", "size"), _params())
def test_adam8bit_step(benchmark, case, provider, size):
    harness.bench_optimizer(benchmark, case, provider, size)
