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


@pytest.mark.parametrize(("case", "provider", "size"), harness.optimizer_params(CASES))
def test_adam8bit_step(benchmark, case, provider, size):
    harness.bench_optimizer(benchmark, case, provider, size)
