"""sigmoid: forward and backward against torch, through the Triton kernels."""

import pytest
import torch
from helpers import (
    DTYPES,
    HostSyncError,
    assert_close,
    assert_compiled_matches_eager,
    no_host_sync,
    reference_in_fp64,
    strided_variants,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import fused_ops

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


def _run_forward_backward(op, x, grad_output=None):
    """Output and input gradient of ``op`` at ``x``, for a random (or the given) grad_output."""
    x = x.detach().requires_grad_()
    y = op(x)
    grad_output = torch.randn_like(y) if grad_output is None else grad_output
    y.backward(grad_output)
    return y, x.grad, grad_output


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_sigmoid_matches_torch(shape, dtype, kernel_launches):
    x = torch.randn(shape, dtype=dtype) * 4
    y, grad, grad_output = _run_forward_backward(fused_ops.sigmoid, x)
    y_ref, grad_ref, _ = _run_forward_backward(torch.sigmoid, x, grad_output)
    assert_close(y, reference_in_fp64(torch.sigmoid, x))
    assert_close(y, y_ref)
    # The backward kernel sees the rounded forward output, exactly like torch's.
    assert_close(grad, grad_ref)
    expected_launches = 0 if x.numel() == 0 else 1
    assert kernel_launches.launch_count("sigmoid_forward_kernel") == expected_launches
    assert kernel_launches.launch_count("sigmoid_backward_kernel") == expected_launches


def test_sigmoid_tails_keep_relative_precision():
    x = torch.tensor([-80.0, -30.0, 30.0, 80.0])
    y = fused_ops.sigmoid(x)
    expected = torch.sigmoid(x.double()).float()
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=0)
    assert 1.7e-35 < y[0].item() < 1.9e-35


def test_sigmoid_nan_and_inf_follow_torch():
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0])
    assert_close(fused_ops.sigmoid(x), torch.sigmoid(x))


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced", "expanded"])
def test_sigmoid_strided_inputs(layout, kernel_launches):
    x = strided_variants((37, 29))[layout]
    y, grad, grad_output = _run_forward_backward(fused_ops.sigmoid, x)
    y_ref, grad_ref, _ = _run_forward_backward(torch.sigmoid, x, grad_output)
    assert_close(y, y_ref)
    assert_close(grad, grad_ref)
    assert kernel_launches.launch_count("sigmoid_forward_kernel") == 1
    if layout == "transposed":
        assert y.stride() == x.stride(), "a dense permuted input keeps its layout, with no copy"


def test_sigmoid_gradcheck_and_gradgradcheck():
    x = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fused_ops.sigmoid, (x,))
    assert torch.autograd.gradgradcheck(fused_ops.sigmoid, (x,))


def test_sigmoid_second_backward_through_freed_graph_raises():
    x = torch.randn(5, requires_grad=True)
    y = fused_ops.sigmoid(x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


def test_sigmoid_promotes_integers_like_torch():
    x = torch.arange(-3, 4)
    assert_close(fused_ops.sigmoid(x), torch.sigmoid(x))
    assert fused_ops.sigmoid(torch.tensor([True, False])).dtype == torch.float32


def test_sigmoid_rejects_complex_and_leaves_input_untouched():
    x = torch.randn(3, dtype=torch.complex64)
    before = x.clone()
    with pytest.raises(NotImplementedError, match="not implemented for 'ComplexFloat'"):
        fused_ops.sigmoid(x)
    assert torch.equal(x, before)


def test_sigmoid_does_not_modify_its_input():
    x = torch.randn(100)
    before = x.clone()
    fused_ops.sigmoid(x)
    assert torch.equal(x, before)


def test_sigmoid_module_matches_torch(kernel_launches):
    x = torch.randn(8, 16)
    assert_close(fused_ops.nn.Sigmoid()(x), torch.nn.Sigmoid()(x))
    assert kernel_launches.launch_count("sigmoid_forward_kernel") == 1


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=4),
    dtype=st.sampled_from(DTYPES),
    transpose=st.booleans(),
    step=st.integers(1, 3),
)
def test_sigmoid_property_random_shapes_and_strides(shape, dtype, transpose, step):
    x = torch.randn(shape, dtype=dtype) * 5
    if x.dim() >= 2 and transpose:
        x = x.transpose(0, 1)
    if x.dim() >= 1:
        x = x[::step]
    y, grad, grad_output = _run_forward_backward(fused_ops.sigmoid, x)
    y_ref, grad_ref, _ = _run_forward_backward(torch.sigmoid, x, grad_output)
    assert_close(y, y_ref)
    assert_close(grad, grad_ref)


def aot_workload():
    """Every sigmoid kernel in every dtype the tests use, for tests/test_aot.py."""
    for dtype in DTYPES:
        x = torch.randn(1823, dtype=dtype, requires_grad=True)
        fused_ops.sigmoid(x).sum().backward()


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_sigmoid_under_torch_compile_fullgraph(backend, kernel_launches):
    x = torch.randn(6, 5, requires_grad=True)
    assert_compiled_matches_eager(lambda t: fused_ops.sigmoid(t * 2).sum(dim=0), x, backend=backend)
    assert kernel_launches.launch_count("sigmoid_forward_kernel") == 2  # eager run + compiled run


def test_sigmoid_has_no_host_sync(kernel_launches):
    x = torch.randn(300, requires_grad=True)
    with no_host_sync():
        fused_ops.sigmoid(x).backward(torch.ones(300))
    assert kernel_launches.launch_count("sigmoid_backward_kernel") == 1


def test_no_host_sync_detector_catches_item():
    with pytest.raises(HostSyncError), no_host_sync():
        torch.ones(2).sum().item()
