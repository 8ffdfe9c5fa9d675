"""Benchmarks of gradient clipping followed by a step: fused_ops' clip inside the step against torch's.

torch's providers run ``torch.nn.utils.clip_grad_norm_`` (a norm pass, then a pass that
reads and rewrites every gradient) and then their step; fused_ops runs the optimizer's
``clip_grad_norm_`` (one norm pass, the coefficient left on the device) and a step that
scales each gradient as it reads it. ``CASES`` are the family's cases for every instrument
(see harness.py). Run with `make bench`.
"""

import harness
import pytest

CASES = (
    # The step's 28 B plus one more read of each gradient for the norm: 32 B per fp32 parameter.
    harness.OptimizerCase("AdamW + clip", "AdamW", {"lr": 1e-3, "weight_decay": 1e-2}, clip_max_norm=1.0),
    # 20 B + 4 B: 24 B.
    harness.OptimizerCase(
        "SGD (momentum) + clip", "SGD", {"lr": 1e-2, "momentum": 0.9}, state_tensors=2, clip_max_norm=1.0
    ),
)


@pytest.mark.parametrize(("case", "provider", "size"), harness.optimizer_params(CASES))
def test_clip_then_step(benchmark, case, provider, size):
    harness.bench_optimizer(benchmark, case, provider, size)
