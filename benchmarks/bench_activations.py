"""Benchmarks of sigmoid, tanh, relu, gelu (erf and tanh forms) and silu: fused_ops against eager torch
and torch.compile.

``CASES`` are the family's cases for every instrument (see harness.py). Modes forward,
backward and full; sizes and dtypes from harness.py (small on a CPU, where the fused path
runs in Triton's interpreter). Run with `make bench`.
"""

import harness
import pytest
import torch
import torch.nn.functional as F

import fused_ops

CASES = (
    harness.OpCase(
        "sigmoid", "sigmoid(x)", harness.one_input, lambda x: fused_ops.sigmoid(x), torch.sigmoid, harness.saved_output
    ),
    harness.OpCase("tanh", "tanh(x)", harness.one_input, lambda x: fused_ops.tanh(x), torch.tanh, harness.saved_output),
    harness.OpCase("relu", "relu(x)", harness.one_input, lambda x: fused_ops.relu(x), torch.relu, harness.saved_output),
    # GELU and SiLU backward recompute from the saved input: read grad_output and input.
    harness.OpCase("gelu", "gelu(x)", harness.one_input, lambda x: fused_ops.gelu(x), F.gelu, harness.all_inputs),
    harness.OpCase(
        "gelu_tanh",
        "gelu(x, approximate='tanh')",
        harness.one_input,
        lambda x: fused_ops.gelu(x, approximate="tanh"),
        lambda x: F.gelu(x, approximate="tanh"),
        harness.all_inputs,
    ),
    harness.OpCase("silu", "silu(x)", harness.one_input, lambda x: fused_ops.silu(x), F.silu, harness.all_inputs),
)


@pytest.mark.parametrize(("case", "provider", "mode", "size", "dtype"), harness.op_params(CASES))
def test_activations(benchmark, case, provider, mode, size, dtype):
    harness.bench_op(benchmark, case, provider, mode, size, dtype)
