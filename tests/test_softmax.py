"""softmax and log_softmax: forward and backward against torch, through the Triton kernels."""

import contextlib
import warnings

import pytest
import torch
from helpers import (
    DTYPES,
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
from fused_ops import kernels
from fused_ops._dispatch import reference_backend
from fused_ops.profiling import KernelTrace

softmax_kernels = kernels.softmax

OPS = {"softmax": (fused_ops.softmax, torch.softmax), "log_softmax": (fused_ops.log_softmax, torch.log_softmax)}
SINGLE = ("softmax_forward_kernel", "softmax_backward_kernel")
LOOPED = ("softmax_forward_looped_kernel", "softmax_backward_looped_kernel")
INF, NAN = float("inf"), float("nan")

# (shape, dim) and the path each reaches with the default config (SOFTMAX_MAX_FUSED_SIZE 8192):
CASES = [
    ((1,), -1),  # one element: one row, a 1-wide tile
    ((63,), 0),  # one row shorter than its 64-wide tile
    ((5, 781), -1),  # rows packed two to a 2048-element tile, last tile partly masked
    ((3, 1823), 1),  # one 2048-wide row per program
    ((4, 5, 6), 0),  # inner > 1: rows run along the contiguous inner index (tile 8 x 8)
    ((4, 5, 6), 1),  # inner > 1 with 4 groups of 6 rows
    ((4, 5, 6), -1),  # last dim of a 3-D tensor: 20 rows packed in one tile
    ((0,), 0),  # empty: no launch
    ((4, 0, 3), 1),  # empty rows (N = 0): no launch
    ((4, 0, 3), 2),  # no rows at all: no launch
    ((), 0),  # 0-d: one row of one element
    ((), -1),
]


@contextlib.contextmanager
def looped_path(tile: int = 16):
    """Send rows longer than ``tile`` through the looped kernels, in tiles of ``tile``.

    This reaches every branch of the looped path (block boundaries, -inf blocks before a
    finite one) with tensors small enough for the interpreter.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(softmax_kernels, "SOFTMAX_MAX_FUSED_SIZE", tile)
        patch.setattr(softmax_kernels, "SOFTMAX_LOOP_TILE", tile)
        patch.setattr(softmax_kernels, "SOFTMAX_STRIDED_MIN_ROWS", 2)
        # Launch plans of contiguous shapes are made under the config in force.
        softmax_kernels.clear_launch_plans()
        try:
            yield
        finally:
            softmax_kernels.clear_launch_plans()


TORCH_BACKWARD = {
    "softmax": torch.ops.aten._softmax_backward_data,
    "log_softmax": torch.ops.aten._log_softmax_backward_data,
}


def _compare_with_torch(name, x, dim, **kwargs):
    """Run the fused op and torch's on the same input and grad_output; compare both results.

    The output is compared with torch's op evaluated in fp64 on the input as torch would
    cast it: on CPU, torch's own half-precision softmax is not correctly rounded (it can
    be several ulps off where log_softmax is near 0), so it is a reference only in fp32
    and fp64. The gradient is compared with torch's backward applied to OUR output: in
    half precision the two forwards may round one element to neighbouring values, and
    the cancellation in ``g - sum(g * y)`` would magnify that one ulp.
    """
    ours, theirs = OPS[name]
    y, grad, grad_output = forward_backward(ours, x, dim=dim, **kwargs)
    n = x.shape[dim] if x.dim() else 1
    cast = x.to(kwargs["dtype"]) if kwargs.get("dtype") else x
    assert_close(y, reference_in_fp64(theirs, cast, dim=dim), reduction_size=n)
    if y.dtype in (torch.float32, torch.float64):
        assert_close(y, theirs(x, dim=dim, **kwargs), reduction_size=n)
    grad_ref = TORCH_BACKWARD[name](grad_output, y.detach(), dim, y.dtype).to(x.dtype)
    assert_close(grad, grad_ref, reduction_size=n)
    return y, grad


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("shape", "dim"), CASES, ids=str)
@pytest.mark.parametrize("name", OPS)
def test_matches_torch(name, shape, dim, dtype, kernel_launches):
    x = torch.randn(shape, dtype=dtype) * 3
    y, _ = _compare_with_torch(name, x, dim)
    assert y.shape == x.shape and y.is_contiguous()
    launches = 0 if x.numel() == 0 else 1
    assert kernel_launches.launch_count(SINGLE[0]) == launches
    assert kernel_launches.launch_count(SINGLE[1]) == launches
    assert kernel_launches.launch_count() == 2 * launches


# (shape, dim, kernels): one launch of the expected forward and backward kernel per path.
PATHS = [
    ((8, 63), -1, SINGLE),  # short rows, 32 packed per program
    ((2, 8192), -1, SINGLE),  # the longest row that one tile holds
    ((2, 9000), -1, LOOPED),  # one element past the single tile: looped, 3 tiles of 4096
    ((3, 300, 7), 1, SINGLE),  # inner > 1: a 512 x 8 tile reduced along N
    ((2, 300, 33), 1, LOOPED),  # inner > 1, 512 x 32 rows over 8192: 128 x 32 tiles in a loop
]


@pytest.mark.parametrize(("shape", "dim", "expected"), PATHS, ids=str)
@pytest.mark.parametrize("name", OPS)
def test_each_path_is_one_launch_per_direction(name, shape, dim, expected, kernel_launches):
    x = torch.randn(shape)
    _compare_with_torch(name, x, dim)
    assert [launch.kernel for launch in kernel_launches.launches] == list(expected)


def test_70000_columns():
    # Rows of 70,000 take the looped path (18 tiles of 4096, online max and sum).
    x = torch.randn(2, 70_000) * 4
    x[1, 69_999] = 30.0  # the max arrives in the last tile: the running sum is rescaled
    for name in OPS:
        with KernelTrace() as trace:
            _compare_with_torch(name, x, -1)
        assert trace.kernel_names() == set(LOOPED)


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("looped", [False, True], ids=["single", "looped"])
def test_dims_of_3d_tensor(name, dim, looped):
    x = torch.randn(4, 6, 5, dtype=torch.float64)
    with looped_path(2) if looped else contextlib.nullcontext(), KernelTrace() as trace:
        _compare_with_torch(name, x, dim)
    assert trace.kernel_names() == set(LOOPED if looped else SINGLE)


NONFINITE_ROWS = [
    [-INF] * 40,  # all -inf: NaN, as torch
    [-INF] * 20 + [1.0, 2.0] + [-INF] * 18,  # finite values only after two -inf tiles
    [0.5] * 39 + [-INF],  # one -inf: softmax 0, log_softmax -inf
    [1.0] * 30 + [INF] + [2.0] * 9,  # +inf: the whole row is NaN
    [INF, -INF] + [0.0] * 38,
    [NAN] + [1.0] * 39,
    [1.0] * 39 + [NAN],
    [200.0, -200.0] * 20,  # large but finite: no overflow
]


@pytest.mark.parametrize("looped", [False, True], ids=["single", "looped"])
@pytest.mark.parametrize("name", OPS)
def test_nonfinite_rows_match_torch(name, looped):
    x = torch.tensor(NONFINITE_ROWS)
    with looped_path() if looped else contextlib.nullcontext(), KernelTrace() as trace:
        y, _ = _compare_with_torch(name, x, -1)
    assert trace.kernel_names() == set(LOOPED if looped else SINGLE)
    assert y[0].isnan().all() and y[3].isnan().all()
    assert torch.isfinite(y[1, 20:22]).all()


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize(
    ("in_dtype", "dtype"),
    [
        (torch.float16, torch.float32),  # cast inside the kernel
        (torch.bfloat16, torch.float32),  # cast inside the kernel
        (torch.float32, torch.float64),  # widened up front: computed in fp64 like torch
        (torch.float32, torch.float16),  # narrowed up front
        (torch.float64, torch.float64),  # no-op
    ],
    ids=str,
)
def test_dtype_argument(name, in_dtype, dtype, kernel_launches):
    x = torch.randn(7, 300, dtype=in_dtype) * 3
    y, grad = _compare_with_torch(name, x, 1, dtype=dtype)
    assert y.dtype == dtype and grad.dtype == in_dtype
    assert kernel_launches.launch_count(SINGLE[0]) == 1
    if (in_dtype, dtype) in {(torch.float16, torch.float32), (torch.bfloat16, torch.float32)}:
        launch = kernel_launches.launches[0]
        assert launch.args[0]["tensor"] == str(in_dtype).removeprefix("torch."), "the kernel reads the half input"


@pytest.mark.parametrize("name", OPS)
def test_integer_input_with_float_dtype_works(name):
    x = torch.arange(-6, 6).view(3, 4)
    ours, theirs = OPS[name]
    assert_close(ours(x, 1, dtype=torch.float32), theirs(x, 1, dtype=torch.float32))


@pytest.mark.parametrize("name", OPS)
def test_bad_arguments_raise_like_torch_and_leave_input_untouched(name):
    ours, theirs = OPS[name]
    integers, floats = torch.arange(6).view(2, 3), torch.randn(2, 3)
    before = (integers.clone(), floats.clone())
    with pytest.raises(NotImplementedError, match=f"\"{name}\" not implemented for 'Long'"):
        ours(integers, 1)
    with pytest.raises(NotImplementedError, match=f"\"{name}\" not implemented for 'Int'"):
        ours(floats, 1, dtype=torch.int32)
    with pytest.raises(NotImplementedError, match="not implemented for 'Bool'"):
        ours(torch.tensor([True, False]), 0)
    for dim in (2, -3):
        with pytest.raises(IndexError) as ours_error:
            ours(floats, dim)
        with pytest.raises(IndexError) as torch_error:
            theirs(floats, dim)
        assert str(ours_error.value) == str(torch_error.value)
    with pytest.raises(IndexError, match=r"range of \[-1, 0\], but got 1"):
        ours(torch.tensor(2.0), 1)
    with pytest.raises(TypeError, match="must be int, not NoneType"):
        ours(floats, None)
    assert torch.equal(integers, before[0]) and torch.equal(floats, before[1])


@pytest.mark.parametrize("name", OPS)
def test_input_is_not_modified(name):
    x = torch.randn(4, 9000)
    before = x.clone()
    OPS[name][0](x, -1)
    assert torch.equal(x, before)


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced", "expanded"])
@pytest.mark.parametrize("dim", [0, -1])
@pytest.mark.parametrize("name", OPS)
def test_strided_inputs(name, dim, layout, kernel_launches):
    x = strided_variants((37, 29))[layout]
    _compare_with_torch(name, x, dim)
    assert kernel_launches.kernel_names() == set(SINGLE)


@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded"])
@pytest.mark.parametrize("dim", [0, -1])
def test_views_reach_the_kernels_without_a_copy(dim, layout, monkeypatch):
    # Every layout of strided_variants has an (outer, N, inner) view, so the launchers must
    # receive the caller's memory itself; the gradient of a sum (all strides 0) likewise.
    seen = []
    for launcher in ("softmax_forward", "softmax_backward"):
        original = getattr(softmax_kernels, launcher)

        def spy(first, *args, _original=original):
            seen.append(first.data_ptr())
            return _original(first, *args)

        monkeypatch.setattr(softmax_kernels, launcher, spy)
    x = strided_variants((37, 29))[layout].requires_grad_()
    grad_output = torch.ones(()).expand(37, 29)
    fused_ops.softmax(x, dim).backward(grad_output)
    assert seen == [x.data_ptr(), grad_output.data_ptr()]


@pytest.mark.parametrize("name", OPS)
def test_layout_without_an_outer_stride_is_copied_first(name, kernel_launches):
    # Reducing dim 2 of a (1, 0, 2) permutation: the outer dims (6, 5) have strides
    # (8, 48), which no single outer stride can describe, so the input is made contiguous.
    x = torch.randn(5, 6, 8).permute(1, 0, 2)
    _compare_with_torch(name, x, 2)
    # The gradient of a sum is an expanded (all strides 0) grad_output, read in place.
    _, grad, _ = forward_backward(OPS[name][0], x, grad_output=torch.ones(()).expand(6, 5, 8), dim=0)
    _, grad_ref, _ = forward_backward(OPS[name][1], x, grad_output=torch.ones(()).expand(6, 5, 8), dim=0)
    assert_close(grad, grad_ref, reduction_size=6)


@pytest.mark.parametrize("looped", [False, True], ids=["single", "looped"])
@pytest.mark.parametrize("dim", [0, -1])
@pytest.mark.parametrize("name", OPS)
def test_gradcheck_and_gradgradcheck(name, dim, looped):
    op = OPS[name][0]
    x = torch.randn(3, 4, 3, dtype=torch.float64, requires_grad=True)
    # The looped kernels run a Python loop per program under the interpreter, so their
    # check projects the Jacobian on random vectors (fast_mode) instead of building it.
    with looped_path(2) if looped else contextlib.nullcontext(), KernelTrace() as trace:
        assert torch.autograd.gradcheck(lambda t: op(t, dim), (x,), fast_mode=looped)
        assert torch.autograd.gradgradcheck(lambda t: op(t, dim), (x,), fast_mode=looped)
    assert trace.kernel_names() == set(LOOPED if looped else SINGLE)


@pytest.mark.parametrize("name", OPS)
def test_gradgradcheck_with_dtype_cast_in_kernel(name):
    # fp16 in, fp32 out: the double-backward formula must cast between the two dtypes.
    op = OPS[name][0]
    x = torch.randn(4, 6, dtype=torch.float16)
    grad_output = torch.randn(4, 6)

    def grad_grad(fn):
        leaf = x.detach().requires_grad_()
        (grad,) = torch.autograd.grad(fn(leaf, 1, dtype=torch.float32), leaf, grad_output, create_graph=True)
        (second,) = torch.autograd.grad(grad.float().square().sum(), leaf)
        return grad, second

    grad, second = grad_grad(op)
    grad_ref, second_ref = grad_grad(OPS[name][1])
    assert grad.dtype == second.dtype == torch.float16
    assert_close(grad, grad_ref, reduction_size=6)
    assert_close(second, second_ref, reduction_size=6)


@pytest.mark.parametrize("name", OPS)
def test_second_backward_through_freed_graph_raises(name):
    x = torch.randn(3, 5, requires_grad=True)
    y = OPS[name][0](x, 1).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


@settings(max_examples=20, deadline=None)
@given(
    shape=st.lists(st.integers(0, 7), min_size=0, max_size=3),
    dim_seed=st.integers(0, 100),
    name=st.sampled_from(sorted(OPS)),
    dtype=st.sampled_from(DTYPES),
    transpose=st.booleans(),
    step=st.integers(1, 3),
    looped=st.booleans(),
)
def test_property_random_shapes_dims_and_strides(shape, dim_seed, name, dtype, transpose, step, looped):
    x = torch.randn(shape, dtype=dtype) * 4
    if x.dim() >= 2 and transpose:
        x = x.transpose(0, -1)
    if x.dim() >= 1:
        x = x[::step]
    rank = max(x.dim(), 1)
    dim = dim_seed % (2 * rank) - rank  # every valid dim, negative ones too
    with looped_path(4) if looped else contextlib.nullcontext():
        _compare_with_torch(name, x, dim)


def test_modules_match_torch(kernel_launches):
    x = torch.randn(4, 6, 5)
    for ours, theirs in [(fused_ops.nn.Softmax, torch.nn.Softmax), (fused_ops.nn.LogSoftmax, torch.nn.LogSoftmax)]:
        module = ours(dim=1)
        assert isinstance(module, theirs) and repr(module) == f"fused_ops.{theirs(dim=1)!r}"
        assert_close(module(x), theirs(dim=1)(x))
        for shape in [(5,), (3, 4), (2, 3, 4), (2, 3, 4, 5)]:
            # dim=None: torch's deprecated implicit choice (0 for 0-, 1- and 3-d, else 1).
            t = torch.randn(shape)
            with pytest.warns(UserWarning, match="Implicit dimension choice"):
                out = ours()(t)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert_close(out, theirs()(t))
    assert kernel_launches.launch_count(SINGLE[0]) == 10


@pytest.mark.interpreter_only  # counts bytes
def test_traffic_single_tile_is_one_read_and_one_write():
    # Minimum traffic in fp32: forward reads x and writes y (8 bytes per element);
    # backward reads g and y and writes grad_input (12 bytes per element).
    n = 64 * 1000
    for name in OPS:
        x = torch.randn(64, 1000, requires_grad=True)
        with KernelTrace() as forward:
            y = OPS[name][0](x, -1)
        with KernelTrace() as backward:
            y.backward(torch.randn(64, 1000))
        assert forward.kernel_names() == {SINGLE[0]} and backward.kernel_names() == {SINGLE[1]}
        assert forward.bytes_moved <= 1.05 * 8 * n
        assert backward.bytes_moved <= 1.05 * 12 * n
        assert forward.bytes_loaded == backward.bytes_stored == 4 * n


@pytest.mark.parametrize(("name", "backward_bytes"), [("softmax", 20), ("log_softmax", 16)])
@pytest.mark.interpreter_only  # counts bytes
def test_traffic_looped_path(name, backward_bytes):
    # Long rows are read twice: forward 12 bytes per element (x twice, y once); backward
    # 20 for softmax (g and y twice, grad once) and 16 for log_softmax (pass 1 reads g only).
    n = 2 * 9000
    x = torch.randn(2, 9000, requires_grad=True)
    with KernelTrace() as forward:
        y = OPS[name][0](x, -1)
    with KernelTrace() as backward:
        y.backward(torch.randn(2, 9000))
    assert forward.kernel_names() == {LOOPED[0]} and backward.kernel_names() == {LOOPED[1]}
    assert forward.bytes_moved == 12 * n
    assert backward.bytes_moved == backward_bytes * n


@pytest.mark.parametrize("looped", [False, True], ids=["single", "looped"])
@pytest.mark.parametrize("name", OPS)
def test_no_host_sync(name, looped, kernel_launches):
    x = torch.randn(6, 40, 3, requires_grad=True)
    with looped_path() if looped else contextlib.nullcontext(), no_host_sync():
        OPS[name][0](x, 1, dtype=torch.float32).backward(torch.ones(6, 40, 3))
    assert kernel_launches.kernel_names() == set(LOOPED if looped else SINGLE)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_under_torch_compile_fullgraph(backend, kernel_launches):
    x = torch.randn(6, 5, 4, requires_grad=True)

    def fn(t):
        return fused_ops.log_softmax(fused_ops.softmax(t * 2, 1) * 3, -1)

    assert_compiled_matches_eager(fn, x, backend=backend)
    # eager run + compiled run, one forward kernel per op in each
    assert kernel_launches.launch_count(SINGLE[0]) == 4
    assert kernel_launches.launch_count(SINGLE[1]) == 4


@pytest.mark.parametrize("name", OPS)
def test_reference_backend_matches_torch(name, kernel_launches):
    x = torch.randn(3, 7, 5, dtype=torch.float64)
    with reference_backend():
        _compare_with_torch(name, x, 1)
        _compare_with_torch(name, x.half(), 0, dtype=torch.float32)
    assert kernel_launches.launch_count() == 0


def aot_workload():
    """Every softmax kernel on every path, both ops, in every dtype the tests use."""
    shapes = [
        ((3, 5000), -1),  # single tile, the largest (8192 wide)
        ((2, 9000), -1),  # looped, rows along N
        ((2, 20, 8), 1),  # single tile, inner > 1
        ((1, 300, 32), 1),  # looped, inner > 1
    ]
    for op in (fused_ops.softmax, fused_ops.log_softmax):
        for dtype in DTYPES:
            for shape, dim in shapes:
                x = torch.randn(shape, dtype=dtype, requires_grad=True)
                op(x, dim).sum().backward()
        for dtype in (torch.float16, torch.bfloat16):
            x = torch.randn(4, 300, dtype=dtype, requires_grad=True)
            op(x, -1, dtype=torch.float32).sum().backward()


@pytest.mark.parametrize("name", OPS)
def test_eager_calls_launch_without_torch_library_ops(name, kernel_launches):
    # The host path: eager calls reach the launchers directly (the custom ops are for
    # torch.compile only), with and without autograd, double backward included.
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    with torch.profiler.profile() as profile:
        y = OPS[name][0](x, -1)
        (grad,) = torch.autograd.grad(y, x, torch.randn_like(y), create_graph=True)
        grad.sum().backward()
        with torch.no_grad():
            OPS[name][0](x, 0)
    ops = {event.name for event in profile.events()}
    assert not any(op.startswith("fused_ops::") for op in ops), ops
    assert kernel_launches.launch_count("softmax_forward_kernel") == 2
    # The gradient's own backward reaches the output y, and from it the input through the
    # forward's backward once more: two backward launches.
    assert kernel_launches.launch_count("softmax_backward_kernel") == 2
