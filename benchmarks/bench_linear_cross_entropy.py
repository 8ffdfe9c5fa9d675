"""Benchmarks of linear_cross_entropy (mean): fused_ops against eager torch, torch's chunked
path (``options=LinearCrossEntropyOptions()``) and torch.compile of the eager composition.

Modes forward and full (forward + backward for input and linear weight). On a CPU the
fused path runs in Triton's interpreter, so sizes stay tiny there; memory, bytes and
FLOPs at the issue's size come from benchmarks/linear_cross_entropy_memory.py. Run with
`make bench`.
"""

import harness
import pytest
import torch
import torch.nn.functional as F

import fused_ops

# No traffic-report case: the report extrapolates traffic measured at 1, 2 and 4 rows as
# affine in the row count, and this op re-reads the weight once per 64-row block, so the
# extrapolation would be wrong. Its bytes, FLOPs and memory at full size come from
# benchmarks/linear_cross_entropy_memory.py (bytes checked against KernelTrace in its tests).
CASES = ()

if harness.SMOKE:
    SHAPES = [(16, 32, 256)]  # (N, D, V)
elif harness.ON_GPU:
    SHAPES = [(4096, 256, 32000), (8192, 4096, 128256)]
else:
    SHAPES = [(64, 64, 1024)]
DTYPES = [torch.float32] if not harness.ON_GPU or harness.SMOKE else [torch.float32, torch.bfloat16]
# torch.compile takes seconds per graph: the smoke run leaves it to the other suites.
PROVIDERS = (harness.FUSED_LABEL, "torch", "torch chunked") + (() if harness.SMOKE else ("torch.compile",))


def _eager(x, w, target):
    return F.linear_cross_entropy(x, w, target)


_compiled = None


def _callable(provider):
    global _compiled
    if provider == harness.FUSED_LABEL:
        return fused_ops.linear_cross_entropy
    if provider == "torch":
        return _eager
    if provider == "torch chunked":
        options = torch.nn.LinearCrossEntropyOptions()
        return lambda x, w, target: F.linear_cross_entropy(x, w, target, options=options)
    if _compiled is None:
        _compiled = torch.compile(_eager)
    return _compiled


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", ["forward", "full"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_cross_entropy(benchmark, provider, mode, shape, dtype):
    n, d, v = shape
    benchmark.group = f"linear_cross_entropy {mode} {n}x{d}x{v} {str(dtype).removeprefix('torch.')}"
    fn = _callable(provider)
    x = torch.randn(n, d, device=harness.DEVICE, dtype=dtype, requires_grad=True)
    w = (torch.randn(v, d, device=harness.DEVICE) / d**0.5).to(dtype).requires_grad_()
    target = torch.randint(0, v, (n,), device=harness.DEVICE)
    fn(x, w, target)  # warm-up: compiles
    element = x.element_size()
    # Read x and W once (and write their gradients once in the backward).
    minimum = element * (n * d + v * d) * (1 if mode == "forward" else 3)

    def clear_grads(*args):
        x.grad = w.grad = None

    if mode == "forward":
        harness.time_call(benchmark, lambda: fn(x, w, target), minimum, n * v)
    else:
        harness.time_call(benchmark, lambda: fn(x, w, target).backward(), minimum, n * v, teardown=clear_grads)
