"""Benchmarks of softmax and log_softmax over the last dim: fused_ops against eager torch and torch.compile.

``CASES`` are the family's cases for every instrument (see harness.py). Modes forward,
backward and full; sizes and dtypes from harness.py (small on a CPU, where the fused path
runs in Triton's interpreter). Run with `make bench`.
"""

import harness
import pytest
import torch

import fused_ops

CASES = (
    harness.OpCase(
        "softmax",
        "softmax(x, dim=-1)",
        harness.one_input,
        lambda x: fused_ops.softmax(x, dim=-1),
        lambda x: torch.softmax(x, dim=-1),
        harness.saved_output,
    ),
    harness.OpCase(
        "log_softmax",
        "log_softmax(x, dim=-1)",
        harness.one_input,
        lambda x: fused_ops.log_softmax(x, dim=-1),
        lambda x: torch.log_softmax(x, dim=-1),
        harness.saved_output,
    ),
)


@pytest.mark.parametrize(("case", "provider", "mode", "size", "dtype"), harness.op_params(CASES))
def test_softmax(benchmark, case, provider, mode, size, dtype):
    harness.bench_op(benchmark, case, provider, mode, size, dtype)
