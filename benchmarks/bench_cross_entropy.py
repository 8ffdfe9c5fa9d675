"""Benchmarks of cross_entropy (mean reduction): fused_ops against eager torch and torch.compile.

``CASES`` are the family's cases for every instrument (see harness.py). Modes forward,
backward and full; sizes and dtypes from harness.py (small on a CPU, where the fused path
runs in Triton's interpreter). Run with `make bench`.
"""

import harness
import pytest
import torch
import torch.nn.functional as F

import fused_ops


def logits_and_labels(rows, cols, dtype, generator):
    """``(rows, cols)`` logits that require grad and ``rows`` class indices in ``[0, cols)``."""
    logits = harness.randn(rows, cols, dtype, generator).requires_grad_()
    return logits, torch.randint(0, cols, (rows,), generator=generator)


CASES = (
    harness.OpCase(
        "cross_entropy",
        "cross_entropy(logits, labels) (mean)",
        logits_and_labels,
        lambda logits, labels: fused_ops.cross_entropy(logits, labels),
        F.cross_entropy,
        harness.all_inputs,
        one_pass=True,
    ),
)


@pytest.mark.parametrize(("case", "provider", "mode", "size", "dtype"), harness.op_params(CASES))
def test_cross_entropy(benchmark, case, provider, mode, size, dtype):
    harness.bench_op(benchmark, case, provider, mode, size, dtype)
