"""fused_ops.optim.Adam and AdamW against torch.optim, through the Triton kernel.

Every comparison runs ours and torch's side by side on clones of the same parameters
with the same gradients. Parameters are small because each interpreted program costs
milliseconds; the shapes still reach every path of the kernel (see SHAPES).
"""

import copy
import inspect
import math
import pickle

import fused_ops.kernels.adam as adam_kernels
import pytest
import torch
from helpers import HostSyncError, no_host_sync
from hypothesis import given, settings
from hypothesis import strategies as st

import fused_ops
from fused_ops import reference
from fused_ops._dispatch import reference_backend
from fused_ops.optim import Adam, AdamW
from fused_ops.profiling import KernelTrace, TorchTrace

OURS = {"Adam": Adam, "AdamW": AdamW}
TORCH = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}

# The parity tolerance for fp32/fp64 after 30+ steps.
RTOL, ATOL = 1e-4, 1e-6
STEPS = 30

# Shapes, and the kernel path each reaches (ADAM_BLOCK_SIZE = 1024, one chunk = 64 blocks):
SHAPES = [
    (1,),  # one element: a program whose only block is almost fully masked
    (4097,),  # five blocks, the last with a single element
    (3, 4, 5),  # 3-D: addressed flat, one partial block
]


def torch_configs(dtype=torch.float32):
    """Every kwargs of torch 2.13's optim_inputs_func_adam (and _adamw, the same list).

    Transcribed from torch/testing/_internal/common_optimizers.py, which cannot be
    imported here (it needs expecttest): the CPU configs, then the CUDA-only ones (tensor
    lr and tensor betas with capturable), with its eps=0.1 override for fp16.
    """
    configs = [
        ("default", {}),
        ("non-default lr", {"lr": 0.01}),
        ("nonzero weight_decay", {"weight_decay": 0.1}),
        ("maximize", {"weight_decay": 0.1, "maximize": True}),
        ("amsgrad", {"weight_decay": 0.1, "amsgrad": True}),
        ("capturable", {"capturable": True}),
        ("capturable, amsgrad", {"weight_decay": 0.1, "amsgrad": True, "capturable": True}),
        (
            "Tensor lr with capturable and amsgrad",
            {"lr": torch.tensor(0.001), "amsgrad": True, "capturable": True},
        ),
        (
            "Tensor lr, Tensor betas, with capturable and amsgrad",
            {
                "lr": torch.tensor(0.001),
                "betas": (torch.tensor([[[0.9]]]), torch.tensor([[0.99]])),
                "amsgrad": True,
                "capturable": True,
            },
        ),
        (
            "Tensor lr, Tensor betas, with capturable",
            {"lr": torch.tensor(0.001), "betas": (torch.tensor(0.9), torch.tensor(0.99)), "capturable": True},
        ),
    ]
    if dtype == torch.float16:
        configs = [(desc, {**kwargs, "eps": 0.1}) for desc, kwargs in configs]
    return configs


def for_torch(kwargs):
    """The same math with torch on the CPU: capturable=True is CUDA-only there, and changes no number."""
    return {k: v for k, v in copy.deepcopy(kwargs).items() if k != "capturable"}


def make_pair(name, kwargs, shapes=SHAPES, dtype=torch.float32, torch_kwargs=None, torch_cls=None):
    """(ours, torch's) optimizers over clones of the same random parameters."""
    base = [torch.randn(shape, dtype=dtype) for shape in shapes]
    ours_params = [p.clone().requires_grad_() for p in base]
    torch_params = [p.clone().requires_grad_() for p in base]
    ours = OURS[name](ours_params, **copy.deepcopy(kwargs))
    theirs = (torch_cls or TORCH[name])(
        torch_params, **(torch_kwargs if torch_kwargs is not None else for_torch(kwargs))
    )
    return ours, theirs


def params_of(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"]]


def set_same_grads(ours, theirs, scale=1.0):
    for p, q in zip(params_of(ours), params_of(theirs), strict=True):
        grad = torch.randn_like(p) * scale
        p.grad, q.grad = grad.clone(), grad.clone()


def assert_same(ours, theirs, rtol=RTOL, atol=ATOL):
    """Parameters, every state tensor and step agree; the state has torch's keys exactly."""
    for p, q in zip(params_of(ours), params_of(theirs), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=rtol, atol=atol)
        ours_state, torch_state = ours.state.get(p, {}), theirs.state.get(q, {})
        assert set(ours_state) == set(torch_state)
        for key, value in torch_state.items():
            if key == "step":
                assert ours_state["step"].item() == value.item()
                assert ours_state["step"].dtype == torch.float32 and ours_state["step"].device == p.device
            else:
                assert ours_state[key].dtype == value.dtype, key
                torch.testing.assert_close(ours_state[key], value, rtol=rtol, atol=atol)


def train_side_by_side(ours, theirs, steps=STEPS, rtol=RTOL, atol=ATOL, check_every_step=False):
    for _ in range(steps):
        set_same_grads(ours, theirs)
        ours.step()
        theirs.step()
        if check_every_step:
            assert_same(ours, theirs, rtol, atol)
    assert_same(ours, theirs, rtol, atol)


def test_constructors_take_torchs_arguments():
    for name in ("Adam", "AdamW"):
        ours, theirs = inspect.signature(OURS[name]), inspect.signature(TORCH[name])
        # torch's arguments in torch's order, then our one keyword-only addition.
        assert list(ours.parameters) == [*theirs.parameters, "state_dtype", "stochastic_rounding"]
        assert ours.parameters["state_dtype"].kind == inspect.Parameter.KEYWORD_ONLY
        assert ours.parameters["stochastic_rounding"].kind == inspect.Parameter.KEYWORD_ONLY
        for parameter in theirs.parameters.values():
            assert ours.parameters[parameter.name].default == parameter.default, parameter.name
            assert ours.parameters[parameter.name].kind == parameter.kind, parameter.name
    assert issubclass(AdamW, torch.optim.Optimizer) and issubclass(Adam, torch.optim.Optimizer)
    assert fused_ops.optim.AdamW is AdamW


BAD_ARGUMENTS = [
    {"lr": -1e-2},
    {"eps": -1.0},
    {"betas": (1.0, 0.0)},
    {"betas": (0.9, -0.1)},
    {"betas": (0.9, 1.0)},
    {"weight_decay": -1},
    {"lr": torch.tensor([0.001, 0.001])},
    {"lr": torch.tensor(0.001), "foreach": True},
    {"betas": (0.9, torch.tensor(0.99))},
    {"betas": (torch.tensor(0.9), 0.99)},
    {"betas": (torch.tensor(0.9), torch.tensor(0.99)), "foreach": True},
    {"betas": (torch.tensor([0.9, 0.9]), torch.tensor(0.99))},
    {"fused": True, "foreach": True},
]


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("kwargs", BAD_ARGUMENTS, ids=str)
def test_invalid_hyperparameters_raise_torchs_errors(name, kwargs):
    with pytest.raises(Exception) as torch_error:
        TORCH[name]([torch.nn.Parameter(torch.randn(2))], **kwargs)
    with pytest.raises(torch_error.type) as our_error:
        OURS[name]([torch.nn.Parameter(torch.randn(2))], **kwargs)
    assert str(our_error.value) == str(torch_error.value)


def test_invalid_params_raise_torchs_errors():
    p = torch.nn.Parameter(torch.randn(2))
    with pytest.raises(TypeError, match="should be an iterable of Tensors or dicts"):
        AdamW(p)
    with pytest.raises(ValueError, match="empty parameter list"):
        AdamW([])
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        AdamW([{"params": p}, {"params": p}])


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_differentiable_is_refused_clearly(name):
    with pytest.raises(RuntimeError, match="does not support differentiable=True"):
        OURS[name]([torch.nn.Parameter(torch.randn(2))], differentiable=True)
    # torch's own wording for fused=True stays in the message, for code matching on it.
    with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
        OURS[name]([torch.nn.Parameter(torch.randn(2))], fused=True, differentiable=True)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize(("desc", "kwargs"), torch_configs(), ids=[desc for desc, _ in torch_configs()])
def test_matches_torch_on_torchs_own_configs(name, desc, kwargs, kernel_launches):
    # One 3-D parameter keeps 30 interpreted steps cheap; test_odd_sizes covers the others.
    ours, theirs = make_pair(name, kwargs, shapes=[(3, 4, 5)])
    train_side_by_side(ours, theirs)
    assert kernel_launches.launch_count("adam_kernel") == STEPS
    assert ours.param_groups[0].keys() == theirs.param_groups[0].keys()


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("Adam", {"lr": torch.tensor(0.01), "weight_decay": 0.1}),
        ("AdamW", {"lr": torch.tensor(0.01), "weight_decay": 0.1}),
        ("Adam", {"amsgrad": True, "maximize": True, "weight_decay": 0.05}),
        ("AdamW", {"amsgrad": True, "maximize": True}),
        ("AdamW", {"betas": (0.8, 0.95), "eps": 1e-6, "lr": 3e-3}),
        # beta1 >= 0.5 makes lerp's weight small... and beta1 < 0.5 reaches its other formula.
        ("Adam", {"betas": (0.3, 0.5), "eps": 1e-3}),
        ("Adam", {"betas": (0.0, 0.0)}),
    ],
    ids=str,
)
def test_matches_torch_on_more_configs(name, kwargs, kernel_launches):
    ours, theirs = make_pair(name, kwargs, shapes=[(3, 4, 5)])
    train_side_by_side(ours, theirs)
    assert kernel_launches.launch_count("adam_kernel") == STEPS


def test_decoupled_weight_decay_adam_is_adamw(kernel_launches):
    kwargs = {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True}
    ours, theirs = make_pair(
        "Adam",
        {**kwargs, "decoupled_weight_decay": True},
        shapes=[(3, 4, 5)],
        torch_cls=torch.optim.AdamW,
        torch_kwargs=kwargs,
    )
    train_side_by_side(ours, theirs)
    assert kernel_launches.launch_count("adam_kernel") == STEPS


def test_odd_sizes(kernel_launches):
    ours, theirs = make_pair("AdamW", {"weight_decay": 0.1, "lr": 1e-2, "amsgrad": True}, shapes=SHAPES)
    train_side_by_side(ours, theirs)
    assert kernel_launches.launch_count("adam_kernel") == STEPS


@pytest.mark.interpreter_only  # counts bytes
def test_parameters_longer_than_one_chunk(monkeypatch, kernel_launches):
    # Several programs per parameter: the last one to read step writes it (atomic count).
    monkeypatch.setattr(adam_kernels, "ADAM_CHUNK_SIZE", 2 * adam_kernels.ADAM_BLOCK_SIZE)
    # A 0-d and an empty parameter get one program each: their step counts too.
    ours, theirs = make_pair("AdamW", {"amsgrad": True}, shapes=[(5000,), (2048,), (7,), (), (0,)])
    train_side_by_side(ours, theirs, steps=3, check_every_step=True)
    assert kernel_launches.launches[0].grid == (3 + 1 + 1 + 1 + 1,)
    arrivals = ours._cache.plans[0].arrivals
    assert arrivals.tolist() == [0] * 5, "the kernel leaves its arrival counters at zero"


def test_fp64_params(kernel_launches):
    ours, theirs = make_pair("AdamW", {"amsgrad": True, "lr": 1e-2}, shapes=[(3, 4, 5)], dtype=torch.float64)
    # lr, betas, eps and weight decay reach the kernel in fp64 (torch's opmath for fp64),
    # so 30 steps agree to fp64 precision, not fp32's ~1e-7.
    train_side_by_side(ours, theirs, rtol=1e-12, atol=1e-14)
    assert ours.state[params_of(ours)[0]]["exp_avg"].dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_half_precision_params(name, dtype, kernel_launches):
    """fp16/bf16 compute in fp32 inside the kernel; the moments keep the parameter's dtype, as in torch.

    torch's fused Adam computes the same way, so it agrees to about one rounding of the
    stored values. torch's for-loop rounds every intermediate to fp16/bf16 (AdamW's decay
    and the update: two roundings of the parameter per step), so over 30 steps it drifts
    up to ~16 storage ulps away from both.
    """
    kwargs = {"weight_decay": 0.1, "lr": 1e-2, "amsgrad": True}
    if dtype == torch.float16:
        kwargs["eps"] = 0.1  # as torch's tests: 1e-8 is 0 in fp16
    ours, fused = make_pair(name, kwargs, shapes=[(3, 4, 5)], dtype=dtype, torch_kwargs={**kwargs, "fused": True})
    base = [p.detach().clone().requires_grad_() for p in params_of(ours)]
    loop = TORCH[name](base, **kwargs)
    for _ in range(STEPS):
        set_same_grads(ours, fused)
        for p, q in zip(params_of(ours), base, strict=True):
            q.grad = p.grad.clone()
        ours.step()
        fused.step()
        loop.step()
    ulp = {torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    assert_same(ours, fused, rtol=ulp, atol=ulp)
    torch.testing.assert_close(params_of(ours)[0].detach(), base[0].detach(), rtol=16 * ulp, atol=16 * ulp)
    assert ours.state[params_of(ours)[0]]["exp_avg_sq"].dtype == dtype
    assert kernel_launches.launch_count("adam_kernel") == STEPS


@settings(max_examples=10, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(0, 9), max_size=3).map(tuple), min_size=1, max_size=3),
    transposed=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    name=st.sampled_from(["Adam", "AdamW"]),
    amsgrad=st.booleans(),
    maximize=st.booleans(),
    weight_decay=st.sampled_from([0.0, 0.1]),
    lr=st.sampled_from([1e-3, 3e-2, "tensor"]),
)
def test_property_random_params_and_flags(shapes, transposed, dtype, name, amsgrad, maximize, weight_decay, lr):
    kwargs = {"amsgrad": amsgrad, "maximize": maximize, "weight_decay": weight_decay}
    kwargs["lr"] = torch.tensor(1e-2) if lr == "tensor" else lr
    base = [torch.randn(s, dtype=dtype) for s in shapes]
    if transposed:  # dense but not contiguous: the kernel walks the parameter's own layout
        base = [p.transpose(0, -1).contiguous().transpose(0, -1) if p.dim() > 1 else p for p in base]
    ours = OURS[name]([p.clone().requires_grad_() for p in base], **copy.deepcopy(kwargs))
    theirs = TORCH[name]([p.clone().requires_grad_() for p in base], **copy.deepcopy(kwargs))
    with KernelTrace() as trace:
        train_side_by_side(ours, theirs, steps=3)
    assert trace.launch_count("adam_kernel") == 3
    for p, b in zip(params_of(ours), base, strict=True):
        assert p.stride() == b.stride()


@pytest.mark.interpreter_only  # counts bytes
def test_one_launch_per_device_and_dtype_for_60_params(kernel_launches):
    """Each step is exactly one adam_kernel per dtype and nothing else: no aten kernel either.

    TorchTrace counts every aten op that would launch on a GPU, so a hidden allocation
    that zero-fills (a per-step flag or counter) fails this. The first step also creates
    the state, the program tables and the arrival counters, once (as torch creates its
    state). Later steps launch nothing but the kernels, even though each gets new
    gradient tensors: only the address table is rebuilt, a host-to-device copy.
    """
    shapes = [(7,), (3, 5), (16,)] * 20
    base = [torch.randn(s, dtype=torch.float32 if i % 2 else torch.bfloat16) for i, s in enumerate(shapes)]
    ours = AdamW([p.clone().requires_grad_() for p in base])
    theirs = torch.optim.AdamW([p.clone().requires_grad_() for p in base])
    for step in range(3):
        set_same_grads(ours, theirs)
        kernel_launches.clear()
        with TorchTrace() as aten:
            ours.step()
        theirs.step()
        assert kernel_launches.launch_count("adam_kernel") == 2, "one launch for the fp32 parameters, one for bf16"
        assert kernel_launches.launch_count() == 2
        assert sorted(launch.grid for launch in kernel_launches.launches) == [(30,), (30,)]
        if step > 0:
            assert aten.kernel_count() == 0, aten.by_op()
        assert not ours.last_step_skipped
    assert_same(ours, theirs, rtol=2**-7, atol=2**-7)


def test_address_tables_are_cached_between_steps():
    p = torch.nn.Parameter(torch.randn(10))
    optimizer = AdamW([p])
    p.grad = torch.randn(10)
    optimizer.step()
    plan = optimizer._cache.plans[0]
    first = (plan.tensor_table, plan.grad_table, plan.program_table, plan.arrivals, plan.group_table)
    optimizer.step()  # same tensors: the same device tables, no rebuild
    assert optimizer._cache.plans[0] is plan and optimizer.plan_builds == 1
    assert all(
        a is b
        for a, b in zip(
            first,
            (plan.tensor_table, plan.grad_table, plan.program_table, plan.arrivals, plan.group_table),
            strict=True,
        )
    )
    p.grad = torch.randn(10) + 0  # a new gradient tensor at a new address: a new grad table only
    keep_alive = p.grad
    optimizer.step()
    assert optimizer._cache.plans[0] is plan and optimizer.plan_builds == 1
    assert plan.grad_table.tolist() == [keep_alive.data_ptr()] and plan.grad_table is not first[1]
    assert plan.tensor_table is first[0] and plan.program_table is first[2] and plan.arrivals is first[3]
    optimizer.param_groups[0]["lr"] = 1e-2  # a scheduler's change: a new group table, nothing else
    optimizer.step()
    assert plan.group_table is not first[4] and optimizer.plan_builds == 1
    optimizer.add_param_group({"params": [torch.nn.Parameter(torch.randn(3))]})
    optimizer.param_groups[0]["params"].append(torch.nn.Parameter(torch.randn(4)))
    for q in [q for group in optimizer.param_groups for q in group["params"]][1:]:
        q.grad = torch.randn_like(q)
    optimizer.step()  # more parameters: new tables, the new group in the same launch
    grown = optimizer._cache.plans
    assert len(grown) == 1 and grown[0].arrivals.tolist() == [0, 0, 0] and optimizer.plan_builds == 2
    p.data = torch.randn(10)  # the parameter moved (as module.to() does): rebuilt
    optimizer.step()
    assert optimizer.plan_builds == 3


def test_a_step_with_unchanged_tensors_does_no_per_parameter_work(monkeypatch):
    """The second step over the same tensors reads each address once, in C, and builds nothing.

    Counted: Tensor.data_ptr calls (2 per parameter: the parameter and its gradient, from
    C-level map()) and table builds (0). A step with new gradient tensors does the same
    plus one list of addresses, still without building the tables.
    """
    params = [torch.nn.Parameter(torch.randn(3)) for _ in range(50)]
    optimizer = AdamW([{"params": params[:25]}, {"params": params[25:], "weight_decay": 0.0}])
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer.step()
    calls = []
    real_data_ptr = torch.Tensor.data_ptr
    monkeypatch.setattr("fused_ops.optim._base._DATA_PTR", lambda t: calls.append(1) or real_data_ptr(t))
    builds = optimizer.plan_builds
    optimizer.step()
    assert len(calls) == 2 * len(params) and optimizer.plan_builds == builds
    for p in params:
        p.grad = torch.randn_like(p)
    calls.clear()
    optimizer.step()
    assert len(calls) == 2 * len(params) and optimizer.plan_builds == builds


@pytest.mark.parametrize(("amsgrad", "bytes_per_element"), [(False, 28), (True, 36)])
@pytest.mark.interpreter_only  # counts bytes
def test_traffic_is_one_read_and_one_write_of_each_tensor(amsgrad, bytes_per_element):
    """fp32: read p, g, m, v (+ max_exp_avg_sq), write p, m, v (+ max_exp_avg_sq), once each.

    On top, each program reads its table entries and step (O(#params), not O(#elements)):
    4 (program table) + 8 (numel) + 8 (first program) + 8 (step address) + 4 (step)
    + 8 (group index) + 12 x 8 (its group's row: flags, lr, betas, 1 - betas, log betas,
    eps, weight decay and the addresses of tensor lr and betas) + 4 x 8 addresses
    (+ 8 for max_exp_avg_sq) = 168 (176) bytes loaded; each parameter stores its 4-byte
    step once.
    """
    params = [torch.nn.Parameter(torch.randn(n)) for n in (1000, 3000, 5)]
    optimizer = AdamW(params, amsgrad=amsgrad)
    for p in params:
        p.grad = torch.randn_like(p)
    numel = sum(p.numel() for p in params)
    programs = len(params)
    with KernelTrace() as trace:
        optimizer.step()
    moved_per_element = bytes_per_element * numel
    loaded_elements = (16 + (4 if amsgrad else 0)) * numel
    table_loads = (176 if amsgrad else 168) * programs
    assert trace.launch_count("adam_kernel") == 1
    assert trace.bytes_loaded == loaded_elements + table_loads
    assert trace.bytes_stored == (moved_per_element - loaded_elements) + 4 * len(params)
    bf16 = [torch.nn.Parameter(torch.randn(1000, dtype=torch.bfloat16))]
    bf16[0].grad = torch.randn_like(bf16[0])
    with KernelTrace() as trace:
        AdamW(bf16, amsgrad=amsgrad).step()
    assert trace.bytes_moved == bytes_per_element // 2 * 1000 + (176 if amsgrad else 168) + 4


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.interpreter_only  # counts bytes
def test_traffic_against_torchs_implementations(amsgrad):
    """Bytes per fp32 element per step: ours against torch's for-loop, foreach and fused AdamW.

    torch's are modeled by TorchTrace (each aten op reads its inputs and writes its outputs
    once, as on a GPU); ours are counted by KernelTrace. The for-loop and foreach paths run
    8 (9 with amsgrad) elementwise kernels: 84 (96) bytes. torch's fused kernel moves 28 (36)
    as ours does, in a step counter launch plus ceil(#params / 36) kernel launches to our one.
    """
    n = 4096
    modeled = {}
    for name, kwargs in (("for-loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        p = torch.nn.Parameter(torch.randn(n))
        p.grad = torch.randn(n)
        optimizer = torch.optim.AdamW([p], amsgrad=amsgrad, **kwargs)
        optimizer.step()
        host_steps = [] if kwargs.get("fused") else [optimizer.state[p]["step"]]
        with TorchTrace(host_tensors=host_steps) as trace:
            optimizer.step()
        modeled[name] = trace.bytes_moved / n
    p = torch.nn.Parameter(torch.randn(n))
    p.grad = torch.randn(n)
    optimizer = AdamW([p], amsgrad=amsgrad)
    with KernelTrace() as trace:
        optimizer.step()
    ours = trace.bytes_moved / n
    minimum = 36 if amsgrad else 28
    assert modeled["for-loop"] == modeled["foreach"] == minimum + 56 + 4 * amsgrad
    assert modeled["fused"] == pytest.approx(minimum, abs=0.01)  # + its 0-d step tensor
    # + ~170 bytes of tables (tensor row, grad address, group hyperparameters) and step per program.
    assert ours == pytest.approx(minimum, abs=0.05)


def test_state_dict_has_torchs_layout():
    ours, theirs = make_pair("AdamW", {"amsgrad": True}, shapes=[(3, 4)])
    set_same_grads(ours, theirs)
    ours.step()
    theirs.step()
    ours_sd, torch_sd = ours.state_dict(), theirs.state_dict()
    assert ours_sd.keys() == torch_sd.keys()
    assert ours_sd["param_groups"] == torch_sd["param_groups"]
    assert ours_sd["state"].keys() == torch_sd["state"].keys()
    for key, value in torch_sd["state"][0].items():
        mine = ours_sd["state"][0][key]
        assert mine.shape == value.shape and mine.dtype == value.dtype, key
    step = ours_sd["state"][0]["step"]
    assert step.dim() == 0 and step.dtype == torch.float32 and step.device == params_of(ours)[0].device


@pytest.mark.parametrize("amsgrad", [False, True])
def test_state_dict_loads_both_ways_and_training_continues(amsgrad, kernel_launches):
    kwargs = {"amsgrad": amsgrad, "lr": 1e-2}
    ours, theirs = make_pair("AdamW", kwargs, shapes=[(3, 4), (5,)])
    train_side_by_side(ours, theirs, steps=3)
    # torch -> ours, and ours -> torch, each continuing next to the one it came from.
    ours2 = AdamW([p.detach().clone().requires_grad_() for p in params_of(theirs)], **kwargs)
    ours2.load_state_dict(copy.deepcopy(theirs.state_dict()))
    theirs2 = torch.optim.AdamW([p.detach().clone().requires_grad_() for p in params_of(ours)], **kwargs)
    theirs2.load_state_dict(copy.deepcopy(ours.state_dict()))
    for state in ours2.state.values():
        assert state["step"].dtype == torch.float32
    train_side_by_side(ours2, theirs, steps=4)
    train_side_by_side(ours, theirs2, steps=4)


def test_loads_state_of_torchs_adam_with_float64_default_step():
    p = torch.nn.Parameter(torch.randn(4))
    torch_opt = torch.optim.Adam([p])
    p.grad = torch.randn(4)
    torch_opt.step()
    saved = torch_opt.state_dict()
    saved["state"][0]["step"] = torch.tensor(1.0, dtype=torch.float64)  # as under set_default_dtype(float64)
    ours = Adam([torch.nn.Parameter(p.detach().clone())])
    ours.load_state_dict(saved)
    assert ours.state[params_of(ours)[0]]["step"].dtype == torch.float32


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda s: s["state"][0].pop("exp_avg_sq"), "has no \\['exp_avg_sq'\\]"),
        (lambda s: s["state"][0].pop("max_exp_avg_sq"), "has no \\['max_exp_avg_sq'\\]"),
        (lambda s: s["state"][1].update(exp_avg=torch.zeros(4, 3)), "exp_avg of shape \\(4, 3\\)"),
        (lambda s: s["state"][0].update(step=torch.zeros(2)), "step must be a single number"),
    ],
)
def test_bad_state_dict_is_refused_and_changes_nothing(corrupt, message):
    ours, theirs = make_pair("AdamW", {"amsgrad": True}, shapes=[(3, 4), (3, 4)])
    set_same_grads(ours, theirs)
    ours.step()
    theirs.step()
    before = copy.deepcopy(ours.state_dict())
    state_before = {id(p): dict(s) for p, s in ours.state.items()}
    bad = copy.deepcopy(ours.state_dict())
    corrupt(bad)
    bad["param_groups"][0]["lr"] = 123.0
    with pytest.raises(ValueError, match=message):
        ours.load_state_dict(bad)
    assert ours.param_groups[0]["lr"] == 1e-3
    assert {id(p): dict(s) for p, s in ours.state.items()} == state_before
    after = ours.state_dict()
    for index, state in before["state"].items():
        for key, value in state.items():
            assert torch.equal(after["state"][index][key], value)


def test_param_groups_with_different_hyperparameters(kernel_launches):
    base = [torch.randn(3, 4), torch.randn(5), torch.randn(2, 2)]
    groups = lambda params: [  # noqa: E731
        {"params": [params[0]], "lr": 1e-2, "weight_decay": 0.1, "amsgrad": True},
        {"params": [params[1]], "betas": (0.8, 0.9), "maximize": True},
        {"params": [params[2]], "lr": torch.tensor(3e-3), "eps": 1e-4},
    ]
    ours = AdamW(groups([p.clone().requires_grad_() for p in base]), lr=1e-3)
    theirs = torch.optim.AdamW(groups([p.clone().requires_grad_() for p in base]), lr=1e-3)
    train_side_by_side(ours, theirs, steps=10)
    # Every group in one launch per step.
    assert kernel_launches.launch_count("adam_kernel") == 10


def test_one_launch_for_three_groups_of_different_lr_betas_weight_decay_and_amsgrad(kernel_launches):
    """Groups differing in every hyperparameter, amsgrad and tensor lr included, share one launch."""
    base = [torch.randn(3, 4), torch.randn(5), torch.randn(2, 2), torch.randn(7)]
    groups = lambda params: [  # noqa: E731
        {"params": [params[0]], "lr": 1e-2, "betas": (0.8, 0.95), "weight_decay": 0.1, "amsgrad": True},
        {"params": [params[1], params[3]], "lr": 3e-3, "betas": (0.9, 0.99), "weight_decay": 0.0},
        {"params": [params[2]], "lr": torch.tensor(5e-3), "betas": (0.5, 0.9), "weight_decay": 0.3, "maximize": True},
    ]
    for name in ("Adam", "AdamW"):
        ours = OURS[name](groups([p.clone().requires_grad_() for p in base]))
        theirs = TORCH[name](groups([p.clone().requires_grad_() for p in base]))
        kernel_launches.clear()
        train_side_by_side(ours, theirs, steps=5, check_every_step=True)
        assert kernel_launches.launch_count() == kernel_launches.launch_count("adam_kernel") == 5
        assert (
            "max_exp_avg_sq" in ours.state[params_of(ours)[0]]
            and "max_exp_avg_sq" not in ours.state[params_of(ours)[1]]
        )
        # A group added later joins the same launch.
        for optimizer in (ours, theirs):
            optimizer.add_param_group({"params": [torch.randn(6).requires_grad_()], "lr": 2e-2, "amsgrad": True})
        new = params_of(theirs)[-1].detach().clone()
        with torch.no_grad():
            params_of(ours)[-1].copy_(new)
        kernel_launches.clear()
        train_side_by_side(ours, theirs, steps=3, check_every_step=True)
        assert kernel_launches.launch_count() == 3


def test_named_parameters_are_accepted_like_torch():
    model = torch.nn.Linear(3, 2)
    ours = AdamW(model.named_parameters())
    theirs = torch.optim.AdamW(torch.nn.Linear(3, 2).named_parameters())
    assert ours.state_dict()["param_groups"] == theirs.state_dict()["param_groups"]
    assert ours.param_groups[0]["param_names"] == ["weight", "bias"]


SCHEDULERS = [
    ("StepLR", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5)),
    ("MultiStepLR", lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[1, 3])),
    ("ConstantLR", lambda o: torch.optim.lr_scheduler.ConstantLR(o, factor=0.5, total_iters=2)),
    ("LinearLR", lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.2, total_iters=4)),
    ("ExponentialLR", lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.8)),
    ("PolynomialLR", lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=4, power=2.0)),
    ("CosineAnnealingLR", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=3)),
    ("CosineAnnealingWarmRestarts", lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=2)),
    ("LambdaLR", lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (e + 1))),
    ("MultiplicativeLR", lambda o: torch.optim.lr_scheduler.MultiplicativeLR(o, lambda e: 0.9)),
    ("CyclicLR", lambda o: torch.optim.lr_scheduler.CyclicLR(o, 1e-4, 1e-2, step_size_up=2, cycle_momentum=False)),
    ("OneCycleLR", lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1e-2, total_steps=10)),
    ("ReduceLROnPlateau", lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=0, factor=0.5)),
    (
        "SequentialLR",
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [torch.optim.lr_scheduler.LinearLR(o, 0.1, total_iters=2), torch.optim.lr_scheduler.ExponentialLR(o, 0.9)],
            milestones=[2],
        ),
    ),
    (
        "ChainedScheduler",
        lambda o: torch.optim.lr_scheduler.ChainedScheduler(
            [torch.optim.lr_scheduler.ConstantLR(o, 0.5, total_iters=2), torch.optim.lr_scheduler.ExponentialLR(o, 0.9)]
        ),
    ),
]


@pytest.mark.parametrize("lr", [1e-2, "tensor"])
@pytest.mark.parametrize(("desc", "make_scheduler"), SCHEDULERS, ids=[desc for desc, _ in SCHEDULERS])
def test_every_lr_scheduler_drives_our_lr_like_torchs(desc, make_scheduler, lr):
    # OneCycleLR also cycles beta1 through group["betas"], which the kernel reads every step.
    kwargs = {"lr": torch.tensor(1e-2) if lr == "tensor" else lr}
    ours, theirs = make_pair("AdamW", kwargs, shapes=[(2, 3)])
    schedulers = [make_scheduler(ours), make_scheduler(theirs)]
    for _ in range(5):
        set_same_grads(ours, theirs)
        ours.step()
        theirs.step()
        for scheduler in schedulers:
            if desc == "ReduceLROnPlateau":
                scheduler.step(1.0)  # a flat loss, so the rate keeps dropping
            else:
                scheduler.step()
        assert float(ours.param_groups[0]["lr"]) == float(theirs.param_groups[0]["lr"])
    assert_same(ours, theirs)


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_and_params_without_grad(set_to_none, kernel_launches):
    ours, theirs = make_pair("Adam", {"weight_decay": 0.1}, shapes=[(3,), (4,), (5,)])
    for step in range(4):
        for p, q in zip(params_of(ours), params_of(theirs), strict=True):
            # The middle parameter has no gradient in the first two steps.
            if p.shape == (4,) and step < 2:
                continue
            grad = torch.randn_like(p)
            if p.grad is None:
                p.grad, q.grad = grad.clone(), grad.clone()
            else:
                p.grad.copy_(grad)
                q.grad.copy_(grad)
        if step == 1:
            assert params_of(ours)[1] not in ours.state, "a parameter without a grad gets no state"
        ours.step()
        theirs.step()
        assert_same(ours, theirs)
        ours.zero_grad(set_to_none=set_to_none)
        theirs.zero_grad(set_to_none=set_to_none)
        for p in params_of(ours):
            assert p.grad is None if set_to_none else (p.grad is None or not p.grad.any())
    assert ours.state[params_of(ours)[1]]["step"].item() == 2.0
    # Zeroed (not None) gradients still step, as in torch.
    assert kernel_launches.launch_count("adam_kernel") == 4


def test_sparse_gradients_raise_like_torch():
    p = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = Adam([p])
    p.grad = torch.randn(4, 3).to_sparse()
    with pytest.raises(
        RuntimeError, match="Adam does not support sparse gradients, please consider SparseAdam instead"
    ):
        optimizer.step()


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_complex_params_match_torch(name, kernel_launches):
    # torch's for-loop updates view_as_real(param): the kernel does the same, on the real view.
    kwargs = {"weight_decay": 0.1, "amsgrad": True, "lr": 1e-2}
    ours, theirs = make_pair(name, kwargs, shapes=[(3, 4)], dtype=torch.complex64)
    train_side_by_side(ours, theirs, steps=10)
    assert ours.state[params_of(ours)[0]]["exp_avg"].dtype == torch.complex64
    assert kernel_launches.launch_count("adam_kernel") == 10


def test_awkward_layouts_are_updated_correctly(kernel_launches):
    # A transposed (dense) parameter runs in the kernel as it is; a parameter with gaps
    # (its state is contiguous, its layout is not) goes to the reference; a gradient in
    # another layout than its parameter is copied into the parameter's.
    # A parameter that starts 4 bytes into its storage is dense but not 16-byte aligned:
    # the kernel then uses no 128-bit accesses (a second specialization).
    transposed = torch.randn(5, 4).t()
    gappy = torch.randn(6, 8)[:, ::2]
    storage = torch.randn(1026)
    ours, theirs = make_pair("AdamW", {"amsgrad": True}, shapes=[(4, 5)])
    for optimizer in (ours, theirs):
        optimizer.add_param_group({"params": [transposed.clone().requires_grad_(), gappy.clone().requires_grad_()]})
        offset = storage.clone()[1:].requires_grad_()  # one full block and a tail
        optimizer.add_param_group({"params": [offset]})
    for _ in range(3):
        set_same_grads(ours, theirs)
        params_of(ours)[0].grad = params_of(ours)[0].grad.t().contiguous().t()
        ours.step()
        theirs.step()
    assert_same(ours, theirs)
    assert params_of(ours)[1].stride() == (1, 4), "the transposed parameter keeps its layout"
    # One launch per step for all three groups; the offset parameter makes it unaligned.
    assert [launch.kwargs["ALIGNED"]["bool"] for launch in kernel_launches.launches] == [False] * 3
    aligned = torch.nn.Parameter(torch.randn(1025))
    aligned.grad = torch.randn(1025)
    kernel_launches.clear()
    AdamW([aligned]).step()
    assert kernel_launches.launches[0].kwargs["ALIGNED"]["bool"] is True


def test_grad_scaler_matches_torch_and_skips_inf_steps_entirely(kernel_launches):
    """torch.amp.GradScaler hands us grad_scale and found_inf; we unscale and skip in the kernel."""
    torch.manual_seed(1)
    model_ours = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model_torch = copy.deepcopy(model_ours)
    model_fused = copy.deepcopy(model_ours)
    ours = AdamW(model_ours.parameters(), lr=1e-2, amsgrad=True)
    theirs = torch.optim.AdamW(model_torch.parameters(), lr=1e-2, amsgrad=True)
    fused = torch.optim.AdamW(model_fused.parameters(), lr=1e-2, amsgrad=True, fused=True)
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2) for _ in range(3)]
    pairs = list(zip((model_ours, model_torch, model_fused), (ours, theirs, fused), scalers, strict=True))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    for step in range(8):
        inf_step = step in (2, 5)
        if inf_step:
            before = (copy.deepcopy(ours.state_dict()), [p.detach().clone() for p in model_ours.parameters()])
        for model, optimizer, scaler in pairs:
            optimizer.zero_grad()
            scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
            if inf_step:
                next(model.parameters()).grad[0, 0] = math.inf
            if step == 6:
                # The gradient-clipping recipe: unscale first, then the optimizer gets only found_inf.
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            scaler.step(optimizer)
            scaler.update()
        assert bool(ours.last_step_skipped) == inf_step
        if inf_step:
            state, params = before
            for p, old in zip(model_ours.parameters(), params, strict=True):
                assert torch.equal(p.detach(), old)
            for index, values in ours.state_dict()["state"].items():
                for key, value in values.items():
                    assert torch.equal(value, state["state"][index][key]), key
        assert_same(ours, theirs)
        assert_same(ours, fused)
        assert scalers[0].get_scale() == scalers[1].get_scale()
    # 8 steps over one (device, dtype) group, the two skipped ones included (no host sync).
    assert kernel_launches.launch_count("adam_kernel") == 8


def test_grad_scale_and_found_inf_without_host_sync():
    params = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3))]
    optimizer = AdamW(params, lr=torch.tensor(1e-2), betas=(torch.tensor(0.9), torch.tensor(0.99)), amsgrad=True)
    for p in params:
        p.grad = torch.randn_like(p) * 8
    optimizer.grad_scale = torch.tensor(8.0)
    for index, found in enumerate((0.0, 1.0, 0.0, math.nan, 1.0, 0.0)):
        optimizer.found_inf = torch.tensor(found)
        before = [p.detach().clone() for p in params]
        with no_host_sync(), KernelTrace() as launches, TorchTrace() as aten:
            optimizer.step()
            skipped = optimizer.last_step_skipped
        # The kernel writes the skip flag and reads the tensor lr and betas itself: one
        # launch, and after the first step (which creates the state) no aten kernel.
        assert launches.launch_count() == launches.launch_count("adam_kernel") == 1
        assert index == 0 or aten.kernel_count() == 0, aten.by_op()
        assert skipped.dtype == torch.bool and skipped.dim() == 0 and bool(skipped) == (found != 0.0)
        assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True)) == (found != 0.0)
    assert optimizer.state[params[0]]["step"].item() == 3.0
    with reference_backend():  # no kernel to write the flag: found_inf != 0 in torch
        for found in (1.0, 0.0):
            optimizer.found_inf = torch.tensor(found)
            optimizer.step()
            assert bool(optimizer.last_step_skipped) == (found == 1.0)
    assert optimizer.state[params[0]]["step"].item() == 4.0
    # Float hyperparameters without GradScaler: no sync either.
    plain = AdamW(params, lr=1e-2, amsgrad=True)
    with no_host_sync():
        plain.step()
        plain.step()
    with pytest.raises(HostSyncError):  # the detector works
        with no_host_sync():
            optimizer.state[params[0]]["step"].item()


def test_kernel_matches_the_reference_step():
    """The eager reference (the fallback where Triton cannot run) computes what the kernel computes."""
    for kwargs in ({"weight_decay": 0.1, "amsgrad": True, "maximize": True}, {"lr": torch.tensor(0.01)}):
        base = [torch.randn(s) for s in SHAPES]
        kernel_params = [p.clone().requires_grad_() for p in base]
        reference_params = [p.clone().requires_grad_() for p in base]
        kernel_opt, reference_opt = Adam(kernel_params, **kwargs), Adam(reference_params, **kwargs)
        for _ in range(5):
            set_same_grads(kernel_opt, reference_opt)
            kernel_opt.grad_scale, reference_opt.grad_scale = torch.tensor(2.0), torch.tensor(2.0)
            with KernelTrace() as trace:
                kernel_opt.step()
                with reference_backend():
                    reference_opt.step()
            assert trace.launch_count("adam_kernel") == 1
        assert_same(kernel_opt, reference_opt, rtol=1e-6, atol=1e-7)


def test_reference_backend_matches_torch():
    with reference_backend():
        ours, theirs = make_pair("AdamW", {"amsgrad": True, "weight_decay": 0.1}, shapes=SHAPES)
        train_side_by_side(ours, theirs, steps=5)
    # The reference is also usable directly, on plain lists of tensors.
    assert callable(reference.adam_step_ref)


def test_optimizer_pickles_and_deep_copies():
    ours, theirs = make_pair("AdamW", {"amsgrad": True}, shapes=[(3,)])
    set_same_grads(ours, theirs)
    ours.step()
    theirs.step()
    clone = copy.deepcopy(ours)
    assert isinstance(clone, AdamW) and clone._cache is None
    restored = pickle.loads(pickle.dumps(ours))
    assert restored.param_groups[0]["decoupled_weight_decay"] is True


def test_step_with_closure_returns_the_loss():
    model = torch.nn.Linear(3, 1)
    optimizer = AdamW(model.parameters())
    x = torch.randn(4, 3)

    def closure():
        optimizer.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad


def aot_workload():
    """One step through every kernel specialization these tests launch."""
    variants = [
        # fp32 and fp64 (test_property_random_params_and_flags draws any of these).
        (name, {"amsgrad": amsgrad, "maximize": maximize, "lr": lr, "weight_decay": 0.1}, dtype)
        for dtype in (torch.float32, torch.float64)
        for name in ("Adam", "AdamW")
        for amsgrad in (False, True)
        for maximize in (False, True)
        for lr in (1e-2, torch.tensor(1e-2))
    ]
    for dtype in (torch.float16, torch.bfloat16, torch.complex64):
        variants += [(name, {"amsgrad": True, "weight_decay": 0.1}, dtype) for name in ("Adam", "AdamW")]
    variants += [("AdamW", {}, torch.bfloat16)]
    # Tensor betas, read and derived in the kernel (torch_configs' capturable configs).
    tensor_betas = {"lr": torch.tensor(1e-3), "betas": (torch.tensor(0.9), torch.tensor(0.99))}
    variants += [
        (name, {**tensor_betas, "amsgrad": amsgrad}, torch.float32) for name in OURS for amsgrad in (False, True)
    ]
    for name, kwargs, dtype in variants:
        ours, theirs = make_pair(name, kwargs, shapes=[(3, 4, 5)], dtype=dtype)
        set_same_grads(ours, theirs)
        ours.step()
    # Addresses that are not 16-byte aligned (test_awkward_layouts_are_updated_correctly).
    offset = torch.randn(1026)[1:].requires_grad_()
    offset.grad = torch.randn_like(offset)
    AdamW([offset], amsgrad=True).step()
    # GradScaler: grad_scale with found_inf, found_inf alone (after unscale_), and
    # grad_scale alone (test_kernel_matches_the_reference_step).
    for name, kwargs in (("AdamW", {}), ("AdamW", {"amsgrad": True}), ("Adam", {"amsgrad": True, "maximize": True})):
        for grad_scale, found_inf in ((2.0, 0.0), (None, 0.0), (2.0, None)):
            for lr in (1e-2, torch.tensor(1e-2)):
                p = torch.nn.Parameter(torch.randn(5))
                p.grad = torch.randn(5)
                optimizer = OURS[name]([p], lr=lr, weight_decay=0.1, **kwargs)
                if grad_scale is not None:
                    optimizer.grad_scale = torch.tensor(grad_scale)
                if found_inf is not None:
                    optimizer.found_inf = torch.tensor(found_inf)
                optimizer.step()
    # Moments in another dtype than the parameters' (state_dtype): the moment pointers' type.
    from test_adam_state_dtype import state_dtype_workload

    state_dtype_workload()


@pytest.mark.parametrize("name", ["AdamW", "SGD"])
def test_torch_compile_fullgraph_step_fails_naming_fused_ops(name, kernel_launches):
    """step() under torch.compile(fullgraph=True): an error that names fused_ops and what to do instead."""
    model = torch.nn.Linear(3, 2)
    optimizer = getattr(fused_ops.optim, name)(model.parameters(), lr=1e-2)
    model(torch.randn(4, 3)).sum().backward()
    torch._dynamo.reset()

    def train_step():
        optimizer.step()

    with pytest.raises(Exception, match=r"fused_ops\.optim optimizers launch their Triton kernel") as error:
        torch.compile(train_step, fullgraph=True, backend="eager")()
    assert "call optimizer.step() outside the compiled function" in str(error.value)
    # Without fullgraph, the step runs (eagerly, through the kernel) at a graph break.
    torch.compile(train_step, backend="eager")()
    assert kernel_launches.launch_count() == 1


def test_new_gradients_in_another_layout_never_reach_the_cached_grad_table(kernel_launches):
    """Each step gives new gradient tensors (the cached path then only checks their layout).

    Gradients that are transposed views, or lazily negated views (whose memory holds -g),
    of the parameters' shape must not be read through the cached grad table as if they
    were contiguous: ours must keep matching torch's AdamW, step after step.
    """
    ours, theirs = make_pair("AdamW", {"weight_decay": 0.1}, shapes=[(3, 4), (4, 3), (5,)])

    def with_grads(make):
        for p, q in zip(params_of(ours), params_of(theirs), strict=True):
            grad = make(p)
            p.grad, q.grad = grad, grad.clone()
        ours.step()
        theirs.step()
        assert_same(ours, theirs)

    def transposed(p):
        return torch.randn(tuple(reversed(p.shape))).t() if p.dim() == 2 else torch.randn_like(p)

    # Each kind of gradient right after a step whose tables were cached (new contiguous
    # gradients): the cached path is the one that has to notice.
    for make in (transposed, lambda p: torch._neg_view(torch.randn_like(p))):
        with_grads(lambda p: torch.randn_like(p))  # builds the tables (again)
        with_grads(lambda p: torch.randn_like(p))  # new contiguous grads: cached tables, new grad table
        builds = ours.plan_builds
        with_grads(make)
        assert ours.plan_builds > builds  # seen, and copied into the parameter's layout
    assert kernel_launches.launch_count("adam_kernel") == 6
