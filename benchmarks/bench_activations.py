"""Benchmarks of sigmoid, tanh and relu: fused_ops against eager torch and torch.compile.

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
        "sigmoid", "sigmoid(x)", harness.one_input, lambda x: fused_ops.sigmoid(x), torch.sigmoid, harness.saved_output
    ),
    harness.OpCase("tanh", "tanh(x)", harness.one_input, lambda x: fused_ops.tanh(x), torch.tanh, harness.saved_output),
    harness.OpCase("relu", "relu(x)", harness.one_input, lambda x: fused_ops.relu(x), torch.relu, harness.saved_output),
)


@pytest.mark.parametrize(("case", "provider", "mode", "size", "dtype"), harness.op_params(CASES))
def test_activations(benchmark, case, provider, mode, size, dtype):
    harness.bench_op(benchmark, case, provider, mode, size, dtype)
