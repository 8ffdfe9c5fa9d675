"""fused_ops.optim.SGD against torch.optim.SGD, through the Triton kernel.

Ours and torch's run side by side on clones of the same parameters with the same
gradients. Shapes (SGD_BLOCK_SIZE = 1024): (3, 4, 5) is one partial block; (2100,) two
full blocks and a tail; () a 0-d parameter.
"""

import copy
import inspect
import math

import fused_ops.kernels.sgd as sgd_kernels
import pytest
import torch
from helpers import no_host_sync

import fused_ops
from fused_ops._dispatch import reference_backend
from fused_ops.optim import SGD
from fused_ops.profiling import KernelTrace, TorchTrace

RTOL, ATOL = 1e-5, 1e-6
STEPS = 20

# torch 2.13's optim_inputs_func_sgd (torch/testing/_internal/common_optimizers.py, which
# needs expecttest and is not imported here), transcribed.
TORCH_CONFIGS = [
    ("default", {}),
    ("non-default lr", {"lr": 1e-2}),
    ("tensor lr", {"lr": torch.tensor(0.001)}),
    ("non-zero weight_decay", {"weight_decay": 0.5}),
    ("momentum", {"momentum": 0.9}),
    ("maximize", {"weight_decay": 0.1, "maximize": True}),
    ("dampening", {"momentum": 0.9, "dampening": 0.5}),
    ("weight_decay w/ momentum", {"momentum": 0.9, "weight_decay": 0.1}),
    ("nesterov", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
]


def make_pair(kwargs, shapes=((3, 4, 5),), dtype=torch.float32, torch_kwargs=None):
    base = [torch.randn(shape, dtype=dtype) for shape in shapes]
    ours = SGD([p.clone().requires_grad_() for p in base], **copy.deepcopy(kwargs))
    theirs = torch.optim.SGD([p.clone().requires_grad_() for p in base], **copy.deepcopy(torch_kwargs or kwargs))
    return ours, theirs


def params_of(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"]]


def set_same_grads(ours, theirs):
    for p, q in zip(params_of(ours), params_of(theirs), strict=True):
        grad = torch.randn_like(p)
        p.grad, q.grad = grad.clone(), grad.clone()


def assert_same(ours, theirs, rtol=RTOL, atol=ATOL):
    for p, q in zip(params_of(ours), params_of(theirs), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=rtol, atol=atol)
        ours_state, torch_state = ours.state.get(p, {}), theirs.state.get(q, {})
        assert set(ours_state) == set(torch_state)
        for key, value in torch_state.items():
            torch.testing.assert_close(ours_state[key], value, rtol=rtol, atol=atol)


def train_side_by_side(ours, theirs, steps=STEPS, rtol=RTOL, atol=ATOL):
    for _ in range(steps):
        set_same_grads(ours, theirs)
        ours.step()
        theirs.step()
        assert_same(ours, theirs, rtol, atol)


def test_constructor_takes_torchs_arguments():
    ours, theirs = inspect.signature(SGD), inspect.signature(torch.optim.SGD)
    assert list(ours.parameters) == list(theirs.parameters)
    for parameter in theirs.parameters.values():
        assert ours.parameters[parameter.name].default == parameter.default, parameter.name
        assert ours.parameters[parameter.name].kind == parameter.kind, parameter.name
    assert fused_ops.optim.SGD is SGD and issubclass(SGD, torch.optim.Optimizer)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": -1e-2},
        {"lr": 1e-2, "momentum": -0.5},
        {"weight_decay": -1},
        {"lr": torch.tensor([0.001, 0.001])},
        {"nesterov": True},
        {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
        {"fused": True, "foreach": True},
    ],
    ids=str,
)
def test_invalid_hyperparameters_raise_torchs_errors(kwargs):
    with pytest.raises(Exception) as torch_error:
        torch.optim.SGD([torch.nn.Parameter(torch.randn(2))], **kwargs)
    with pytest.raises(torch_error.type) as our_error:
        SGD([torch.nn.Parameter(torch.randn(2))], **kwargs)
    assert str(our_error.value) == str(torch_error.value)


def test_differentiable_is_refused_clearly():
    with pytest.raises(RuntimeError, match="does not support differentiable=True"):
        SGD([torch.nn.Parameter(torch.randn(2))], differentiable=True)


@pytest.mark.parametrize(("desc", "kwargs"), TORCH_CONFIGS, ids=[desc for desc, _ in TORCH_CONFIGS])
def test_matches_torch_on_torchs_own_configs(desc, kwargs, kernel_launches):
    ours, theirs = make_pair(kwargs)
    train_side_by_side(ours, theirs)
    assert kernel_launches.launch_count("sgd_kernel") == STEPS
    assert ours.param_groups[0].keys() == theirs.param_groups[0].keys()


@pytest.mark.interpreter_only  # counts bytes
def test_odd_sizes_several_chunks_and_tensor_weight_decay(monkeypatch, kernel_launches):
    # Several programs per parameter: the last one clears the first-step flag (atomic count).
    monkeypatch.setattr(sgd_kernels, "SGD_CHUNK_SIZE", 2 * sgd_kernels.SGD_BLOCK_SIZE)
    kwargs = {"momentum": 0.9, "dampening": 0.2, "weight_decay": torch.tensor(0.05), "lr": 0.05}
    ours, theirs = make_pair(kwargs, shapes=[(5000,), (2100,), (7,), (), (0,)])
    train_side_by_side(ours, theirs, steps=3)
    assert kernel_launches.launches[0].grid == (3 + 2 + 1 + 1 + 1,)
    assert ours._cache.plans[0].arrivals.tolist() == [0] * 5


def test_first_step_buffer_is_the_gradient():
    p = torch.nn.Parameter(torch.randn(10))
    optimizer = SGD([p], lr=0.1, momentum=0.9, dampening=0.5)
    p.grad = torch.randn(10)
    optimizer.step()
    assert torch.equal(optimizer.state[p]["momentum_buffer"], p.grad)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_other_dtypes(dtype, kernel_launches):
    kwargs = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1, "nesterov": True}
    if dtype == torch.float64:
        ours, theirs = make_pair(kwargs, dtype=dtype)
        train_side_by_side(ours, theirs, rtol=1e-13, atol=1e-14)  # fp64 hyperparameters: fp64 precision
    else:
        # fp16/bf16 compute in fp32 and round once per step (as torch's fused SGD): against
        # torch's for-loop on fp32 copies, within a few storage ulps after 10 steps.
        base = [torch.randn(3, 4, 5, dtype=dtype)]
        ours = SGD([p.clone().requires_grad_() for p in base], **kwargs)
        theirs = torch.optim.SGD([p.float().requires_grad_() for p in base], **kwargs)
        for _ in range(10):
            grad = torch.randn(3, 4, 5, dtype=dtype)
            params_of(ours)[0].grad, params_of(theirs)[0].grad = grad, grad.float()
            ours.step()
            theirs.step()
        ulp = {torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
        for p, q in zip(params_of(ours), params_of(theirs), strict=True):
            torch.testing.assert_close(p.detach().float(), q.detach(), rtol=4 * ulp, atol=4 * ulp)
            assert ours.state[p]["momentum_buffer"].dtype == dtype
    assert kernel_launches.launch_count("sgd_kernel") >= 10


def test_one_launch_for_groups_with_and_without_momentum(kernel_launches):
    base = [torch.randn(3, 4), torch.randn(5), torch.randn(2, 2)]
    groups = lambda params: [  # noqa: E731
        {"params": [params[0]], "lr": 0.1, "momentum": 0.9, "weight_decay": 0.1},
        {"params": [params[1]], "lr": 0.02},
        {"params": [params[2]], "lr": torch.tensor(0.05), "momentum": 0.5, "nesterov": True, "maximize": True},
    ]
    ours = SGD(groups([p.clone().requires_grad_() for p in base]))
    theirs = torch.optim.SGD(groups([p.clone().requires_grad_() for p in base]))
    train_side_by_side(ours, theirs, steps=5)
    assert kernel_launches.launch_count() == kernel_launches.launch_count("sgd_kernel") == 5
    assert params_of(ours)[1] not in ours.state, "no momentum: no state, as torch"


@pytest.mark.parametrize(("momentum", "bytes_per_element"), [(0.0, 12), (0.9, 20)])
@pytest.mark.interpreter_only  # counts bytes
def test_traffic_is_one_read_and_one_write_of_each_tensor(momentum, bytes_per_element):
    """Read p, g (, buf), write p (, buf): 12 B per fp32 parameter, 20 with momentum (16 on the first step)."""
    n = 4096
    p = torch.nn.Parameter(torch.randn(n))
    optimizer = SGD([p], lr=0.1, momentum=momentum)
    p.grad = torch.randn(n)
    optimizer.step()
    p.grad = torch.randn(n)
    with KernelTrace() as trace:
        optimizer.step()
    assert trace.launch_count() == 1
    # + about 120 bytes of tables per program.
    assert trace.bytes_moved / n == pytest.approx(bytes_per_element, abs=0.05)


def test_state_dict_loads_both_ways_and_training_continues(kernel_launches):
    kwargs = {"lr": 0.05, "momentum": 0.9, "dampening": 0.1}
    ours, theirs = make_pair(kwargs, shapes=[(3, 4), (5,)])
    train_side_by_side(ours, theirs, steps=3)
    assert ours.state_dict()["param_groups"] == theirs.state_dict()["param_groups"]
    ours2 = SGD([p.detach().clone().requires_grad_() for p in params_of(theirs)], **kwargs)
    ours2.load_state_dict(copy.deepcopy(theirs.state_dict()))
    theirs2 = torch.optim.SGD([p.detach().clone().requires_grad_() for p in params_of(ours)], **kwargs)
    theirs2.load_state_dict(copy.deepcopy(ours.state_dict()))
    train_side_by_side(ours2, theirs, steps=3)
    train_side_by_side(ours, theirs2, steps=3)
    assert kernel_launches.launch_count("sgd_kernel") == 3 + 3 + 3


def test_grad_scaler_matches_torch_and_a_skipped_first_step_keeps_torchs_first_step_rule(kernel_launches):
    torch.manual_seed(1)
    model_ours = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model_torch = copy.deepcopy(model_ours)
    ours = SGD(model_ours.parameters(), lr=0.05, momentum=0.9, dampening=0.3)
    theirs = torch.optim.SGD(model_torch.parameters(), lr=0.05, momentum=0.9, dampening=0.3)
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2) for _ in range(2)]
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    for step in range(6):
        inf_step = step in (0, 3)  # the very first step is skipped: no buffer is written
        for model, optimizer, scaler in zip((model_ours, model_torch), (ours, theirs), scalers, strict=True):
            optimizer.zero_grad()
            scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
            if inf_step:
                next(model.parameters()).grad[0, 0] = math.inf
            scaler.step(optimizer)
            scaler.update()
        assert bool(ours.last_step_skipped) == inf_step
        if step > 0:
            assert_same(ours, theirs)
    assert kernel_launches.launch_count("sgd_kernel") == 6


def test_no_host_sync_and_no_aten_kernel_after_the_first_step():
    params = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3))]
    optimizer = SGD(params, lr=torch.tensor(0.1), momentum=0.9)
    for step in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        with no_host_sync(), KernelTrace() as launches, TorchTrace() as aten:
            optimizer.step()
        assert launches.launch_count() == 1
        assert step == 0 or aten.kernel_count() == 0, aten.by_op()


def test_sparse_gradients_step_like_torch():
    ours, theirs = make_pair({"lr": 0.1, "momentum": 0.9}, shapes=[(4, 3)])
    for _ in range(3):
        grad = torch.randn(4, 3).to_sparse()
        params_of(ours)[0].grad, params_of(theirs)[0].grad = grad.clone(), grad.clone()
        ours.step()
        theirs.step()
    # torch keeps a sparse gradient's buffer sparse; ours is dense, with the same values.
    p, q = params_of(ours)[0], params_of(theirs)[0]
    torch.testing.assert_close(p.detach(), q.detach())
    torch.testing.assert_close(ours.state[p]["momentum_buffer"], theirs.state[q]["momentum_buffer"].to_dense())


def test_reference_backend_matches_torch():
    with reference_backend():
        ours, theirs = make_pair({"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1})
        train_side_by_side(ours, theirs, steps=4)


def aot_workload():
    """One step through every kernel specialization these tests launch."""
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for momentum in (0.0, 0.9):
            ours, theirs = make_pair({"lr": 0.1, "momentum": momentum}, dtype=dtype)
            set_same_grads(ours, theirs)
            ours.step()
    # GradScaler: grad_scale with found_inf, and unaligned addresses.
    offset = torch.randn(1026)[1:].requires_grad_()
    offset.grad = torch.randn_like(offset)
    optimizer = SGD([offset], momentum=0.9)
    optimizer.grad_scale, optimizer.found_inf = torch.tensor(2.0), torch.tensor(0.0)
    optimizer.step()
