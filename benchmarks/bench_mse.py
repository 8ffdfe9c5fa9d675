"""Benchmarks of mse_loss (mean reduction): fused_ops against eager torch and torch.compile.

``CASES`` are the family's cases for every instrument (see harness.py). Modes forward,
backward and full; sizes and dtypes from harness.py (small on a CPU, where the fused path
runs in Triton's interpreter). Run with `make bench`.
"""

import harness
import pytest
import torch.nn.functional as F

import fused_ops


def input_and_target(rows, cols, dtype, generator):
    """An input that requires grad and a target, both ``(rows, cols)``."""
    return harness.randn(rows, cols, dtype, generator).requires_grad_(), harness.randn(rows, cols, dtype, generator)


CASES = (
    harness.OpCase(
        "mse_loss",
        "mse_loss(x, target) (mean)",
        input_and_target,
        lambda x, target: fused_ops.mse_loss(x, target),
        F.mse_loss,
        harness.all_inputs,
        one_pass=True,
    ),
)


@pytest.mark.parametrize(("case", "provider", "mode", "size", "dtype"), harness.op_params(CASES))
def test_mse(benchmark, case, provider, mode, size, dtype):
    harness.bench_op(benchmark, case, provider, mode, size, dtype)
