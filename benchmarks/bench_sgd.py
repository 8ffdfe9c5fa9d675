"""Benchmarks of one SGD step: fused_ops against torch's for-loop, foreach and fused implementations.

``CASES`` are the family's cases for every instrument (see harness.py). Parameters are
``tensors`` tensors of ``rows x cols`` float32 (harness.OPTIMIZER_SIZES). Run with `make bench`.
"""

import harness
import pytest

CASES = (
    # Read p, g, buffer; write p, buffer: 20 B per fp32 parameter.
    harness.OptimizerCase("SGD (momentum)", "SGD", {"lr": 1e-2, "momentum": 0.9}, state_tensors=2),
    # Read p, g; write p: 12 B.
    harness.OptimizerCase("SGD", "SGD", {"lr": 1e-2}, state_tensors=1),
)


@pytest.mark.parametrize(("case", "provider", "size"), harness.optimizer_params(CASES))
def test_sgd_step(benchmark, case, provider, size):
    harness.bench_optimizer(benchmark, case, provider, size)
