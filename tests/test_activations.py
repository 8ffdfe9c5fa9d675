"""sigmoid, tanh, relu, gelu and silu: forward and backward against torch, through the Triton kernels.

Tests that hold for every activation are parametrized over ``ACTIVATIONS``, pairs of
(fused op, torch op); the behaviour where the ops differ (tails, precision near 0, NaN,
integer inputs, in-place relu) has its own tests below them.
"""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    DTYPES,
    HostSyncError,
    assert_close,
    assert_compiled_matches_eager,
    forward_backward,
    no_host_sync,
    reference_in_fp64,
    strided_variants,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import fused_ops
from fused_ops._dispatch import reference_backend
from fused_ops.activations import relu_
from fused_ops.profiling import KernelTrace

# name -> (fused op, torch op); the name is also the prefix of the op's kernels.
ACTIVATIONS = {
    "sigmoid": (fused_ops.sigmoid, torch.sigmoid),
    "tanh": (fused_ops.tanh, torch.tanh),
    "relu": (fused_ops.relu, torch.relu),
}
NAMES = list(ACTIVATIONS)
INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

# Shapes, and the code path each reaches in the elementwise kernels (BLOCK_SIZE = 1024):
SHAPES = [
    (1,),  # one element: a single, almost fully masked program
    (63,),  # less than a block
    (781,),  # less than a block, odd
    (1823,),  # two programs, the second partially masked
    (3, 5, 7),  # 3-D
    (0,),  # empty: no launch at all
    (4, 0, 3),  # empty with non-zero dims
    (),  # 0-d
]


def _away_from_zero(*shape, dtype=torch.float64):
    """Random values with |x| in [0.1, 1.1]: finite differences never straddle relu's kink."""
    x = torch.randn(*shape, dtype=dtype)
    return x.sign() * (0.1 + torch.rand(*shape, dtype=dtype))


def _ulp_error(actual: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|actual - exact| in units of the last place of ``actual``'s dtype at ``exact``."""
    numpy_dtype = np.float32 if actual.dtype == torch.float32 else np.float64
    spacing = torch.from_numpy(np.spacing(np.abs(exact.numpy()).astype(numpy_dtype)).astype(np.float64))
    return (actual.double() - exact).abs() / spacing


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_torch(name, shape, dtype, kernel_launches):
    fused_op, torch_op = ACTIVATIONS[name]
    x = torch.randn(shape, dtype=dtype) * 4
    y, grad, grad_output = forward_backward(fused_op, x)
    y_ref, grad_ref, _ = forward_backward(torch_op, x, grad_output=grad_output)
    assert_close(y, reference_in_fp64(torch_op, x))
    assert_close(y, y_ref)
    # The backward kernel sees the rounded forward output, exactly like torch's.
    assert_close(grad, grad_ref)
    expected_launches = 0 if x.numel() == 0 else 1
    assert kernel_launches.launch_count(f"{name}_forward_kernel") == expected_launches
    assert kernel_launches.launch_count(f"{name}_backward_kernel") == expected_launches


@pytest.mark.parametrize("name", NAMES)
def test_nan_and_inf_follow_torch(name):
    fused_op, torch_op = ACTIVATIONS[name]
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e30, -1e30], requires_grad=True)
    y = fused_op(x)
    y_ref = torch_op(x)
    assert_close(y, y_ref)
    zeros = y_ref == 0
    assert torch.equal(y[zeros].signbit(), y_ref[zeros].signbit()), "the sign of zero differs from torch's"
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    (grad_ref,) = torch.autograd.grad(y_ref, x, torch.ones_like(y))
    assert_close(grad, grad_ref)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced", "expanded"])
def test_strided_inputs(name, layout, kernel_launches):
    fused_op, torch_op = ACTIVATIONS[name]
    x = strided_variants((37, 29))[layout]
    y, grad, grad_output = forward_backward(fused_op, x)
    y_ref, grad_ref, _ = forward_backward(torch_op, x, grad_output=grad_output)
    assert_close(y, y_ref)
    assert_close(grad, grad_ref)
    assert kernel_launches.launch_count(f"{name}_forward_kernel") == 1
    if layout == "transposed":
        assert y.stride() == x.stride(), "a dense permuted input keeps its layout, with no copy"


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_and_gradgradcheck(name):
    fused_op, _ = ACTIVATIONS[name]
    x = _away_from_zero(4, 7).requires_grad_()
    assert torch.autograd.gradcheck(fused_op, (x,))
    assert torch.autograd.gradgradcheck(fused_op, (x,))


@pytest.mark.parametrize("name", NAMES)
def test_second_backward_through_freed_graph_raises(name):
    fused_op, _ = ACTIVATIONS[name]
    x = torch.randn(5, requires_grad=True)
    y = fused_op(x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_promotes_integers_like_torch(name, kernel_launches):
    fused_op, torch_op = ACTIVATIONS[name]
    x = torch.arange(-3, 4)
    assert_close(fused_op(x), torch_op(x))
    assert fused_op(torch.tensor([True, False])).dtype == torch.float32
    assert kernel_launches.launch_count(f"{name}_forward_kernel") == 2


@pytest.mark.parametrize("name", NAMES)
def test_rejects_complex_and_leaves_input_untouched(name):
    fused_op, _ = ACTIVATIONS[name]
    x = torch.randn(3, dtype=torch.complex64)
    before = x.clone()
    with pytest.raises(NotImplementedError, match="not implemented for"):
        fused_op(x)
    assert torch.equal(x, before)


@pytest.mark.parametrize("name", NAMES)
def test_does_not_modify_its_input(name):
    fused_op, _ = ACTIVATIONS[name]
    x = torch.randn(100)
    before = x.clone()
    fused_op(x)
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    ("fused_module", "torch_module", "kernel"),
    [
        (fused_ops.nn.Sigmoid(), torch.nn.Sigmoid(), "sigmoid_forward_kernel"),
        (fused_ops.nn.Tanh(), torch.nn.Tanh(), "tanh_forward_kernel"),
        (fused_ops.nn.ReLU(), torch.nn.ReLU(), "relu_forward_kernel"),
        (fused_ops.nn.ReLU(inplace=True), torch.nn.ReLU(inplace=True), "relu_forward_kernel"),
    ],
    ids=["Sigmoid", "Tanh", "ReLU", "ReLU_inplace"],
)
def test_module_matches_torch(fused_module, torch_module, kernel, kernel_launches):
    x = torch.randn(8, 16)
    assert_close(fused_module(x.clone()), torch_module(x.clone()))
    assert repr(fused_module) == f"fused_ops.{torch_module!r}"  # print(model) shows what is fused
    assert kernel_launches.launch_count(kernel) == 1


@settings(max_examples=20, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=4),
    dtype=st.sampled_from(DTYPES),
    transpose=st.booleans(),
    step=st.integers(1, 3),
)
def test_property_random_shapes_and_strides(name, shape, dtype, transpose, step):
    fused_op, torch_op = ACTIVATIONS[name]
    x = torch.randn(shape, dtype=dtype) * 5
    if x.dim() >= 2 and transpose:
        x = x.transpose(0, 1)
    if x.dim() >= 1:
        x = x[::step]
    y, grad, grad_output = forward_backward(fused_op, x)
    y_ref, grad_ref, _ = forward_backward(torch_op, x, grad_output=grad_output)
    assert_close(y, y_ref)
    assert_close(grad, grad_ref)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_under_torch_compile_fullgraph(name, backend, kernel_launches):
    fused_op, _ = ACTIVATIONS[name]
    x = torch.randn(6, 5, requires_grad=True)
    assert_compiled_matches_eager(lambda t: fused_op(t * 2).sum(dim=0), x, backend=backend)
    assert kernel_launches.launch_count(f"{name}_forward_kernel") == 2  # eager run + compiled run
    assert kernel_launches.launch_count(f"{name}_backward_kernel") == 2


@pytest.mark.parametrize("name", NAMES)
def test_compiled_graph_holds_the_fused_ops_and_eager_calls_do_not(name, kernel_launches):
    # Eager calls launch the kernels with no torch.library op on the way (host time);
    # torch.compile traces the custom ops, which inductor calls from its generated code.
    # The graph cannot hold the Triton kernels themselves (torch.library.triton_op +
    # wrap_triton) on this CPU suite: under TRITON_INTERPRET=1, wrap_triton returns the
    # InterpretedFunction unwrapped, which then runs on FakeTensors while tracing and fails
    # ("Cannot access data pointer of Tensor (e.g. FakeTensor, FunctionalTensor)").
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    fused_op, _ = ACTIVATIONS[name]
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(graph_module)
        return make_boxed_func(graph_module.forward)

    x = torch.randn(6, 5, requires_grad=True)
    with torch.profiler.profile() as eager_profile:
        fused_op(x).sum().backward()
    eager_ops = {event.name for event in eager_profile.events()}
    assert not any(op.startswith("fused_ops::") for op in eager_ops), eager_ops

    torch._dynamo.reset()
    compiled = torch.compile(lambda t: fused_op(t).sum(), fullgraph=True, backend=aot_autograd(fw_compiler=record))
    compiled(x).backward()
    targets = {str(node.target) for graph in graphs for node in graph.graph.nodes if node.op == "call_function"}
    assert f"fused_ops.{name}_forward.default" in targets, targets
    assert f"fused_ops.{name}_backward.default" in targets, targets
    assert kernel_launches.launch_count(f"{name}_forward_kernel") == 2


@pytest.mark.parametrize("name", NAMES)
def test_has_no_host_sync(name, kernel_launches):
    fused_op, _ = ACTIVATIONS[name]
    x = torch.randn(300, requires_grad=True)
    with no_host_sync():
        fused_op(x).backward(torch.ones(300))
    assert kernel_launches.launch_count(f"{name}_backward_kernel") == 1


def test_no_host_sync_detector_catches_item():
    with pytest.raises(HostSyncError), no_host_sync():
        torch.ones(2).sum().item()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.interpreter_only  # counts bytes
def test_traffic_is_one_read_and_one_write_per_tensor(name, dtype):
    # Forward reads the input and writes the output; backward reads grad_output and the
    # saved output and writes grad_input: 2 and 3 tensor-sized accesses, nothing more.
    fused_op, _ = ACTIVATIONS[name]
    n = 3 * 1024 + 5  # three full blocks and a masked tail
    x = torch.randn(n, dtype=dtype, requires_grad=True)
    with KernelTrace() as forward:
        y = fused_op(x)
    with KernelTrace() as backward:
        y.backward(torch.ones_like(y))
    size = dtype.itemsize
    assert forward.launch_count() == backward.launch_count() == 1
    assert forward.bytes_loaded == forward.bytes_stored == n * size
    assert forward.bytes_moved <= 1.05 * 2 * n * size
    assert backward.bytes_loaded == 2 * n * size and backward.bytes_stored == n * size
    assert backward.bytes_moved <= 1.05 * 3 * n * size


@pytest.mark.parametrize("name", NAMES)
def test_reference_fallback_matches_torch(name, kernel_launches):
    # The path taken where Triton cannot run: same results, no kernel.
    fused_op, torch_op = ACTIVATIONS[name]
    x = torch.randn(3, 37, dtype=torch.float64)
    with reference_backend():
        y, grad, grad_output = forward_backward(fused_op, x)
        x_inplace = x[:, ::2].clone()
        relu_(x_inplace)
    y_ref, grad_ref, _ = forward_backward(torch_op, x, grad_output=grad_output)
    assert_close(y, y_ref)
    assert_close(grad, grad_ref)
    assert torch.equal(x_inplace, torch.relu(x[:, ::2]))
    assert kernel_launches.launch_count() == 0


def test_sigmoid_tails_keep_relative_precision():
    x = torch.tensor([-80.0, -30.0, 30.0, 80.0])
    y = fused_ops.sigmoid(x)
    expected = torch.sigmoid(x.double()).float()
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=0)
    assert 1.7e-35 < y[0].item() < 1.9e-35


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_tanh_keeps_relative_precision_near_zero(dtype, kernel_launches):
    # (1 - e) / (1 + e) with e = exp(-2|x|) would return 0 or a cancellation artifact here.
    tiny = torch.logspace(-30, -3, 500, dtype=torch.float64).to(dtype)
    x = torch.cat([tiny, -tiny])
    y = fused_ops.tanh(x)
    assert (_ulp_error(y, torch.tanh(x.double())) <= 1).all()
    assert fused_ops.tanh(torch.tensor([1e-8], dtype=dtype)).item() == torch.tensor([1e-8], dtype=dtype).item()
    assert kernel_launches.launch_count("tanh_forward_kernel") == 2


@pytest.mark.parametrize(("dtype", "max_ulp"), [(torch.float32, 2), (torch.float64, 1)], ids=str)
def test_tanh_accuracy_over_the_whole_range(dtype, max_ulp):
    # Crosses the switch from the polynomial (|x| < 0.625) to the exp form, into the tails.
    x = torch.linspace(-12, 12, 20001, dtype=dtype)
    y = fused_ops.tanh(x)
    # Rounded fp64 torch.tanh is the exact value to within 1 fp32 ulp; in fp64 compare to
    # libm's tanh, itself within 1 ulp, so allow one more.
    tolerance = max_ulp + (1 if dtype == torch.float64 else 0)
    assert _ulp_error(y, torch.tanh(x.double())).max() <= tolerance


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_tanh_tails_are_exactly_one_with_the_sign(dtype):
    # 1 - tanh(20) is 8e-18, below half an ulp of 1 even in fp64; exp(-2|x|) underflows
    # to 0 further out and must give 1, never inf / inf = NaN.
    big = torch.tensor([20.0, 30.0, 1e4, 6e4, float("inf")], dtype=dtype)
    y = fused_ops.tanh(torch.cat([big, -big]))
    assert y.tolist() == [1.0] * 5 + [-1.0] * 5


def test_tanh_of_signed_zero_keeps_the_sign():
    y = fused_ops.tanh(torch.tensor([0.0, -0.0]))
    assert y.tolist() == [0.0, 0.0] and y.signbit().tolist() == [False, True]


def test_relu_gradient_at_zero_matches_torch():
    # torch's threshold_backward masks with output <= 0, so the gradient at 0 (and -0) is 0
    # and a NaN output passes the gradient through.
    x = torch.tensor([0.0, -0.0, 1.0, -1.0, float("nan")])
    _, grad, grad_output = forward_backward(fused_ops.relu, x, grad_output=torch.full((5,), 3.0))
    _, grad_ref, _ = forward_backward(torch.relu, x, grad_output=grad_output)
    assert torch.equal(grad, grad_ref)
    assert grad.tolist() == [0.0, 0.0, 3.0, 0.0, 3.0]


def test_relu_propagates_nan():
    y = fused_ops.relu(torch.tensor([float("nan"), -float("nan")], dtype=torch.bfloat16))
    assert y.isnan().all()


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_relu_on_integers_stays_integer_through_the_kernel(dtype, kernel_launches):
    info = torch.iinfo(dtype)
    x = torch.tensor([info.min, -3, -1, 0, 1, 7, info.max], dtype=dtype)
    y = fused_ops.relu(x)
    assert y.dtype == dtype
    assert torch.equal(y, torch.relu(x))
    assert kernel_launches.launch_count("relu_forward_kernel") == 1


def test_relu_int64_keeps_every_bit():
    # Through fp32, 2**53 + 1 would round; the kernel compares and selects in int64.
    x = torch.tensor([2**53 + 1, 2**62 + 3, -(2**62)])
    assert torch.equal(fused_ops.relu(x), torch.relu(x))


@pytest.mark.parametrize(
    ("dtype", "error", "message"),
    [
        (torch.bool, RuntimeError, "Boolean inputs not supported for relu"),
        (torch.uint16, NotImplementedError, "not implemented for"),
    ],
    ids=str,
)
def test_relu_rejects_what_torch_rejects(dtype, error, message):
    x = torch.tensor([1, 0]).to(dtype)
    before = x.clone()
    with pytest.raises(error, match=message):
        torch.relu(x)
    with pytest.raises(error, match=message):
        fused_ops.relu(x)
    assert torch.equal(x, before)


def test_relu_inplace_writes_into_its_input_with_autograd(kernel_launches):
    w = torch.randn(40, requires_grad=True)
    h = w * 2
    version = h._version
    with no_host_sync():
        out = relu_(h)
    assert out is h and h._version > version
    assert kernel_launches.launch_count("relu_forward_kernel") == 1
    out.backward(torch.arange(40.0))
    h_ref = w.detach().clone().requires_grad_()
    torch.relu_(h_ref * 2).backward(torch.arange(40.0))
    assert_close(out.detach(), torch.relu(w.detach() * 2))
    assert_close(w.grad, h_ref.grad)
    assert kernel_launches.launch_count("relu_backward_kernel") == 1


@pytest.mark.parametrize("view", [False, True], ids=["leaf", "view_of_leaf"])
def test_relu_inplace_rejects_a_leaf_that_requires_grad(view):
    leaf = torch.randn(4, requires_grad=True)
    x = leaf[1:] if view else leaf
    before = leaf.detach().clone()
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad") as torch_error:
        torch.relu_(x)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad") as ours:
        fused_ops.nn.ReLU(inplace=True)(x)
    assert str(ours.value).split(" is being")[0] == str(torch_error.value).split(" is being")[0]
    assert torch.equal(leaf.detach(), before), "raised only after overwriting the input"


def test_relu_inplace_is_caught_when_it_overwrites_a_saved_tensor():
    w = torch.randn(6, requires_grad=True)
    h = w * 1
    product = h * h  # saves h for its backward
    relu_(h)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        product.sum().backward()


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_relu_inplace_on_views_writes_through(layout, kernel_launches):
    # transposed: dense, the kernel writes in place; sliced: computed densely, copied back.
    base = torch.randn(12, 10)
    x = base.t() if layout == "transposed" else base[:, ::2]
    expected_base = base.clone()
    expected_base.t().relu_() if layout == "transposed" else expected_base[:, ::2].relu_()
    assert relu_(x) is x
    assert torch.equal(base, expected_base)
    assert kernel_launches.launch_count("relu_forward_kernel") == 1


def test_relu_inplace_on_overlapping_memory_raises_like_torch():
    x = torch.randn(3, 1).expand(3, 4)
    before = x.clone()
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        relu_(x)
    assert torch.equal(x, before)


def test_relu_inplace_on_integers(kernel_launches):
    x = torch.tensor([-5, 0, 9], dtype=torch.int32)
    assert relu_(x) is x
    assert x.tolist() == [0, 0, 9]
    assert kernel_launches.launch_count("relu_forward_kernel") == 1


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_relu_inplace_under_torch_compile_fullgraph(backend, kernel_launches):
    x = torch.randn(6, 5, requires_grad=True)
    assert_compiled_matches_eager(lambda t: relu_(t * 2).sum(dim=0), x, backend=backend)
    assert kernel_launches.launch_count("relu_forward_kernel") == 2


# gelu (both forms) and silu: name -> (fused op, torch op, prefix of its kernels). Their
# backward recomputes from the saved input, unlike the three ops above.
SMOOTH = {
    "gelu": (fused_ops.gelu, F.gelu, "gelu"),
    "gelu_tanh": (
        functools.partial(fused_ops.gelu, approximate="tanh"),
        functools.partial(F.gelu, approximate="tanh"),
        "gelu",
    ),
    "silu": (fused_ops.silu, F.silu, "silu"),
}
SMOOTH_NAMES = list(SMOOTH)


@pytest.mark.parametrize("name", SMOOTH_NAMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gelu_silu_match_torch(name, shape, dtype, kernel_launches):
    fused_op, torch_op, kernel = SMOOTH[name]
    x = torch.randn(shape, dtype=dtype) * 4
    y, grad, grad_output = forward_backward(fused_op, x)
    y_ref, grad_ref, _ = forward_backward(torch_op, x, grad_output=grad_output)
    _, grad_exact, _ = forward_backward(torch_op, x.double(), grad_output=grad_output.double())
    assert_close(y, reference_in_fp64(torch_op, x))
    assert_close(y, y_ref)
    assert_close(grad, grad_exact.to(dtype))
    if name == "gelu_tanh" and dtype == torch.float32:
        # torch's fp32 gradient cancels in 1 + tanh(u) and 1 - tanh(u)^2 for x < -2 and
        # is itself up to ~3e-6 off the fp64 value; the kernel's (checked above) is not.
        torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=4e-6)
    else:
        assert_close(grad, grad_ref)
    expected_launches = 0 if x.numel() == 0 else 1
    assert kernel_launches.launch_count(f"{kernel}_forward_kernel") == expected_launches
    assert kernel_launches.launch_count(f"{kernel}_backward_kernel") == expected_launches


# Expected values on [nan, inf, -inf, 0, -0, 1e30, -1e30, 3e38], by torch's formulas, which
# torch's CUDA kernels and its scalar CPU path follow. (torch's vectorized fp32 CPU gelu
# returns NaN for +inf and inf for 3e38, artifacts of its SIMD erf, not of the formula.)
_SPECIALS = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e30, -1e30, 3e38]
_NAN = float("nan")
_SPECIAL_OUTPUTS = {
    "gelu": [_NAN, float("inf"), _NAN, 0.0, -0.0, 1e30, -0.0, 3e38],
    "gelu_tanh": [_NAN, float("inf"), _NAN, 0.0, -0.0, 1e30, -0.0, 3e38],
    "silu": [_NAN, float("inf"), _NAN, 0.0, -0.0, 1e30, -0.0, 3e38],
}


@pytest.mark.parametrize("name", SMOOTH_NAMES)
def test_gelu_silu_nan_inf_and_signed_zero(name):
    fused_op, torch_op, _ = SMOOTH[name]
    x = torch.tensor(_SPECIALS, requires_grad=True)
    y = fused_op(x)
    expected = torch.tensor(_SPECIAL_OUTPUTS[name])
    assert_close(y.detach(), expected)
    zeros = expected == 0
    assert torch.equal(y.detach()[zeros].signbit(), expected[zeros].signbit()), "the sign of zero differs from torch's"
    # torch one element at a time (its scalar path) agrees on every value.
    for i, value in enumerate(_SPECIALS):
        assert_close(y[i : i + 1].detach(), torch_op(torch.tensor([value])))
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    grad_ref = torch.cat(
        [torch.autograd.grad(torch_op(x[i : i + 1]), x, torch.ones(1))[0][i : i + 1] for i in range(8)]
    )
    assert_close(grad, grad_ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_gelu_tail_is_torchs(dtype):
    # torch's 0.5 x (1 + erf(x / sqrt 2)) cancels in the far negative tail: tiny but nonzero
    # at -5.5, exactly -0.0 at -10 in fp32. The kernel uses the same formula and gives the same.
    x = torch.tensor([-5.5, -7.0, -10.0, -40.0], dtype=dtype)
    y = fused_ops.gelu(x)
    torch.testing.assert_close(y, F.gelu(x), rtol=1e-6, atol=0)
    assert y[0] < 0 and y.signbit().all()


def test_silu_negative_tail_keeps_relative_precision():
    # x * sigmoid(x) through exp(-|x|): silu(-80) = -80 exp(-80) ~ -1.4e-33, close to the
    # exact value, where x / (1 + exp(-x)) gives -0.0 once exp(-x) overflows fp32 (x < -88).
    x = torch.tensor([-20.0, -40.0, -80.0, -87.0])
    y = fused_ops.silu(x)
    exact = F.silu(x.double())
    torch.testing.assert_close(y.double(), exact, rtol=1e-6, atol=0)
    _, grad, _ = forward_backward(fused_ops.silu, x, grad_output=torch.ones(4))
    torch.testing.assert_close(
        grad.double(),
        forward_backward(F.silu, x.double(), grad_output=torch.ones(4, dtype=torch.float64))[1],
        rtol=1e-5,
        atol=0,
    )


@pytest.mark.parametrize("name", SMOOTH_NAMES)
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced", "expanded"])
def test_gelu_silu_strided_inputs(name, layout, kernel_launches):
    fused_op, torch_op, kernel = SMOOTH[name]
    x = strided_variants((37, 29))[layout]
    y, grad, grad_output = forward_backward(fused_op, x)
    y_ref, grad_ref, _ = forward_backward(torch_op, x, grad_output=grad_output)
    assert_close(y, y_ref)
    assert_close(grad, grad_ref)
    assert kernel_launches.launch_count(f"{kernel}_forward_kernel") == 1
    assert kernel_launches.launch_count(f"{kernel}_backward_kernel") == 1
    if layout == "transposed":
        assert y.stride() == x.stride(), "a dense permuted input keeps its layout, with no copy"


@pytest.mark.parametrize("name", SMOOTH_NAMES)
def test_gelu_silu_gradcheck_and_gradgradcheck(name, kernel_launches):
    fused_op, _, kernel = SMOOTH[name]
    x = (torch.randn(4, 7, dtype=torch.float64) * 3).requires_grad_()
    assert torch.autograd.gradcheck(fused_op, (x,))
    assert torch.autograd.gradgradcheck(fused_op, (x,))
    assert kernel_launches.launch_count(f"{kernel}_backward_kernel") > 0


@pytest.mark.parametrize("name", SMOOTH_NAMES)
def test_gelu_silu_second_backward_through_freed_graph_raises(name):
    fused_op, _, _ = SMOOTH[name]
    x = torch.randn(5, requires_grad=True)
    y = fused_op(x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


@pytest.mark.parametrize("name", SMOOTH_NAMES)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64], ids=str)
def test_gelu_silu_reject_what_torch_rejects(name, dtype):
    fused_op, torch_op, _ = SMOOTH[name]
    x = torch.tensor([1, 0, 1]).to(dtype)
    before = x.clone()
    if dtype == torch.complex64 and name == "silu":
        torch_op(x)  # torch's silu takes complex; fused_ops has no complex kernel and says so
    else:
        with pytest.raises(NotImplementedError, match="not implemented for"):
            torch_op(x)
    with pytest.raises(NotImplementedError, match="not implemented for"):
        fused_op(x)
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    ("approximate", "error"),
    [("foo", RuntimeError), ("Tanh", RuntimeError), ("", RuntimeError), (None, TypeError), (1, TypeError)],
    ids=str,
)
def test_gelu_bad_approximate_raises_torchs_error(approximate, error):
    x = torch.randn(3)
    with pytest.raises(error) as torch_error:
        F.gelu(x, approximate=approximate)
    with pytest.raises(error) as ours:
        fused_ops.gelu(x, approximate=approximate)
    assert str(ours.value) == str(torch_error.value)
    with pytest.raises(error):
        fused_ops.nn.GELU(approximate=approximate)(x)


@pytest.mark.parametrize(
    ("fused_module", "torch_module", "kernel"),
    [
        (fused_ops.nn.GELU(), torch.nn.GELU(), "gelu_forward_kernel"),
        (fused_ops.nn.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh"), "gelu_forward_kernel"),
        (fused_ops.nn.SiLU(), torch.nn.SiLU(), "silu_forward_kernel"),
        (fused_ops.nn.SiLU(inplace=True), torch.nn.SiLU(inplace=True), "silu_forward_kernel"),
    ],
    ids=["GELU", "GELU_tanh", "SiLU", "SiLU_inplace"],
)
def test_gelu_silu_modules_match_torch(fused_module, torch_module, kernel, kernel_launches):
    x = torch.randn(8, 16)
    assert_close(fused_module(x.clone()), torch_module(x.clone()))
    assert repr(fused_module) == f"fused_ops.{torch_module!r}"  # print(model) shows what is fused
    assert isinstance(fused_module, type(torch_module))
    assert kernel_launches.launch_count(kernel) == 1


def test_convert_maps_gelu_and_silu_with_their_arguments():
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 4), torch.nn.GELU(approximate="tanh"), torch.nn.SiLU(inplace=True), torch.nn.GELU()
    )
    fused_ops.nn.convert(model)
    assert [type(m) for m in model[1:]] == [fused_ops.nn.GELU, fused_ops.nn.SiLU, fused_ops.nn.GELU]
    assert model[1].approximate == "tanh" and model[3].approximate == "none" and model[2].inplace


@pytest.mark.parametrize("name", SMOOTH_NAMES)
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_gelu_silu_under_torch_compile_fullgraph(name, backend, kernel_launches):
    fused_op, _, kernel = SMOOTH[name]
    x = torch.randn(6, 5, requires_grad=True)
    assert_compiled_matches_eager(lambda t: fused_op(t * 2).sum(dim=0), x, backend=backend)
    assert kernel_launches.launch_count(f"{kernel}_forward_kernel") == 2  # eager run + compiled run
    assert kernel_launches.launch_count(f"{kernel}_backward_kernel") == 2


@pytest.mark.parametrize("name", SMOOTH_NAMES)
def test_gelu_silu_have_no_host_sync(name, kernel_launches):
    fused_op, _, kernel = SMOOTH[name]
    x = torch.randn(300, requires_grad=True)
    with no_host_sync():
        fused_op(x).backward(torch.ones(300))
    assert kernel_launches.launch_count(f"{kernel}_backward_kernel") == 1


@pytest.mark.parametrize("name", SMOOTH_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.interpreter_only  # counts bytes
def test_gelu_silu_traffic_is_8_bytes_forward_and_12_backward_in_fp32(name, dtype):
    # Forward reads x and writes y; backward reads grad_output and the saved INPUT and writes
    # grad_input: 2 and 3 tensor-sized accesses (8 and 12 B/elem in fp32), nothing more.
    fused_op, _, _ = SMOOTH[name]
    n = 3 * 1024 + 5  # three full blocks and a masked tail
    x = torch.randn(n, dtype=dtype, requires_grad=True)
    with KernelTrace() as forward:
        y = fused_op(x)
    with KernelTrace() as backward:
        y.backward(torch.ones_like(y))
    size = dtype.itemsize
    assert forward.launch_count() == backward.launch_count() == 1
    assert forward.bytes_loaded == forward.bytes_stored == n * size
    assert backward.bytes_loaded == 2 * n * size and backward.bytes_stored == n * size
    if dtype == torch.float32:
        assert forward.bytes_moved == 8 * n and backward.bytes_moved == 12 * n


@pytest.mark.parametrize("name", SMOOTH_NAMES)
def test_gelu_silu_reference_fallback_matches_torch(name, kernel_launches):
    fused_op, torch_op, _ = SMOOTH[name]
    x = torch.randn(3, 37, dtype=torch.float64)
    with reference_backend():
        y, grad, grad_output = forward_backward(fused_op, x)
        x_inplace = x[:, ::2].clone()
        fused_ops.silu(x_inplace, inplace=True)
    y_ref, grad_ref, _ = forward_backward(torch_op, x, grad_output=grad_output)
    assert_close(y, y_ref)
    assert_close(grad, grad_ref)
    assert_close(x_inplace, F.silu(x[:, ::2]))
    assert kernel_launches.launch_count() == 0


@settings(max_examples=20, deadline=None)
@given(
    name=st.sampled_from(SMOOTH_NAMES),
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=4),
    dtype=st.sampled_from(DTYPES),
    transpose=st.booleans(),
    step=st.integers(1, 3),
)
def test_gelu_silu_property_random_shapes_and_strides(name, shape, dtype, transpose, step):
    fused_op, torch_op, _ = SMOOTH[name]
    x = torch.randn(shape, dtype=dtype) * 3
    if x.dim() >= 2 and transpose:
        x = x.transpose(0, 1)
    if x.dim() >= 1:
        x = x[::step]
    before = x.clone()
    y, grad, grad_output = forward_backward(fused_op, x)
    y_exact, grad_exact, _ = forward_backward(torch_op, x.double(), grad_output=grad_output.double())
    # Against fp64, not torch in `dtype`: torch's vectorized CPU erf on large tensors is
    # itself ~2e-3 off in the far negative tail (-6.5847e-05 vs exact -6.5971e-05 at x=-3.9).
    assert_close(y, y_exact.to(dtype))
    assert_close(grad, grad_exact.to(dtype))
    assert torch.equal(x, before)


def test_silu_inplace_writes_into_its_input_with_autograd(kernel_launches):
    w = torch.randn(40, requires_grad=True)
    h = w * 2
    version = h._version
    with no_host_sync():
        out = fused_ops.silu(h, inplace=True)
    assert out is h and h._version > version
    assert kernel_launches.launch_count("silu_forward_kernel") == 1
    out.backward(torch.arange(40.0))
    w_ref = w.detach().clone().requires_grad_()
    F.silu(w_ref * 2, inplace=True).backward(torch.arange(40.0))
    assert_close(out.detach(), F.silu(w.detach() * 2))
    assert_close(w.grad, w_ref.grad)
    assert kernel_launches.launch_count("silu_backward_kernel") == 1


@pytest.mark.interpreter_only  # counts bytes
def test_silu_inplace_without_grad_moves_only_its_tensor():
    # No gradient wanted: no saved copy of the input, one read and one write in place.
    x = torch.randn(2048)
    expected = F.silu(x)
    with KernelTrace() as trace:
        out = fused_ops.silu(x, inplace=True)
    assert out is x
    assert_close(x, expected)
    assert trace.launch_count() == 1 and trace.bytes_moved == 2 * 2048 * 4


@pytest.mark.parametrize("view", [False, True], ids=["leaf", "view_of_leaf"])
def test_silu_inplace_rejects_a_leaf_that_requires_grad(view):
    leaf = torch.randn(4, requires_grad=True)
    x = leaf[1:] if view else leaf
    before = leaf.detach().clone()
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        F.silu(x, inplace=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        fused_ops.nn.SiLU(inplace=True)(x)
    assert torch.equal(leaf.detach(), before), "raised only after overwriting the input"


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_silu_inplace_on_views_writes_through(layout, kernel_launches):
    base = torch.randn(12, 10)
    x = base.t() if layout == "transposed" else base[:, ::2]
    expected_base = base.clone()
    target = expected_base.t() if layout == "transposed" else expected_base[:, ::2]
    F.silu(target, inplace=True)
    assert fused_ops.silu(x, inplace=True) is x
    assert_close(base, expected_base)
    assert kernel_launches.launch_count("silu_forward_kernel") == 1


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_silu_inplace_under_torch_compile_fullgraph(backend, kernel_launches):
    x = torch.randn(6, 5, requires_grad=True)
    assert_compiled_matches_eager(lambda t: fused_ops.silu(t * 2, inplace=True).sum(dim=0), x, backend=backend)
    assert kernel_launches.launch_count("silu_forward_kernel") == 2
    assert kernel_launches.launch_count("silu_backward_kernel") == 2


def aot_workload():
    """Every activation kernel in every dtype the tests use, for tests/test_aot.py."""
    ops = [fused_op for fused_op, _ in ACTIVATIONS.values()] + [fused_op for fused_op, _, _ in SMOOTH.values()]
    for dtype in DTYPES:
        for fused_op in ops:
            x = torch.randn(1823, dtype=dtype, requires_grad=True)
            fused_op(x).sum().backward()
        fused_ops.silu(torch.randn(1823, dtype=dtype), inplace=True)
    for dtype in INT_DTYPES:
        fused_ops.relu(torch.arange(-5, 5).to(dtype))


@pytest.mark.parametrize("name", NAMES)
def test_forward_mode_ad_is_refused_not_dropped(name):
    # A dual tensor does not require grad, yet skipping the Function (the no-grad fast
    # path) would return no tangent at all: the Function must see it and refuse.
    import torch.autograd.forward_ad as forward_ad

    fused_op, _ = ACTIVATIONS[name]
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(torch.randn(5), torch.ones(5))
        with pytest.raises(NotImplementedError, match="jvp"):
            fused_op(dual)
