"""Adam/AdamW with bf16 moments (``state_dtype=torch.bfloat16``), through the Triton kernel.

The oracle is the eager reference ``adam_step_ref`` run on bf16 moment tensors: it
computes in fp32 and rounds the moments to bf16 as it stores them, as the kernel does,
so the two agree to bf16 rounding. Against torch's fp32 AdamW the difference is the
moments' rounding, bounded here by a looser tolerance.
"""

import copy
import io
import math

import pytest
import torch

from fused_ops import reference
from fused_ops.optim import Adam, AdamW
from fused_ops.profiling import KernelTrace

BF16 = torch.bfloat16
STEPS = 10
SHAPES = [(1,), (1500,), (3, 4, 5)]  # one element, two blocks (the second partial), 3-D


def _params(shapes=SHAPES, dtype=torch.float32):
    return [torch.randn(shape, dtype=dtype).requires_grad_() for shape in shapes]


def _clones(params):
    return [p.detach().clone().requires_grad_() for p in params]


def _reference_step(params, states, group, grad_scale=None, found_inf=None):
    """adam_step_ref over the given state dicts (bf16 moments stay bf16 tensors)."""
    reference.adam_step_ref(
        [p.detach() for p in params],
        [p.grad for p in params],
        [s["exp_avg"] for s in states],
        [s["exp_avg_sq"] for s in states],
        [s.get("max_exp_avg_sq") for s in states],
        [s["step"] for s in states],
        lr=group["lr"],
        beta1=group["betas"][0],
        beta2=group["betas"][1],
        eps=group["eps"],
        weight_decay=group["weight_decay"],
        amsgrad=group["amsgrad"],
        maximize=group["maximize"],
        decoupled_weight_decay=group["decoupled_weight_decay"],
        grad_scale=grad_scale,
        found_inf=found_inf,
    )


def _new_states(params, amsgrad, dtype=BF16):
    states = []
    for p in params:
        state = {
            "step": torch.zeros((), dtype=torch.float32),
            "exp_avg": torch.zeros_like(p, dtype=dtype),
            "exp_avg_sq": torch.zeros_like(p, dtype=dtype),
        }
        if amsgrad:
            state["max_exp_avg_sq"] = torch.zeros_like(p, dtype=dtype)
        states.append(state)
    return states


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (AdamW, {}),
        (AdamW, {"amsgrad": True, "weight_decay": 0.1, "lr": 1e-2}),
        (Adam, {"weight_decay": 0.1, "maximize": True}),
        (AdamW, {"lr": torch.tensor(1e-2), "betas": (torch.tensor(0.9), torch.tensor(0.99))}),
    ],
)
def test_bf16_moments_match_the_reference_of_the_same_scheme(cls, kwargs, kernel_launches):
    params = _params()
    ref_params = _clones(params)
    optimizer = cls(params, state_dtype=BF16, **copy.deepcopy(kwargs))
    group = optimizer.param_groups[0]
    states = _new_states(ref_params, group["amsgrad"])
    for _ in range(STEPS):
        for p, q in zip(params, ref_params, strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        optimizer.step()
        _reference_step(ref_params, states, group)
    assert kernel_launches.launch_count("adam_kernel") == STEPS
    for p, q, state in zip(params, ref_params, states, strict=True):
        ours = optimizer.state[p]
        assert ours["exp_avg"].dtype == ours["exp_avg_sq"].dtype == BF16
        assert ours["step"].item() == STEPS
        # fp32 arithmetic in another order (FMA) can round a moment to the neighbouring
        # bf16 value (2^-8 relative): the update then differs by up to lr * 2^-8 there.
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-4)
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if key in state:
                # Both round the same fp32 value to bf16; at most one bf16 ulp apart.
                torch.testing.assert_close(ours[key].float(), state[key].float(), rtol=2**-7, atol=1e-30)


def test_bf16_moments_stay_close_to_torchs_fp32_adamw():
    """30 steps: bf16 moments move the parameters within 2e-3 of torch's fp32 AdamW (lr 1e-2)."""
    params = _params([(64, 32)])
    theirs = _clones(params)
    ours = AdamW(params, lr=1e-2, state_dtype=BF16)
    torch_optimizer = torch.optim.AdamW(theirs, lr=1e-2)
    for _ in range(30):
        grad = torch.randn_like(params[0])
        params[0].grad, theirs[0].grad = grad, grad.clone()
        ours.step()
        torch_optimizer.step()
    difference = (params[0] - theirs[0]).abs().max().item()
    assert difference < 2e-3
    # ... and bf16 moments are not fp32 ones: the rounding shows.
    assert difference > 0


@pytest.mark.parametrize(("amsgrad", "fp32_bytes", "bf16_bytes"), [(False, 20, 14), (True, 24, 18)])
@pytest.mark.interpreter_only  # counts bytes
def test_traffic_is_20_bytes_per_fp32_parameter(amsgrad, fp32_bytes, bf16_bytes):
    """fp32 p (read+write 8) + g (4) + bf16 m and v (read+write 8): 20 B; amsgrad +4.

    With bf16 parameters and gradients: 4 + 2 + 8 = 14 B (amsgrad 18). On top, per
    program, the table entries counted in test_adam's traffic test (168 B, 176 with
    amsgrad) and the 4-byte step store.
    """
    for dtype, per_element in ((torch.float32, fp32_bytes), (BF16, bf16_bytes)):
        params = [torch.nn.Parameter(torch.randn(n, dtype=dtype)) for n in (1000, 3000, 5)]
        optimizer = AdamW(params, amsgrad=amsgrad, state_dtype=BF16)
        for p in params:
            p.grad = torch.randn_like(p)
        numel = sum(p.numel() for p in params)
        with KernelTrace() as trace:
            optimizer.step()
        assert trace.launch_count("adam_kernel") == trace.launch_count() == 1
        table_bytes = (176 if amsgrad else 168) * len(params) + 4 * len(params)
        assert trace.bytes_moved == per_element * numel + table_bytes
        assert trace.bytes_moved / numel == pytest.approx(per_element, abs=0.2)


def test_persistent_state_is_4_bytes_per_parameter():
    """fp32 AdamW keeps 8 B of moments per parameter, bf16 moments 4 (+ one 4-byte step per tensor)."""
    sizes = (1000, 3000, 5)

    def state_bytes(**kwargs):
        params = [torch.nn.Parameter(torch.randn(n)) for n in sizes]
        optimizer = AdamW(params, **kwargs)
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer.step()
        moments = sum(
            t.numel() * t.element_size() for s in optimizer.state.values() for k, t in s.items() if k != "step"
        )
        return moments / sum(sizes)

    assert state_bytes() == 8
    assert state_bytes(state_dtype=BF16) == 4
    assert state_bytes(state_dtype=BF16, amsgrad=True) == 6


def test_groups_with_different_state_dtypes_launch_once_each(kernel_launches):
    fp32_moments, bf16_moments = _params([(10,), (3,)]), _params([(7,), (2, 2)])
    optimizer = AdamW([{"params": fp32_moments}, {"params": bf16_moments, "state_dtype": BF16}])
    for p in fp32_moments + bf16_moments:
        p.grad = torch.randn_like(p)
    optimizer.step()
    assert kernel_launches.launch_count("adam_kernel") == 2
    assert {optimizer.state[p]["exp_avg"].dtype for p in fp32_moments} == {torch.float32}
    assert {optimizer.state[p]["exp_avg"].dtype for p in bf16_moments} == {BF16}


def test_fp32_moments_for_bf16_parameters(kernel_launches):
    params = _params(dtype=BF16)
    ref_params = _clones(params)
    optimizer = AdamW(params, state_dtype=torch.float32)
    states = _new_states(ref_params, False, torch.float32)
    for _ in range(3):
        for p, q in zip(params, ref_params, strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        optimizer.step()
        _reference_step(ref_params, states, optimizer.param_groups[0])
    for p, q, state in zip(params, ref_params, states, strict=True):
        assert optimizer.state[p]["exp_avg"].dtype == torch.float32
        torch.testing.assert_close(p, q, rtol=0, atol=0)
        torch.testing.assert_close(optimizer.state[p]["exp_avg_sq"], state["exp_avg_sq"], rtol=1e-6, atol=1e-12)


def test_grad_scale_and_found_inf_with_bf16_moments(kernel_launches):
    params = _params([(20,)])
    ref_params = _clones(params)
    optimizer = AdamW(params, lr=1e-2, state_dtype=BF16, amsgrad=True)
    states = _new_states(ref_params, True)
    optimizer.grad_scale = torch.tensor(4.0)
    for found in (0.0, 1.0, 0.0):
        optimizer.found_inf = torch.tensor(found)
        params[0].grad = torch.randn(20) * 4
        ref_params[0].grad = params[0].grad.clone()
        before = params[0].detach().clone()
        optimizer.step()
        _reference_step(ref_params, states, optimizer.param_groups[0], torch.tensor(4.0), torch.tensor(found))
        assert bool(optimizer.last_step_skipped) == (found != 0)
        assert torch.equal(params[0], before) == (found != 0)
        torch.testing.assert_close(params[0], ref_params[0], rtol=1e-5, atol=1e-6)
    assert optimizer.state[params[0]]["step"].item() == 2
    assert kernel_launches.launch_count("adam_kernel") == 3


def _train(optimizer, params, steps, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()


def _saved(state_dict):
    """The state_dict after torch.save and torch.load (what a checkpoint holds)."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_state_dict_round_trips_and_loads_into_torchs_adamw(kernel_launches):
    params = _params([(40,), (3, 5)])
    ours = AdamW(params, lr=1e-2, amsgrad=True, state_dtype=BF16)
    _train(ours, params, 3, seed=0)
    saved = _saved(ours.state_dict())
    assert saved["state"][0]["exp_avg"].dtype == BF16 and saved["param_groups"][0]["state_dtype"] == BF16

    # Ours -> ours: the same bf16 state, and training continues identically.
    again_params = _clones(params)
    again = AdamW(again_params, lr=1e-2, amsgrad=True)  # state_dtype comes with the state_dict
    again.load_state_dict(saved)
    for p, q in zip(params, again_params, strict=True):
        for key, value in ours.state[p].items():
            assert torch.equal(again.state[q][key], value), key
    _train(ours, params, 2, seed=1)
    _train(again, again_params, 2, seed=1)
    for p, q in zip(params, again_params, strict=True):
        assert torch.equal(p, q)

    # Ours -> torch's AdamW: it casts the moments to fp32 and continues.
    torch_params = _clones(again_params)
    torch_optimizer = torch.optim.AdamW(torch_params, lr=1e-2, amsgrad=True)
    torch_optimizer.load_state_dict(_saved(again.state_dict()))
    assert torch_optimizer.state[torch_params[0]]["exp_avg"].dtype == torch.float32
    torch.testing.assert_close(
        torch_optimizer.state[torch_params[0]]["exp_avg"], again.state[again_params[0]]["exp_avg"].float()
    )
    _train(torch_optimizer, torch_params, 2, seed=2)
    _train(again, again_params, 2, seed=2)
    for p, q in zip(torch_params, again_params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-4)

    # torch's (fp32) -> ours with bf16 moments: rounded to bf16 on load.
    loaded_params = _clones(torch_params)
    loaded = AdamW(loaded_params, lr=1e-2, amsgrad=True, state_dtype=BF16)
    loaded.load_state_dict(_saved(torch_optimizer.state_dict()))
    assert loaded.param_groups[0]["state_dtype"] == BF16
    for p, q in zip(torch_params, loaded_params, strict=True):
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert loaded.state[q][key].dtype == BF16
            assert torch.equal(loaded.state[q][key], torch_optimizer.state[p][key].to(BF16))
    _train(loaded, loaded_params, 1, seed=3)
    assert kernel_launches.launch_count("adam_kernel") == 3 + 2 + 2 + 2 + 1


def test_invalid_state_dtype_and_complex_parameters_are_refused():
    with pytest.raises(ValueError, match="state_dtype must be one of"):
        AdamW(_params(), state_dtype=torch.float16)
    z = torch.randn(4, dtype=torch.complex64, requires_grad=True)
    z.grad = torch.randn_like(z)
    with pytest.raises(ValueError, match="complex"):
        AdamW([z], state_dtype=BF16).step()


def test_default_groups_keep_torchs_keys():
    """Without state_dtype, the param groups hold exactly torch's keys (no state_dtype key)."""
    assert "state_dtype" not in AdamW(_params()).param_groups[0]
    assert math.isclose(AdamW(_params(), state_dtype=BF16).param_groups[0]["lr"], 1e-3)


def state_dtype_workload():
    """One step through every bf16-moment specialization these tests launch (test_adam's aot_workload runs it)."""
    for dtype in (torch.float32, BF16):
        for amsgrad in (False, True):
            for grad_scale in (None, 4.0):
                params = _params([(3, 4, 5)], dtype=dtype)
                for p in params:
                    p.grad = torch.randn_like(p)
                optimizer = AdamW(params, amsgrad=amsgrad, state_dtype=BF16, lr=torch.tensor(1e-2))
                if grad_scale is not None:
                    optimizer.grad_scale = torch.tensor(grad_scale)
                    optimizer.found_inf = torch.tensor(0.0)
                optimizer.step()
    params = _params([(3, 4, 5)], dtype=BF16)
    for p in params:
        p.grad = torch.randn_like(p)
    AdamW(params, state_dtype=torch.float32).step()
    # Stochastic rounding of bf16 parameters, with fp32 and bf16 moments.
    for state_dtype in (None, BF16):
        AdamW(params, state_dtype=state_dtype, stochastic_rounding=True).step()


def _tiny_updates(stochastic_rounding, steps=100, numel=2048, seed=0):
    """bf16 parameters at 1.0, AdamW with constant gradients: each update is lr = 1e-3,
    under half of bf16's ulp at 1.0 (2**-8 = 3.9e-3)."""
    torch.manual_seed(seed)
    p = torch.ones(numel, dtype=BF16, requires_grad=True)
    optimizer = AdamW([p], lr=1e-3, weight_decay=0.0, stochastic_rounding=stochastic_rounding)
    for _ in range(steps):
        p.grad = torch.ones_like(p)
        optimizer.step()
    return p.detach()


def test_stochastic_rounding_moves_bf16_parameters_by_the_right_mean(kernel_launches):
    steps = 100
    plain = _tiny_updates(False, steps)
    assert torch.equal(plain, torch.ones_like(plain))  # round to nearest: every update lost
    stochastic = _tiny_updates(True, steps)
    assert kernel_launches.launch_count("adam_kernel") == 2 * steps
    # Exact (fp32) arithmetic would end at 1 - 100 * 1e-3 = 0.9; stochastic rounding is
    # unbiased, so the mean over 2,048 parameters lands there (the spread of one
    # parameter's rounding noise is ~0.004 per step, ~0.04 over 100, /sqrt(2048)).
    assert stochastic.float().mean().item() == pytest.approx(0.9, abs=0.005)
    assert stochastic.float().std() > 0  # the parameters took different paths
    # Reproducible from torch's seed; another seed, another path with the same mean.
    assert torch.equal(stochastic, _tiny_updates(True, steps))
    other = _tiny_updates(True, steps, seed=1)
    assert not torch.equal(stochastic, other)
    assert other.float().mean().item() == pytest.approx(0.9, abs=0.005)


def test_stochastic_rounding_leaves_fp32_parameters_to_nearest(kernel_launches):
    params = _params([(300,)])
    reference_params = _clones(params)
    ours = AdamW(params, stochastic_rounding=True)
    plain = AdamW(reference_params)
    for _ in range(3):
        params[0].grad = torch.randn(300)
        reference_params[0].grad = params[0].grad.clone()
        ours.step()
        plain.step()
    assert torch.equal(params[0], reference_params[0])
    assert isinstance(ours.param_groups[0]["stochastic_rounding_seed"], int)
