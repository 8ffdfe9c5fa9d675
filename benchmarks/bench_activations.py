"""Benchmarks of sigmoid, tanh and relu: fused_ops against eager torch and torch.compile.

Modes forward, backward and full; sizes and dtypes from harness.py (small on a CPU, where
the fused path runs in Triton's interpreter). Run with `make bench`.
"""

import harness
import pytest


@pytest.mark.parametrize(("case", "provider", "mode", "size", "dtype"), harness.op_params("activations"))
def test_activations(benchmark, case, provider, mode, size, dtype):
    harness.bench_op(benchmark, case, provider, mode, size, dtype)
