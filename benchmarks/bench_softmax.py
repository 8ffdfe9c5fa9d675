"""Benchmarks of softmax and log_softmax over the last dim: fused_ops against eager torch and torch.compile.

Modes forward, backward and full; sizes and dtypes from harness.py (small on a CPU, where
the fused path runs in Triton's interpreter). Run with `make bench`.
"""

import harness
import pytest


@pytest.mark.parametrize(("case", "provider", "mode", "size", "dtype"), harness.op_params("softmax"))
def test_softmax(benchmark, case, provider, mode, size, dtype):
    harness.bench_op(benchmark, case, provider, mode, size, dtype)
