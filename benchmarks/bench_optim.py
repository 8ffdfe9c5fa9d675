"""Benchmarks of one Adam/AdamW step: fused_ops against torch's for-loop, foreach and fused implementations.

Parameters are ``tensors`` tensors of ``rows x cols`` float32 (harness.OPTIMIZER_SIZES).
Run with `make bench`.
"""

import harness
import pytest


@pytest.mark.parametrize(("case", "provider", "size"), harness.optimizer_params())
def test_optimizer_step(benchmark, case, provider, size):
    harness.bench_optimizer(benchmark, case, provider, size)
