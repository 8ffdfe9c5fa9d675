"""fused_ops.optim.clip_grad_norm_ against torch.nn.utils.clip_grad_norm_, and the fused clip + step.

Shapes: (3, 4) one partial block; (2100,) two full blocks and a tail; (1,) one element.
"""

import copy
import math

import pytest
import torch
from helpers import no_host_sync

from fused_ops.optim import SGD, AdamW, clip_grad_norm_
from fused_ops.profiling import KernelTrace

SHAPES = [(3, 4), (2100,), (1,)]


def grads_pair(shapes=SHAPES, dtypes=(torch.float32,), scale=1.0):
    ours, theirs = [], []
    for index, shape in enumerate(shapes):
        dtype = dtypes[index % len(dtypes)]
        p = torch.nn.Parameter(torch.randn(shape, dtype=dtype))
        q = copy.deepcopy(p)
        grad = torch.randn(shape, dtype=dtype) * scale
        p.grad, q.grad = grad.clone(), grad.clone()
        ours.append(p)
        theirs.append(q)
    return ours, theirs


# torch's own test configurations (test/nn/test_clip_grad.py): norm types 1, 2, inf and
# others, foreach on and off, max_norm above and below the norm.
@pytest.mark.parametrize("norm_type", [1.0, 2.0, 4.0, math.inf])
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("max_norm", [1.25, 1e4])
def test_matches_torch(norm_type, foreach, max_norm, kernel_launches):
    ours, theirs = grads_pair()
    total = clip_grad_norm_(ours, max_norm, norm_type, foreach=foreach)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type, foreach=foreach)
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-6)
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)
    # One norm launch and one scaling launch for one (device, dtype).
    assert kernel_launches.launch_count("grad_norm_kernel") == kernel_launches.launch_count("grad_scale_kernel") == 1


def test_mixed_dtypes_none_and_empty_grads(kernel_launches):
    ours, theirs = grads_pair(dtypes=(torch.float32, torch.float64, torch.float16))
    ours.append(torch.nn.Parameter(torch.randn(3)))  # no grad
    theirs.append(copy.deepcopy(ours[-1]))
    total = clip_grad_norm_(ours, 0.5)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 0.5)
    assert total.dtype == expected.dtype
    torch.testing.assert_close(total, expected, rtol=1e-3, atol=1e-5)
    for p, q in zip(ours, theirs, strict=True):
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=2e-3, atol=1e-4)
    assert kernel_launches.launch_count("grad_norm_kernel") == 3
    # No gradients at all: torch's 0.
    assert clip_grad_norm_([torch.nn.Parameter(torch.randn(2))], 1.0).item() == 0.0
    assert clip_grad_norm_([], 1.0).item() == 0.0


def test_no_host_sync_and_error_if_nonfinite():
    ours, _ = grads_pair()
    with no_host_sync():
        clip_grad_norm_(ours, 1.0)
    ours[0].grad[0, 0] = math.inf
    before = [p.grad.clone() for p in ours]
    with pytest.raises(RuntimeError, match="is non-finite, so it cannot be clipped"):
        clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    assert all(torch.equal(p.grad, b) for p, b in zip(ours, before, strict=True)), "grads untouched on error"
    assert clip_grad_norm_(ours, 1.0).isinf()


@pytest.mark.parametrize("name", ["AdamW", "SGD"])
def test_fused_clip_and_step_match_clip_then_torchs_step(name, kernel_launches):
    """optimizer.clip_grad_norm_ + step() == torch's clip_grad_norm_ + step(), in 2 launches, grads kept."""
    kwargs = {"lr": 0.05, "weight_decay": 0.1} | ({"momentum": 0.9} if name == "SGD" else {"amsgrad": True})
    ours_params, theirs_params = grads_pair()
    ours = {"AdamW": AdamW, "SGD": SGD}[name](ours_params, **kwargs)
    theirs = getattr(torch.optim, name)(theirs_params, **kwargs)
    for _ in range(4):
        for p, q in zip(ours_params, theirs_params, strict=True):
            grad = torch.randn_like(p) * 3
            p.grad, q.grad = grad.clone(), grad.clone()
        kept = [p.grad.clone() for p in ours_params]
        kernel_launches.clear()
        total = ours.clip_grad_norm_(1.0)
        ours.step()
        assert kernel_launches.launch_count() == 2
        expected = torch.nn.utils.clip_grad_norm_(theirs_params, 1.0)
        theirs.step()
        torch.testing.assert_close(total, expected)
        assert all(torch.equal(p.grad, k) for p, k in zip(ours_params, kept, strict=True)), "grads not rewritten"
        for p, q in zip(ours_params, theirs_params, strict=True):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
    # The coefficient is used once: a step without clip_grad_norm_ does not clip.
    assert ours._pending_clip is None


@pytest.mark.parametrize(("name", "budget"), [("AdamW", 32.05), ("SGD", 24.05)])
@pytest.mark.interpreter_only  # counts bytes
def test_fused_clip_traffic(name, budget):
    """clip + AdamW: 4 B (norm) + 28 B (step); clip + SGD with momentum: 4 + 20 B per fp32 parameter."""
    n = 16384
    p = torch.nn.Parameter(torch.randn(n))
    optimizer = AdamW([p]) if name == "AdamW" else SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.randn(n)
    optimizer.step()  # creates the state (and SGD's buffer, whose first step moves less)
    p.grad = torch.randn(n)
    with KernelTrace() as trace:
        optimizer.clip_grad_norm_(1.0)
        optimizer.step()
    assert trace.launch_count() == 2
    assert trace.bytes_moved / n <= budget


def test_fused_clip_composes_with_grad_scaler(kernel_launches):
    """The norm of the unscaled gradients; the step unscales, clips, and skips on inf."""
    torch.manual_seed(1)
    model_ours = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model_torch = copy.deepcopy(model_ours)
    ours = AdamW(model_ours.parameters(), lr=1e-2)
    theirs = torch.optim.AdamW(model_torch.parameters(), lr=1e-2)
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**10) for _ in range(2)]
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    for step in range(4):
        inf_step = step == 2
        ours.zero_grad()
        scalers[0].scale(torch.nn.functional.mse_loss(model_ours(x), y)).backward()
        if inf_step:
            next(model_ours.parameters()).grad[0, 0] = math.inf
        total = ours.clip_grad_norm_(0.1, scaler=scalers[0])
        scalers[0].step(ours)
        scalers[0].update()
        theirs.zero_grad()
        scalers[1].scale(torch.nn.functional.mse_loss(model_torch(x), y)).backward()
        if inf_step:
            next(model_torch.parameters()).grad[0, 0] = math.inf
        scalers[1].unscale_(theirs)
        expected = torch.nn.utils.clip_grad_norm_(model_torch.parameters(), 0.1)
        scalers[1].step(theirs)
        scalers[1].update()
        assert bool(ours.last_step_skipped) == inf_step
        if not inf_step:
            torch.testing.assert_close(total, expected)
        for p, q in zip(model_ours.parameters(), model_torch.parameters(), strict=True):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)


def aot_workload():
    """Every norm type, dtype, and the fused path with and without a grad scale."""
    for norm_type in (1.0, 2.0, 3.0, math.inf):
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            ours, _ = grads_pair(shapes=[(5,)], dtypes=(dtype,))
            clip_grad_norm_(ours, 1.0, norm_type)
    ours, _ = grads_pair(shapes=[(5,)])
    optimizer = AdamW(ours)
    optimizer.clip_grad_norm_(1.0, scaler=torch.amp.GradScaler("cpu"))
    optimizer.step()
    optimizer = SGD(ours, momentum=0.9)
    optimizer.clip_grad_norm_(1.0)
    optimizer.step()
