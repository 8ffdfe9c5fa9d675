"""mse_loss: forward and backward against torch, through the Triton kernels.

Kernels (kernels/mse.py, MSE_BLOCK_SIZE = 1024, MSE_MAX_PARTIALS = 1024):
- 'none': mse_loss_kernel, one program per block;
- 'mean'/'sum': mse_loss_partial_sums_kernel (one partial per program, at most
  MSE_MAX_PARTIALS programs striding over the blocks), then mse_loss_sum_partials_kernel;
  an input of at most one block (or empty) is one program that writes the loss itself;
- with grad, 'mean' and 'sum': mse_loss_partial_sums_kernel also writes the gradients (for a
  grad_output of 1) from the same loads, and the backward is mse_loss_scale_grad_kernel,
  which scales them in place unless grad_output is 1;
- backward of 'none' (and a second or differentiable backward of any reduction):
  mse_loss_backward_kernel, writing grad_input and/or grad_target.
"""

import contextlib
import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from fused_ops.kernels import mse as mse_kernels
from helpers import (
    DTYPES,
    LiveBytes,
    assert_close,
    assert_compiled_matches_eager,
    forward_backward,
    no_host_sync,
    reference_in_fp64,
    tolerance,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

import fused_ops
from fused_ops._dispatch import reference_backend
from fused_ops.profiling import KernelTrace

REDUCTIONS = ("none", "mean", "sum")
# The backward kernel of each reduction: 'mean' and 'sum' scale the forward's gradients.
BACKWARD = {
    "none": "mse_loss_backward_kernel",
    "mean": "mse_loss_scale_grad_kernel",
    "sum": "mse_loss_scale_grad_kernel",
}
SCALE = "mse_loss_scale_grad_kernel"
FORWARD_KERNELS = {
    "none": ("mse_loss_kernel",),
    "mean": ("mse_loss_partial_sums_kernel", "mse_loss_sum_partials_kernel"),
    "sum": ("mse_loss_partial_sums_kernel", "mse_loss_sum_partials_kernel"),
}

# Shapes, and the code path each reaches (BLOCK_SIZE = 1024):
SHAPES = [
    (1,),  # one element: one almost fully masked program (reductions: stage 1 alone)
    (63,),  # less than a block
    (781,),  # less than a block, odd
    (1823,),  # two programs, the second partially masked (reductions: two partials, stage 2)
    (3, 5, 7),  # 3-D, one block
    (0,),  # empty: no elementwise launch; reductions: one stage-1 program writes 0 (or nan)
    (4, 0, 3),  # empty with non-zero dims
    (),  # 0-d: one element
]


@contextlib.contextmanager
def _few_partials(count: int):
    """Cap stage 1 at ``count`` programs, so small inputs reach its loop over several blocks.

    At the real cap (1024) that loop needs over a million elements, too slow for the
    interpreter; the kernel code is the same, only the grid is smaller.
    """
    saved = mse_kernels.MSE_MAX_PARTIALS
    mse_kernels.MSE_MAX_PARTIALS = count
    try:
        yield
    finally:
        mse_kernels.MSE_MAX_PARTIALS = saved


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_mse_loss_matches_torch(shape, dtype, reduction, kernel_launches):
    input = torch.randn(shape, dtype=dtype) * 2
    target = torch.randn(shape, dtype=dtype)
    loss, grad_input, grad_target, grad_output = forward_backward(
        fused_ops.mse_loss, input, target, reduction=reduction
    )
    loss_torch, grad_input_torch, grad_target_torch, _ = forward_backward(
        F.mse_loss, input, target, grad_output=grad_output, reduction=reduction
    )
    n = input.numel()
    reduction_size = 1 if reduction == "none" else n
    # fp64 oracle: the reductions accumulate in fp32, more precisely than torch's half
    # types, which round every squared error before summing.
    assert_close(loss, reference_in_fp64(F.mse_loss, input, target, reduction=reduction), reduction_size)
    assert_close(loss, loss_torch, reduction_size)
    scale = 2 / max(n, 1) if reduction == "mean" else 2
    assert_close(grad_input, (scale * (input.double() - target.double()) * grad_output.double()).to(dtype))
    assert_close(grad_input, grad_input_torch)
    assert_close(grad_target, grad_target_torch)
    assert torch.equal(grad_target, -grad_input)

    launches = {name: kernel_launches.launch_count(name) for name in FORWARD_KERNELS[reduction]}
    if reduction == "none":
        assert launches == {"mse_loss_kernel": 1 if n else 0}
    else:
        # Up to one block (or empty: 0, or nan for the mean), stage 1 writes the loss alone.
        assert launches == {"mse_loss_partial_sums_kernel": 1, "mse_loss_sum_partials_kernel": 1 if n > 1024 else 0}
    assert kernel_launches.launch_count(BACKWARD[reduction]) == (1 if n else 0)


def test_mse_loss_empty_mean_is_nan_and_sum_is_zero(kernel_launches):
    empty = torch.empty(0, 3)
    assert torch.isnan(fused_ops.mse_loss(empty, empty))
    assert torch.equal(fused_ops.mse_loss(empty, empty, reduction="sum"), torch.tensor(0.0))
    assert kernel_launches.launch_count("mse_loss_partial_sums_kernel") == 2


@pytest.mark.parametrize(
    ("input_dtype", "target_dtype"),
    [
        (torch.float32, torch.float16),
        (torch.float16, torch.float32),
        (torch.float16, torch.bfloat16),
        (torch.float32, torch.float64),
        (torch.bfloat16, torch.float64),
    ],
    ids=str,
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_mixed_float_dtypes_promote_like_torch(input_dtype, target_dtype, reduction, kernel_launches):
    # Each operand is loaded in its own dtype and upcast in the kernel: no conversion copy.
    input = torch.randn(781, dtype=input_dtype)
    target = torch.randn(781, dtype=target_dtype)
    loss, grad_input, grad_target, grad_output = forward_backward(
        fused_ops.mse_loss, input, target, reduction=reduction
    )
    loss_torch, grad_input_torch, grad_target_torch, _ = forward_backward(
        F.mse_loss, input, target, grad_output=grad_output, reduction=reduction
    )
    assert loss.dtype == loss_torch.dtype == torch.promote_types(input_dtype, target_dtype)
    assert (grad_input.dtype, grad_target.dtype) == (input_dtype, target_dtype)
    assert_close(loss, loss_torch, 1 if reduction == "none" else input.numel())
    assert_close(grad_input, grad_input_torch)
    assert_close(grad_target, grad_target_torch)
    assert kernel_launches.launch_count(BACKWARD[reduction]) == 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64], ids=str)
def test_mse_loss_under_autocast_computes_in_fp32_like_torch(dtype, kernel_launches):
    # torch's autocast lists mse_loss as a float32 op: half inputs give an fp32 loss.
    input, target = torch.randn(63, dtype=dtype), torch.randn(63, dtype=dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, grad_input, grad_target, grad_output = forward_backward(fused_ops.mse_loss, input, target)
        loss_torch, grad_input_torch, grad_target_torch, _ = forward_backward(
            F.mse_loss, input, target, grad_output=grad_output
        )
    assert loss.dtype == loss_torch.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert grad_input.dtype == grad_target.dtype == dtype
    assert_close(loss, loss_torch, 63)
    assert_close(grad_input, grad_input_torch)
    assert_close(grad_target, grad_target_torch)
    assert kernel_launches.launch_count(SCALE) == 1


@pytest.mark.parametrize(
    ("input", "target"),
    [
        (torch.arange(-3, 4), torch.randn(7)),
        (torch.randn(7, dtype=torch.float16), torch.arange(7, dtype=torch.int32)),
        (torch.randn(7), torch.tensor([True, False] * 3 + [True])),
    ],
    ids=["long-float32", "float16-int32", "float32-bool"],
)
def test_mse_loss_promotes_an_integer_operand_like_torch(input, target, kernel_launches):
    expected = F.mse_loss(input, target, reduction="none")
    loss = fused_ops.mse_loss(input, target, reduction="none")
    assert loss.dtype == expected.dtype
    assert_close(loss, expected)
    assert kernel_launches.launch_count("mse_loss_kernel") == 1


@pytest.mark.parametrize(
    ("input", "target", "message"),
    [
        (torch.arange(3), torch.arange(3), "'Long'"),
        (torch.tensor([True]), torch.tensor([False]), "'Bool'"),
        (torch.arange(3, dtype=torch.int8), torch.arange(3, dtype=torch.uint8), "'Short'"),
        (torch.randn(3, dtype=torch.complex64), torch.randn(3), "'ComplexFloat'"),
    ],
    ids=["long", "bool", "int8-uint8", "complex"],
)
def test_mse_loss_rejects_non_float_dtypes_like_torch(input, target, message):
    with pytest.raises(NotImplementedError):
        F.mse_loss(input, target)
    before = (input.clone(), target.clone())
    with pytest.raises(NotImplementedError, match=f"not implemented for {message}"):
        fused_ops.mse_loss(input, target)
    assert torch.equal(input, before[0]) and torch.equal(target, before[1])


def test_mse_loss_unknown_reduction_raises_torchs_value_error():
    input, target = torch.randn(3), torch.randn(3)
    before = (input.clone(), target.clone())
    with pytest.raises(ValueError, match=r"^bad is not a valid value for reduction$"):
        F.mse_loss(input, target, reduction="bad")
    with pytest.raises(ValueError, match=r"^bad is not a valid value for reduction$"):
        fused_ops.mse_loss(input, target, reduction="bad")
    assert torch.equal(input, before[0]) and torch.equal(target, before[1])


def test_mse_loss_accepts_deprecated_elementwise_mean_like_torch():
    input, target = torch.randn(5), torch.randn(5)
    with pytest.warns(UserWarning, match="'elementwise_mean' is deprecated"):
        loss = fused_ops.mse_loss(input, target, reduction="elementwise_mean")
    assert_close(loss, F.mse_loss(input, target), reduction_size=5)


def _warning_messages(fn, *args, **kwargs) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*args, **kwargs)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("size_average", [None, True, False])
@pytest.mark.parametrize("reduce", [None, True, False])
def test_mse_loss_legacy_size_average_and_reduce_like_torch(size_average, reduce):
    input, target = torch.randn(4, 3), torch.randn(4, 3)
    # reduction="sum" is overridden whenever a legacy argument is given, as in torch.
    kwargs = dict(size_average=size_average, reduce=reduce, reduction="sum")
    assert _warning_messages(fused_ops.mse_loss, input, target, **kwargs) == _warning_messages(
        F.mse_loss, input, target, **kwargs
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_close(fused_ops.mse_loss(input, target, **kwargs), F.mse_loss(input, target, **kwargs), 12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_weight_like_torch(reduction, kernel_launches):
    # torch 2.13's weight: loss = weight * (input - target)^2, 'mean' divides by weight.sum().
    input, target, weight = torch.randn(5, 7), torch.randn(7), torch.rand(5, 7)
    leaves = [t.clone().requires_grad_() for t in (input, target, weight)]
    torch_leaves = [t.clone().requires_grad_() for t in (input, target, weight)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = fused_ops.mse_loss(leaves[0], leaves[1], reduction=reduction, weight=leaves[2])
        loss_torch = F.mse_loss(torch_leaves[0], torch_leaves[1], reduction=reduction, weight=torch_leaves[2])
    grad_output = torch.randn_like(loss)
    grads = torch.autograd.grad(loss, leaves, grad_output)
    grads_torch = torch.autograd.grad(loss_torch, torch_leaves, grad_output)
    assert_close(loss, loss_torch, 35)
    for grad, grad_torch in zip(grads, grads_torch, strict=True):
        assert_close(grad, grad_torch, 35)
    assert kernel_launches.launch_count("mse_loss_kernel") == 1
    assert kernel_launches.launch_count("mse_loss_backward_kernel") == 1


def test_mse_loss_weight_errors_like_torch():
    input, target = torch.randn(3, 4), torch.randn(3, 4)
    for kwargs in [{"weight": torch.rand(4)}, {"reduction": "bad", "weight": torch.rand(3, 4)}]:
        with pytest.raises(ValueError) as torch_error:
            F.mse_loss(input, target, **kwargs)
        with pytest.raises(ValueError) as ours:
            fused_ops.mse_loss(input, target, **kwargs)
        assert str(ours.value) == str(torch_error.value)


@pytest.mark.parametrize(
    ("input_shape", "target_shape"),
    [
        ((3, 1), (4,)),  # both operands expand: (3, 4)
        ((5, 4), (4,)),  # target broadcast over rows
        ((4,), (5, 4)),  # input broadcast: the loss is larger than the input
        ((), (3,)),  # 0-d input
        ((2, 3, 1), (1, 3, 4)),  # 3-D, stride-0 dims in both
    ],
    ids=str,
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_broadcasts_with_torchs_warning(input_shape, target_shape, reduction, kernel_launches):
    input, target = torch.randn(input_shape), torch.randn(target_shape)
    assert _warning_messages(fused_ops.mse_loss, input, target, reduction=reduction) == _warning_messages(
        F.mse_loss, input, target, reduction=reduction
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss, grad_input, grad_target, grad_output = forward_backward(
            fused_ops.mse_loss, input, target, reduction=reduction
        )
        loss_torch, grad_input_torch, grad_target_torch, _ = forward_backward(
            F.mse_loss, input, target, grad_output=grad_output, reduction=reduction
        )
    assert loss.shape == loss_torch.shape
    assert_close(loss, loss_torch, loss_torch.numel() if reduction == "none" else 100)
    # Autograd sums each gradient back to its operand's shape (expand's backward).
    assert grad_input.shape == input.shape and grad_target.shape == target.shape
    assert_close(grad_input, grad_input_torch, 100)
    assert_close(grad_target, grad_target_torch, 100)
    assert kernel_launches.launch_count(BACKWARD[reduction]) == 1


def test_mse_loss_non_broadcastable_raises_torchs_runtime_error_after_the_warning():
    input, target = torch.randn(3), torch.randn(4)
    before = (input.clone(), target.clone())
    with pytest.raises(RuntimeError) as torch_error, pytest.warns(UserWarning, match="Using a target size"):
        F.mse_loss(input, target)
    with pytest.raises(RuntimeError) as ours, pytest.warns(UserWarning, match="Using a target size"):
        fused_ops.mse_loss(input, target)
    assert str(ours.value) == str(torch_error.value)
    assert torch.equal(input, before[0]) and torch.equal(target, before[1])


def test_mse_loss_tensors_on_different_devices_raise_runtime_error():
    input, target = torch.randn(3), torch.randn(3, device="meta")
    with pytest.raises(RuntimeError):
        F.mse_loss(input, target)
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        fused_ops.mse_loss(input, target)


def _layouts(shape):
    """The same kind of values in layouts that a flat kernel could misread."""
    rows, cols = shape
    return {
        "contiguous": torch.randn(rows, cols),
        "transposed": torch.randn(cols, rows).t(),  # dense, permuted: used as it is if both match
        "sliced": torch.randn(rows, 2 * cols)[:, ::2],  # gaps: copied
        "expanded": torch.randn(rows, 1).expand(rows, cols),  # overlapping: copied
        "offset": torch.randn(rows + 1, cols)[1:],  # contiguous, non-zero storage offset
    }


@pytest.mark.parametrize("target_layout", ["contiguous", "transposed", "sliced", "expanded", "offset"])
@pytest.mark.parametrize("input_layout", ["contiguous", "transposed", "sliced", "expanded"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_strided_operands(input_layout, target_layout, reduction, kernel_launches):
    input, target = _layouts((37, 29))[input_layout], _layouts((37, 29))[target_layout]
    loss, grad_input, grad_target, grad_output = forward_backward(
        fused_ops.mse_loss, input, target, reduction=reduction
    )
    loss_torch, grad_input_torch, grad_target_torch, _ = forward_backward(
        F.mse_loss, input, target, grad_output=grad_output, reduction=reduction
    )
    assert_close(loss, loss_torch, 1 if reduction == "none" else input.numel())
    assert_close(grad_input, grad_input_torch)
    assert_close(grad_target, grad_target_torch)
    assert kernel_launches.launch_count(FORWARD_KERNELS[reduction][0]) == 1
    if reduction == "none" and input_layout == target_layout == "transposed":
        assert loss.stride() == input.stride(), "two dense operands with one layout are used with no copy"


@pytest.mark.parametrize("permutation", [(0, 1, 2), (1, 0, 2), (2, 1, 0), (0, 2, 1)], ids=str)
def test_mse_loss_permuted_3d(permutation, kernel_launches):
    # mse_loss has no dim argument; instead each dim of a 3-D tensor in turn becomes the
    # innermost or outermost one in memory, which the flat kernels must not care about.
    input = torch.randn(3, 5, 7).permute(permutation)
    target = torch.randn(3, 5, 7).permute(permutation)
    for reduction in REDUCTIONS:
        loss, grad_input, _, grad_output = forward_backward(fused_ops.mse_loss, input, target, reduction=reduction)
        loss_torch, grad_input_torch, _, _ = forward_backward(
            F.mse_loss, input, target, grad_output=grad_output, reduction=reduction
        )
        assert_close(loss, loss_torch, 105)
        assert_close(grad_input, grad_input_torch)
    assert kernel_launches.launch_count("mse_loss_backward_kernel") == 1
    assert kernel_launches.launch_count(SCALE) == 2


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "expanded"])
def test_mse_loss_none_honours_a_per_element_grad_output(layout, kernel_launches):
    # A classic peer bug reads grad_output[0] for every element; each element must get its own.
    input, target = torch.randn(29, 37), torch.randn(29, 37)
    grad_output = {
        "contiguous": torch.linspace(-3, 3, 29 * 37).view(29, 37),
        "transposed": torch.linspace(-3, 3, 29 * 37).view(37, 29).t(),
        "expanded": torch.linspace(-3, 3, 37).expand(29, 37),  # what loss.sum(0).backward() sends
    }[layout]
    _, grad_input, grad_target, _ = forward_backward(
        fused_ops.mse_loss, input, target, grad_output=grad_output, reduction="none"
    )
    expected = 2 * (input - target) * grad_output
    assert_close(grad_input, expected)
    assert_close(grad_target, -expected)
    assert kernel_launches.launch_count("mse_loss_backward_kernel") == 1


@pytest.mark.interpreter_only  # counts bytes
def test_mse_loss_none_then_sum_reads_the_expanded_grad_output_once(kernel_launches):
    # loss.sum().backward() sends a 0-d gradient expanded with zero strides: the kernel
    # reads that one value per program, with no dense copy of n values.
    n = 1823
    input, target = torch.randn(n, requires_grad=True), torch.randn(n)
    fused_ops.mse_loss(input, target, reduction="none").sum().backward()
    assert_close(input.grad, 2 * (input.detach() - target))
    (launch,) = [launch for launch in kernel_launches.launches if launch.kernel == "mse_loss_backward_kernel"]
    assert launch.kwargs["SCALAR_GRAD_OUTPUT"] == {"bool": True}
    assert launch.bytes_loaded == 8 * n + 4 * launch.grid[0]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_loss_reads_the_0d_grad_output_on_the_device(reduction, kernel_launches):
    input, target = torch.randn(1823), torch.randn(1823)
    grad_output = torch.tensor(-3.5)
    with no_host_sync():
        _, grad_input, grad_target, _ = forward_backward(
            fused_ops.mse_loss, input, target, grad_output=grad_output, reduction=reduction
        )
    expected = 2 * (input - target) * -3.5 / (1823 if reduction == "mean" else 1)
    assert_close(grad_input, expected)
    assert_close(grad_target, -expected)
    # The backward kernel receives grad_output as a pointer, not as a number.
    (launch,) = [launch for launch in kernel_launches.launches if launch.kernel == SCALE]
    assert launch.args[0] == {"tensor": "float32", "aligned16": True}


@pytest.mark.parametrize("needs", ["input", "target", "both"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.interpreter_only  # counts bytes
def test_mse_loss_backward_writes_only_the_needed_gradients(needs, reduction, kernel_launches):
    input = torch.randn(1823, requires_grad=needs in ("input", "both"))
    target = torch.randn(1823, requires_grad=needs in ("target", "both"))
    fused_ops.mse_loss(input, target, reduction=reduction).backward(torch.ones(1823) if reduction == "none" else None)
    assert (input.grad is not None, target.grad is not None) == (needs != "target", needs != "input")
    # ONE launch writes the gradients ('mean'/'sum': the forward's first stage, along with
    # one partial sum per program); one nobody needs is never written (its pointer is None).
    kernel = "mse_loss_backward_kernel" if reduction == "none" else "mse_loss_partial_sums_kernel"
    (launch,) = [launch for launch in kernel_launches.launches if launch.kernel == kernel]
    assert (launch.args[3] is not None, launch.args[4] is not None) == (needs != "target", needs != "input")
    n_grads = 2 if needs == "both" else 1
    partials = 0 if reduction == "none" else 4 * launch.grid[0]
    assert launch.bytes_stored == n_grads * 1823 * 4 + partials
    if input.grad is not None and target.grad is not None:
        assert torch.equal(target.grad, -input.grad)


def test_mse_loss_reduction_is_deterministic_and_uses_no_atomics(monkeypatch):
    from triton.runtime import interpreter

    def refuse(*args, **kwargs):
        raise AssertionError("a reduction kernel used an atomic")

    # Any atomic the kernels executed would now fail the test.
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_atomic_rmw", refuse)
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_atomic_cas", refuse)
    input, target = torch.randn(20_000), torch.randn(20_000)
    for reduction in ("mean", "sum"):
        runs = [fused_ops.mse_loss(input, target, reduction=reduction) for _ in range(2)]
        with _few_partials(4):
            runs += [fused_ops.mse_loss(input, target, reduction=reduction) for _ in range(2)]
        assert torch.equal(runs[0], runs[1]) and torch.equal(runs[2], runs[3]), "runs must be bitwise identical"
        expected = reference_in_fp64(F.mse_loss, input, target, reduction=reduction)
        assert_close(runs[0], expected, 20_000)
        assert_close(runs[2], expected, 20_000)
    assert "tl.atomic" not in inspect.getsource(mse_kernels)


@pytest.mark.interpreter_only  # counts bytes
def test_mse_loss_partial_sums_loop_over_several_blocks_per_program(kernel_launches):
    # 9 blocks over 4 programs: programs 0 sums blocks 0, 4, 8; program 3 sums 3, 7.
    input, target = torch.randn(9 * 1024 - 5, dtype=torch.float64), torch.randn(9 * 1024 - 5, dtype=torch.float64)
    with _few_partials(4):
        loss = fused_ops.mse_loss(input, target)
    assert_close(loss, F.mse_loss(input, target), input.numel())
    (stage1,) = [launch for launch in kernel_launches.launches if launch.kernel == "mse_loss_partial_sums_kernel"]
    assert stage1.grid == (4,)
    assert stage1.bytes_loaded == 2 * 8 * input.numel(), "every element read exactly once"


def test_mse_loss_nan_and_inf_follow_torch(kernel_launches):
    input = torch.tensor([float("nan"), float("inf"), 1.0, float("inf")])
    target = torch.tensor([0.0, float("inf"), float("-inf"), 2.0])
    for reduction in REDUCTIONS:
        loss, grad_input, grad_target, grad_output = forward_backward(
            fused_ops.mse_loss, input, target, reduction=reduction
        )
        loss_torch, grad_input_torch, grad_target_torch, _ = forward_backward(
            F.mse_loss, input, target, grad_output=grad_output, reduction=reduction
        )
        assert_close(loss, loss_torch)
        assert_close(grad_input, grad_input_torch)
        assert_close(grad_target, grad_target_torch)
    assert kernel_launches.launch_count("mse_loss_backward_kernel") == 1
    assert kernel_launches.launch_count(SCALE) == 2


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_gradcheck_and_gradgradcheck(reduction, kernel_launches):
    # Few elements: every gradcheck perturbation is one more interpreted launch.
    input = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)

    def loss(a, b):
        return fused_ops.mse_loss(a, b, reduction=reduction)

    assert torch.autograd.gradcheck(loss, (input, target))
    assert torch.autograd.gradgradcheck(loss, (input, target))
    # Gradients with respect to one operand only take the kernel's other flag combinations.
    assert torch.autograd.gradgradcheck(loss, (input, target.detach()))
    assert torch.autograd.gradgradcheck(loss, (input.detach(), target))
    assert kernel_launches.launch_count("mse_loss_backward_kernel") > 0


def test_mse_loss_gradgradcheck_with_broadcasting():
    input = torch.randn(2, 1, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.autograd.gradgradcheck(lambda a, b: fused_ops.mse_loss(a, b, reduction="none"), (input, target))


def test_mse_loss_second_backward_through_freed_graph_raises():
    input = torch.randn(5, requires_grad=True)
    loss = fused_ops.mse_loss(input, torch.randn(5))
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()


def test_mse_loss_does_not_modify_its_operands():
    input, target = torch.randn(100, requires_grad=True), torch.randn(100, requires_grad=True)
    before = (input.detach().clone(), target.detach().clone())
    for reduction in REDUCTIONS:
        fused_ops.mse_loss(input, target, reduction=reduction).sum().backward()
    assert torch.equal(input.detach(), before[0]) and torch.equal(target.detach(), before[1])


@pytest.mark.parametrize("kwargs", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"size_average": False}])
def test_mse_loss_module_matches_torch(kwargs, kernel_launches):
    input, target = torch.randn(8, 16), torch.randn(8, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = fused_ops.nn.MSELoss(**kwargs), torch.nn.MSELoss(**kwargs)
    assert isinstance(ours, torch.nn.MSELoss)
    assert ours.reduction == theirs.reduction
    assert_close(ours(input, target), theirs(input, target), 128)
    assert kernel_launches.launch_count() >= 1


def test_mse_loss_reference_backend_matches_the_kernels(kernel_launches):
    input, target = torch.randn(781, dtype=torch.float16), torch.randn(781, dtype=torch.float32)
    for reduction in REDUCTIONS:
        loss, grad_input, grad_target, grad_output = forward_backward(
            fused_ops.mse_loss, input, target, reduction=reduction
        )
        launches = kernel_launches.launch_count()
        with reference_backend():
            loss_ref, grad_input_ref, grad_target_ref, _ = forward_backward(
                fused_ops.mse_loss, input, target, grad_output=grad_output, reduction=reduction
            )
        assert kernel_launches.launch_count() == launches, "the reference launches no kernel"
        assert_close(loss_ref, loss, 781)
        assert_close(grad_input_ref, grad_input)
        assert_close(grad_target_ref, grad_target)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_custom_ops_pass_opcheck(reduction):
    # Schema, fake implementations (including the output strides), autograd registration.
    input, target = torch.randn(6, 5), torch.randn(5, 6).t()
    grad_output = torch.randn(6, 5) if reduction == "none" else torch.tensor(2.0)
    torch.library.opcheck(torch.ops.fused_ops.mse_loss_forward, (input, target, reduction))
    torch.library.opcheck(torch.ops.fused_ops.mse_loss_backward, (grad_output, input, target, reduction, True, False))
    torch.library.opcheck(torch.ops.fused_ops.mse_loss_backward, (grad_output, input, target, reduction, True, True))


@settings(max_examples=20, deadline=None)
@given(
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=4),
    dtype=st.sampled_from(DTYPES),
    reduction=st.sampled_from(REDUCTIONS),
    transpose=st.booleans(),
    step=st.integers(1, 3),
    broadcast_dim=st.integers(-1, 3),
)
def test_mse_loss_property_random_shapes_strides_and_broadcasts(
    shape, dtype, reduction, transpose, step, broadcast_dim
):
    torch.manual_seed(len(shape))  # hypothesis replays an example: same values each time
    input = torch.randn(shape, dtype=dtype)
    target_shape = list(shape)
    if 0 <= broadcast_dim < len(shape):
        target_shape[broadcast_dim] = 1  # the target broadcasts along this dim
    target = torch.randn(target_shape, dtype=dtype)
    if input.dim() >= 2 and transpose:
        input, target = input.transpose(0, 1), target.transpose(0, 1)
    if input.dim() >= 1:
        input, target = input[::step], target[::step] if target.shape[0] > 1 else target
    with warnings.catch_warnings(), KernelTrace() as trace:
        warnings.simplefilter("ignore")
        loss, grad_input, grad_target, grad_output = forward_backward(
            fused_ops.mse_loss, input, target, reduction=reduction
        )
        loss_torch, grad_input_torch, grad_target_torch, _ = forward_backward(
            F.mse_loss, input, target, grad_output=grad_output, reduction=reduction
        )
    broadcast_numel = torch.broadcast_shapes(input.shape, target.shape).numel()
    assert trace.launch_count(BACKWARD[reduction]) == (1 if broadcast_numel else 0)
    n = max(input.numel(), target.numel())
    assert_close(loss, loss_torch, 1 if reduction == "none" else n)
    # A broadcast operand's gradient sums per-element gradients that torch and the kernel
    # each round once to ``dtype``; with cancellation the sums differ by a few roundings
    # of the largest term, not of the result.
    rtol, _ = tolerance(dtype)
    terms = (2 * (input.double() - target.double()) * grad_output.double()).abs()
    atol = rtol * (terms.max().item() if terms.numel() else 0.0) * n**0.5 + 1e-6
    torch.testing.assert_close(grad_input, grad_input_torch, rtol=rtol, atol=atol)
    torch.testing.assert_close(grad_target, grad_target_torch, rtol=rtol, atol=atol)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_mse_loss_under_torch_compile_fullgraph(backend, kernel_launches):
    # 40 x 64 = 2560 elements: three blocks, so the reduction takes both stages.
    input, target = torch.randn(40, 64, requires_grad=True), torch.randn(64, requires_grad=True)

    def losses(a, b):
        # Every forward kernel, and both backward modes (per-element and 0-d grad_output),
        # with a broadcast target and the size warning inside one graph.
        return fused_ops.mse_loss(a * 2, b, reduction="none").sum(0) + fused_ops.mse_loss(a, b.expand(40, 64))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_compiled_matches_eager(losses, input, target, backend=backend)
    # Eager run + compiled run, each with both losses.
    for kernel in ("mse_loss_kernel", "mse_loss_partial_sums_kernel", "mse_loss_sum_partials_kernel"):
        assert kernel_launches.launch_count(kernel) == 2
    # The eager mean's backward scales its forward's gradients; compiled, the custom ops.
    assert kernel_launches.launch_count("mse_loss_backward_kernel") == 3
    assert kernel_launches.launch_count(SCALE) == 1


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_has_no_host_sync(reduction, kernel_launches):
    input, target = torch.randn(1823, requires_grad=True), torch.randn(1823, requires_grad=True)
    with no_host_sync():
        loss = fused_ops.mse_loss(input, target, reduction=reduction)
        loss.backward(torch.ones_like(loss))
        loss = fused_ops.mse_loss(input, target, reduction=reduction)
        loss.backward(torch.full_like(loss, 2.0))
    assert kernel_launches.launch_count(BACKWARD[reduction]) == 2


class _EagerTraffic(TorchDispatchMode):
    """Bytes each eager aten op reads and writes (tensor arguments + outputs; views are free).

    One aten op is one kernel on a GPU, except that a reduced ``aten.mse_loss`` runs two
    (an elementwise loss into a temporary, then mean or sum), so for it this is a lower bound.
    """

    def __init__(self):
        super().__init__()
        self.bytes_moved = 0
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view and func is not torch.ops.aten.detach.default:
            tensors = [t for t in pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
            self.bytes_moved += sum(t.numel() * t.element_size() for t in tensors)
            self.ops.append(str(func))
        return out


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.interpreter_only  # counts bytes
def test_mse_loss_traffic_is_within_5_percent_of_the_minimum(reduction):
    n = 5 * 1024 + 37  # six blocks, the last partial: six programs, six partials
    input, target = torch.randn(n, requires_grad=True), torch.randn(n, requires_grad=True)
    grad_output = torch.randn(n) if reduction == "none" else torch.tensor(1.5)
    with KernelTrace() as forward:
        loss = fused_ops.mse_loss(input, target, reduction=reduction)
    with KernelTrace() as backward:
        loss.backward(grad_output)

    # Minimum: read input and target once, write the loss (n values, or one), and for
    # 'mean'/'sum' (one pass) both gradients.
    output_bytes = 4 * n if reduction == "none" else 4 + 8 * n
    assert forward.bytes_loaded >= 8 * n
    assert forward.bytes_moved <= 1.05 * (8 * n + output_bytes)
    if reduction != "none":
        (stage1,) = [launch for launch in forward.launches if launch.kernel == "mse_loss_partial_sums_kernel"]
        assert (stage1.bytes_loaded, stage1.bytes_stored) == (8 * n, 8 * n + 4 * 6), "read once, 6 partials"
        # grad_output 1.5: the backward reads and writes each gradient once, in place.
        assert backward.launch_count() == 1
        assert backward.bytes_stored == 8 * n
        assert backward.bytes_moved <= 1.05 * (16 * n)
    else:
        # Read input, target and grad_output, write both gradients.
        assert backward.launch_count() == 1
        assert backward.bytes_stored == 8 * n
        assert backward.bytes_moved <= 1.05 * (12 * n + 8 * n)

    # Eager torch, per element, for the same forward and backward (measured per aten op).
    leaves = [input.detach().requires_grad_(), target.detach().requires_grad_()]
    with _EagerTraffic() as eager_forward:
        eager_loss = F.mse_loss(*leaves, reduction=reduction)
    with _EagerTraffic() as eager_backward:
        eager_loss.backward(grad_output)
    # torch computes grad_input and grad_target with two mse_loss_backward kernels.
    assert eager_backward.ops.count("aten.mse_loss_backward.default") == 2
    # A grad_output other than 1 (1.5 here) costs the one-pass design a read and a write
    # of each gradient in the backward: 32 B per element, about eager torch's; with
    # loss.backward() it is 16 B (test_mse_loss_one_pass_traffic_is_12_or_16_bytes_per_element).
    if reduction == "none":
        assert forward.bytes_moved + backward.bytes_moved < eager_forward.bytes_moved + eager_backward.bytes_moved
    print(
        f"\nmse_loss {reduction}: bytes/element fused forward {forward.bytes_moved / n:.2f}, "
        f"backward {backward.bytes_moved / n:.2f}; eager torch forward >= {eager_forward.bytes_moved / n:.2f}, "
        f"backward {eager_backward.bytes_moved / n:.2f}"
    )


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("needs", ["input", "both"])
@pytest.mark.interpreter_only  # counts bytes
def test_mse_loss_one_pass_traffic_is_12_or_16_bytes_per_element(needs, reduction):
    # Forward and backward together, fp32, loss.backward() (grad_output 1): read input and
    # target once, write each needed gradient once: 12 B per element with one gradient,
    # 16 with both. The backward reads grad_output alone, one scalar per program.
    n = 3 * 1024
    input = torch.randn(n, requires_grad=True)
    target = torch.randn(n, requires_grad=needs == "both")
    with KernelTrace() as forward:
        loss = fused_ops.mse_loss(input, target, reduction=reduction)
    with KernelTrace() as backward:
        loss.backward()
    assert forward.bytes_moved + backward.bytes_moved <= (16.05 if needs == "both" else 12.05) * n
    assert (backward.bytes_loaded, backward.bytes_stored) == (4 * 3, 0)


@pytest.mark.parametrize("requires_grad", [False, True], ids=["operands_without_grad", "no_grad_mode"])
@pytest.mark.interpreter_only  # counts bytes
def test_mse_loss_without_autograd_reads_each_element_once(requires_grad):
    n = 3 * 1024
    input, target = torch.randn(n, requires_grad=requires_grad), torch.randn(n)
    with torch.no_grad() if requires_grad else torch.enable_grad(), KernelTrace() as trace:
        fused_ops.mse_loss(input, target)
    assert trace.bytes_loaded == 8 * n + 4 * 3, "input, target, then 3 partials"
    assert trace.bytes_stored == 4 * 3 + 4, "3 partials and the loss: no gradient"


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_loss_second_backward_computes_fresh_gradients(reduction, kernel_launches):
    # retain_graph=True: the first backward hands out the forward's buffers (scaled in
    # place); a second one computes new gradients from the saved operands and never
    # rescales or overwrites the first, which autograd may keep as .grad.
    input = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    target = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    loss = fused_ops.mse_loss(input, target, reduction=reduction)
    first = torch.autograd.grad(loss, (input, target), torch.tensor(2.0, dtype=torch.float64), retain_graph=True)
    copies = [g.clone() for g in first]
    second = torch.autograd.grad(loss, (input, target), torch.tensor(3.0, dtype=torch.float64), retain_graph=True)
    assert all(torch.equal(g, c) for g, c in zip(first, copies, strict=True)), "a first gradient was changed"
    refs = torch.autograd.grad(F.mse_loss(input, target, reduction=reduction), (input, target))
    for g1, g2, ref in zip(first, second, refs, strict=True):
        assert g1.untyped_storage().data_ptr() != g2.untyped_storage().data_ptr()
        assert_close(g1, 2 * ref)
        assert_close(g2, 3 * ref)
    assert kernel_launches.launch_count(SCALE) == 1
    assert kernel_launches.launch_count("mse_loss_backward_kernel") == 1
    # .grad accumulation: the first backward's buffers become the .grad, the second adds.
    loss = fused_ops.mse_loss(input, target, reduction=reduction)
    loss.backward(retain_graph=True)
    loss.backward()
    assert_close(input.grad, 2 * refs[0])
    assert_close(target.grad, 2 * refs[1])


def test_mse_loss_one_pass_memory():
    # LiveBytes (profiler allocator events): besides the gradients it returns, the one-pass
    # forward and backward allocate only the loss and partial sums, as the two-pass one did.
    n = 64 * 1024
    input = torch.randn(n, requires_grad=True)
    target = torch.randn(n, requires_grad=True)
    with LiveBytes() as live:
        loss = fused_ops.mse_loss(input, target)
        grads = torch.autograd.grad(loss, (input, target))
    assert live.peak_excluding(grads) <= 4 * 1024 + 64
    assert live.peak <= 2 * 4 * n + 4 * 1024 + 64


def aot_workload():
    """Every mse_loss kernel on every path and dtype the tests use, for tests/test_aot.py."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dtype in DTYPES:
            for reduction in REDUCTIONS:
                for needs in ((True, True), (True, False), (False, True)):
                    input = torch.randn(1823, dtype=dtype, requires_grad=needs[0])
                    target = torch.randn(1823, dtype=dtype, requires_grad=needs[1])
                    loss = fused_ops.mse_loss(input, target, reduction=reduction)
                    loss.backward(torch.ones_like(loss))
        pairs = [(torch.float32, torch.float16), (torch.float16, torch.float32), (torch.float16, torch.bfloat16)]
        pairs += [(torch.float32, torch.float64), (torch.bfloat16, torch.float64)]
        for input_dtype, target_dtype in pairs:
            for reduction in REDUCTIONS:
                input = torch.randn(781, dtype=input_dtype, requires_grad=True)
                target = torch.randn(781, dtype=target_dtype, requires_grad=True)
                loss = fused_ops.mse_loss(input, target, reduction=reduction)
                loss.backward(torch.ones_like(loss))
        # Integer and bool operands are converted before the kernels (float16 + int32: float16).
        fused_ops.mse_loss(torch.randn(7, dtype=torch.float16), torch.arange(7, dtype=torch.int32))
        # Up to one block (and empty), a reduction is stage 1 alone, writing the loss itself.
        for dtype in DTYPES:
            fused_ops.mse_loss(torch.randn(63, dtype=dtype), torch.randn(63, dtype=dtype))
            fused_ops.mse_loss(torch.randn(63, dtype=dtype), torch.randn(63, dtype=dtype), reduction="sum")
        # The small partials cap of the loop and determinism tests.
        with _few_partials(4):
            fused_ops.mse_loss(torch.randn(20_000), torch.randn(20_000))
            fused_ops.mse_loss(torch.randn(9 * 1024, dtype=torch.float64), torch.randn(9 * 1024, dtype=torch.float64))
        # The one-pass backward's scaling (grad_output != 1) and a second backward through
        # the saved operands, for every dtype pair of the gradients.
        for dtype in DTYPES:
            for needs in ((True, True), (True, False), (False, True)):
                input = torch.randn(1823, dtype=dtype, requires_grad=needs[0])
                target = torch.randn(1823, dtype=dtype, requires_grad=needs[1])
                loss = fused_ops.mse_loss(input, target)
                loss.backward(torch.tensor(2.0, dtype=dtype), retain_graph=True)
                loss.backward(torch.tensor(0.5, dtype=dtype))


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_eager_calls_launch_without_torch_library_ops(reduction, kernel_launches):
    # The host path: eager calls reach the launchers directly (the custom ops are for
    # torch.compile only), with and without autograd, double backward included.
    input = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    target = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    with torch.profiler.profile() as profile:
        loss = fused_ops.mse_loss(input, target, reduction=reduction)
        grads = torch.autograd.grad(loss, (input, target), torch.randn_like(loss), create_graph=True)
        sum(g.sum() for g in grads).backward()
        with torch.no_grad():
            fused_ops.mse_loss(input, target, reduction=reduction)
    ops = {event.name for event in profile.events()}
    assert not any(op.startswith("fused_ops::") for op in ops), ops
    assert kernel_launches.launch_count("mse_loss_backward_kernel") == 1
