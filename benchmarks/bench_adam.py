"""Benchmarks of one Adam/AdamW step: fused_ops against torch's for-loop, foreach and fused implementations.

``CASES`` are the family's cases for every instrument (see harness.py). Parameters are
``tensors`` tensors of ``rows x cols`` float32 (harness.OPTIMIZER_SIZES). Run with `make bench`.
"""

import harness
import pytest
import torch

CASES = (
    harness.OptimizerCase("Adam", "Adam", {"lr": 1e-3}),
    harness.OptimizerCase("AdamW", "AdamW", {"lr": 1e-3, "weight_decay": 1e-2}),
    harness.OptimizerCase("Adam (amsgrad)", "Adam", {"lr": 1e-3, "amsgrad": True}, state_tensors=4),
    # bf16 moments (fused_ops only; torch's providers keep fp32 moments): 20 B per fp32 parameter.
    harness.OptimizerCase(
        "AdamW (bf16 moments)",
        "AdamW",
        {"lr": 1e-3, "weight_decay": 1e-2},
        fused_kwargs={"state_dtype": torch.bfloat16},
        state_dtype=torch.bfloat16,
    ),
)


@pytest.mark.parametrize(("case", "provider", "size"), harness.optimizer_params(CASES))
def test_adam_step(benchmark, case, provider, size):
    harness.bench_optimizer(benchmark, case, provider, size)
