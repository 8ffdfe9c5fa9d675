"""cross_entropy: forward and backward against torch, through the Triton kernels.

Kernels (kernels/cross_entropy.py; logits seen as (outer, C, inner), (N, C) as (1, C, N);
tiles of (BLOCK_C, BLOCK_I) <= 4096 logits, long along the contiguous dim: BLOCK_C <= 4096
when classes are contiguous, BLOCK_I <= 128 when rows are):
- cross_entropy_total_weight_kernel: with grad, 'mean'/'sum' and class indices, the prepass
  over the targets (the mean's denominator, the bounds check);
- cross_entropy_forward_kernel: per-row loss, lse and coef in one pass over the logits, and
  with grad ('mean'/'sum') the gradient too (rows over 8192 classes read the logits twice);
- cross_entropy_reduce_kernel: the 'mean'/'sum' second stage (one program, fixed order);
- cross_entropy_backward_kernel: the gradient of 'none' (and of a second or differentiable
  backward), one pass over the saved logits;
- cross_entropy_scale_grad_kernel: the one-pass backward, scaling the forward's gradient in
  place unless grad_output is 1.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    DTYPES,
    HostSyncError,
    LiveBytes,
    assert_close,
    assert_compiled_matches_eager,
    forward_backward,
    no_host_sync,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import fused_ops
from fused_ops._dispatch import reference_backend
from fused_ops.profiling import KernelTrace, TorchTrace

REDUCTIONS = ("none", "mean", "sum")
FORWARD = "cross_entropy_forward_kernel"
REDUCE = "cross_entropy_reduce_kernel"
BACKWARD = "cross_entropy_backward_kernel"
SCALE = "cross_entropy_scale_grad_kernel"
PREPASS = "cross_entropy_total_weight_kernel"


def _class_dim(x: torch.Tensor) -> int:
    return 0 if x.dim() == 1 else 1


def _index_target(x: torch.Tensor, ignore_every: int = 0, ignore_index: int = -100) -> torch.Tensor:
    """Random class indices for logits ``x``; every ``ignore_every``-th one is ``ignore_index``."""
    shape = () if x.dim() == 1 else (x.shape[0], *x.shape[2:])
    target = torch.randint(0, x.shape[_class_dim(x)], shape)
    if ignore_every and target.numel():
        target.view(-1)[::ignore_every] = ignore_index
    return target


def _prob_target(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.randn(x.shape, dtype=torch.float64).softmax(_class_dim(x)).to(dtype or x.dtype)


def _in_fp64(x, target, weight=None):
    """torch's loss and input gradient in fp64 on the same (already rounded) values."""
    target = target.double() if target.is_floating_point() else target
    weight = None if weight is None else weight.double()
    return x.double(), target, weight


def _check_against_torch(x, target, weight=None, reduction_size=None, **kwargs):
    """Loss and gradient vs torch evaluated in fp64, rounded to our dtypes; returns both."""
    loss, grad, grad_output = forward_backward(fused_ops.cross_entropy, x, target, wrt=(0,), weight=weight, **kwargs)
    x64, t64, w64 = _in_fp64(x, target, weight)
    loss_ref, grad_ref, _ = forward_backward(
        F.cross_entropy, x64, t64, wrt=(0,), grad_output=grad_output.double(), weight=w64, **kwargs
    )
    n = reduction_size if reduction_size is not None else max(x.shape[_class_dim(x)], 1)
    assert_close(loss, loss_ref.to(loss.dtype), reduction_size=n)
    assert_close(grad, grad_ref.to(grad.dtype), reduction_size=n)
    return loss, grad


# Class-index targets, 'mean', the common path. Shapes and the tile each reaches:
COMMON_SHAPES = [
    (4, 1),  # C = 1: every loss and gradient is 0; one program of (1, 4)
    (5, 63),  # all 5 rows in one (64, 8) tile, classes and rows partly masked
    (3, 781),  # one (1024, 4) tile
    (2, 1823),  # one (2048, 2) tile
    (2, 9000),  # (4096, 1) tiles, 3 per row: the online logsumexp rescales between them
    (7,),  # (C,) input with a 0-d target: (1, 7, 1), one row
    (3, 6, 2, 5),  # (N, C, d1, d2): rows contiguous, (8, 16) tiles of 16 spatial rows, 3 programs
    (0, 9),  # empty N: no forward/backward launch; the mean is nan
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", COMMON_SHAPES, ids=str)
def test_cross_entropy_matches_torch(shape, dtype, kernel_launches):
    x = torch.randn(shape, dtype=dtype) * 3
    target = _index_target(x)
    loss, grad = _check_against_torch(x, target)
    assert loss.dtype == dtype and grad.dtype == dtype
    rows = 0 if x.numel() == 0 else 1
    # 'mean' with grad: the prepass, the forward writing the gradient, the reduction, and
    # a backward that scales it (grad_output is random here), with no pass over the logits.
    # A forward of one program does the prepass and the reduction itself: both or neither
    # launch (read off the launches, which a GPU records too, not off the grid).
    multi = kernel_launches.launch_count(REDUCE) == 1
    assert kernel_launches.launch_count(PREPASS) == multi
    assert kernel_launches.launch_count(FORWARD) == rows
    assert kernel_launches.launch_count(REDUCE) == multi
    assert kernel_launches.launch_count(SCALE) == rows
    assert kernel_launches.launch_count(BACKWARD) == 0


def test_cross_entropy_empty_batch_like_torch():
    x = torch.randn(0, 5, requires_grad=True)
    target = torch.zeros(0, dtype=torch.long)
    assert torch.isnan(fused_ops.cross_entropy(x, target))
    assert fused_ops.cross_entropy(x, target, reduction="sum").item() == 0
    assert fused_ops.cross_entropy(x, target, reduction="none").shape == (0,)
    assert torch.isnan(fused_ops.cross_entropy(x, _prob_target(x)))
    fused_ops.cross_entropy(x, target, reduction="sum").backward()
    assert x.grad.shape == (0, 5)


@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("with_weight", [False, True], ids=["no_weight", "weight"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(6, 11), (3, 7, 5)], ids=str)
def test_cross_entropy_every_option_matches_torch(
    shape, reduction, label_smoothing, with_weight, target_kind, kernel_launches
):
    # fp64, so that any formula difference (smoothing x weights x ignored rows x the
    # weighted mean) shows far above rounding.
    x = torch.randn(shape, dtype=torch.float64) * 2
    weight = torch.rand(shape[1], dtype=torch.float64) + 0.5 if with_weight else None
    if target_kind == "index":
        target = _index_target(x, ignore_every=3)
        kwargs = {"ignore_index": -100}
    else:
        target = _prob_target(x)
        kwargs = {}
    _check_against_torch(
        x, target, weight, reduction=reduction, label_smoothing=label_smoothing, reduction_size=x.numel(), **kwargs
    )
    assert kernel_launches.launch_count(FORWARD) == 1
    # 'none' launches the reduce kernel too: it folds the target flags and writes total_weight,
    # unless the forward is one program ((6, 11); (3, 7, 5) with weights per class), which
    # does it itself.
    multi = kernel_launches.launch_count(REDUCE) == 1
    assert kernel_launches.launch_count(REDUCE) <= 1
    # 'mean'/'sum': the forward wrote the gradient (index targets after the prepass).
    one_pass = reduction != "none"
    assert kernel_launches.launch_count(PREPASS) == (one_pass and target_kind == "index" and multi)
    assert kernel_launches.launch_count(SCALE if one_pass else BACKWARD) == 1


@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize(
    ("shape", "programs"),
    [
        ((300, 300), 2),  # (512, 8) tiles: 38 row blocks in 2 programs of 19 blocks (152 rows)
        ((5, 6, 7, 3), 1),  # rows contiguous, (8, 32) tiles: 5 blocks, one of each n, in one program
        ((3, 5000), 1),  # one tile of 8192 padded classes a row (32 warps on a GPU)
    ],
    ids=str,
)
@pytest.mark.interpreter_only  # reads grids
def test_cross_entropy_weights_per_class_group_rows_in_a_program(shape, programs, target_kind, kernel_launches):
    # Class weights with smoothing (or probability targets) in the one-pass forward: each
    # program loads the weights once and walks 128 rows or more (or all of them), block
    # after block, across the outer dim of spatial logits too, the last program with fewer.
    x = torch.randn(shape, dtype=torch.float32) * 2
    weight = torch.rand(shape[1]) + 0.5
    target = _index_target(x, ignore_every=3) if target_kind == "index" else _prob_target(x)
    for reduction in ("mean", "sum"):
        _check_against_torch(x, target, weight, reduction=reduction, label_smoothing=0.2, reduction_size=x.numel())
    grids = [launch.grid[0] for launch in kernel_launches.launches if launch.kernel == FORWARD]
    assert grids == [programs, programs]


@pytest.mark.parametrize("ignore_index", [0, 3, -1])
def test_cross_entropy_ignore_index_inside_the_class_range(ignore_index):
    x = torch.randn(8, 5, dtype=torch.float64)
    target = _index_target(x)
    target[::2] = ignore_index if ignore_index >= 0 else target[::2]
    target[1] = ignore_index
    _check_against_torch(x, target, ignore_index=ignore_index, label_smoothing=0.1)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.4])
@pytest.mark.parametrize("with_weight", [False, True], ids=["no_weight", "weight"])
def test_cross_entropy_all_targets_ignored_is_nan_like_torch(with_weight, label_smoothing):
    x = torch.randn(4, 5, dtype=torch.float64)
    weight = torch.rand(5, dtype=torch.float64) if with_weight else None
    target = torch.full((4,), -100)
    loss, grad, _ = forward_backward(
        fused_ops.cross_entropy, x, target, wrt=(0,), weight=weight, label_smoothing=label_smoothing
    )
    loss_ref, grad_ref, _ = forward_backward(
        F.cross_entropy, x, target, wrt=(0,), weight=weight, label_smoothing=label_smoothing
    )
    assert torch.isnan(loss) and torch.isnan(loss_ref)
    assert_close(grad, grad_ref)


@pytest.mark.parametrize("target_kind", ["index", "index_1", "prob"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_unbatched_input(reduction, target_kind):
    # (C,) logits: one row, outer = inner = 1. Index targets are 0-d, or (1,) as torch allows.
    x = torch.randn(9, dtype=torch.float64)
    if target_kind == "prob":
        target = _prob_target(x)
    else:
        target = torch.tensor(4) if target_kind == "index" else torch.tensor([4])
    weight = torch.rand(9, dtype=torch.float64)
    if target_kind == "index_1":
        # torch's forward takes a (1,) target here, but its backward raises "size
        # mismatch": compare the loss, and the gradient with that of the 0-d target.
        loss, grad, grad_output = forward_backward(
            fused_ops.cross_entropy, x, target, wrt=(0,), weight=weight, reduction=reduction
        )
        assert_close(loss, F.cross_entropy(x, target, weight, reduction=reduction))
        _, grad_ref, _ = forward_backward(
            F.cross_entropy, x, target[0], wrt=(0,), grad_output=grad_output, weight=weight, reduction=reduction
        )
        assert_close(grad, grad_ref)
    else:
        loss, _ = _check_against_torch(x, target, weight, reduction=reduction)
    assert loss.shape == F.cross_entropy(x, target, reduction=reduction).shape


def test_cross_entropy_large_vocabulary(kernel_launches):
    # 131072 classes, 2 rows: 32 tiles of 4096 per row, nothing softmax-sized allocated;
    # the forward writing the gradient reads them twice (the lse must be final first).
    x = torch.randn(2, 131072) * 4
    target = torch.tensor([5, 131071])
    _check_against_torch(x, target, label_smoothing=0.1)
    assert kernel_launches.launch_count(FORWARD) == 1
    assert kernel_launches.launch_count(SCALE) == 1


def _layouts():
    """Logits in awkward layouts; the comment says which (outer, C, inner) view each becomes."""
    base = torch.randn(6, 13, dtype=torch.float64)
    spatial = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    return {
        # (N, C) column-major: (1, C, N) with rows contiguous, tiles of up to 128 rows.
        "transposed": base.t().contiguous().t(),
        # (N, C) with a class stride of 2: neither dim contiguous, class-major tiles, strided loads.
        "sliced_classes": torch.randn(6, 26, dtype=torch.float64)[:, ::2],
        # (N, C) with every other row: stride(0) = 2 C.
        "sliced_rows": torch.randn(12, 13, dtype=torch.float64)[::2],
        # (N, C, d1, d2) channels-last: d1, d2 merge into one stride (C), no copy; classes contiguous.
        "channels_last": spatial.contiguous(memory_format=torch.channels_last),
        # d1, d2 swapped: they cannot merge, so the logits are copied to contiguous.
        "spatial_permuted": spatial.transpose(2, 3).contiguous().transpose(2, 3),
        # A broadcast (stride 0) class dim.
        "expanded": torch.randn(6, 1, dtype=torch.float64).expand(6, 13),
    }


@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("layout", list(_layouts()))
def test_cross_entropy_non_contiguous_logits(layout, target_kind, kernel_launches):
    x = _layouts()[layout]
    target = _index_target(x, ignore_every=4) if target_kind == "index" else _prob_target(x)
    _, grad = _check_against_torch(x, target, label_smoothing=0.2, reduction="none")
    assert kernel_launches.launch_count(FORWARD) == 1
    if layout in ("transposed", "channels_last"):
        assert grad.stride() == x.stride(), "a dense layout keeps its strides: no copy"


def test_cross_entropy_non_contiguous_targets_and_grad_output():
    x = torch.randn(5, 7, 3, dtype=torch.float64)
    target = torch.randint(0, 7, (3, 5)).t()  # (5, 3), transposed
    prob = _prob_target(x.transpose(0, 2).contiguous()).transpose(0, 2)  # a permuted layout
    grad_output = torch.randn(3, 5, dtype=torch.float64).t()
    for t in (target, prob):
        loss, grad, _ = forward_backward(
            fused_ops.cross_entropy, x, t, wrt=(0,), grad_output=grad_output, reduction="none"
        )
        loss_ref, grad_ref, _ = forward_backward(
            F.cross_entropy, x, t, wrt=(0,), grad_output=grad_output, reduction="none"
        )
        assert_close(loss, loss_ref)
        assert_close(grad, grad_ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cross_entropy_half_precision_prob_targets_and_weights(dtype, kernel_launches):
    x = torch.randn(4, 37, dtype=dtype) * 3
    weight = (torch.rand(37) + 0.5).to(dtype)
    _check_against_torch(x, _index_target(x, ignore_every=3), weight, label_smoothing=0.1)
    _check_against_torch(x, _prob_target(x), weight, label_smoothing=0.1, reduction="sum", reduction_size=4 * 37)
    # Mixed dtypes promote like torch: half logits with fp32 probabilities give an fp32 loss.
    loss = fused_ops.cross_entropy(x, _prob_target(x, torch.float32))
    assert loss.dtype == F.cross_entropy(x, _prob_target(x, torch.float32)).dtype == torch.float32
    assert kernel_launches.launch_count(FORWARD) == 3


def test_cross_entropy_negative_label_smoothing_is_ignored_like_torch():
    # torch checks only label_smoothing > 1; a negative value means no smoothing.
    x = torch.randn(5, 7, dtype=torch.float64)
    _check_against_torch(x, _index_target(x), label_smoothing=-0.3)
    _check_against_torch(x, _prob_target(x), label_smoothing=-0.3)


def test_cross_entropy_uint8_targets():
    x = torch.randn(6, 10, dtype=torch.float64)
    _check_against_torch(x, torch.randint(0, 10, (6,), dtype=torch.uint8), label_smoothing=0.2)


def test_cross_entropy_extreme_logits_like_torch():
    inf, nan = float("inf"), float("nan")
    x = torch.tensor(
        [
            [-inf, 1.0, 2.0],  # -inf elsewhere than the target: finite
            [-inf, 1.0, 2.0],  # -inf at the target: inf
            [inf, 1.0, 2.0],  # +inf: nan
            [nan, 1.0, 2.0],  # nan: nan
            [1000.0, -1000.0, 0.0],  # far apart: exact, no overflow
        ]
    )
    target = torch.tensor([1, 0, 1, 1, 0])
    loss = fused_ops.cross_entropy(x, target, reduction="none")
    torch.testing.assert_close(loss, F.cross_entropy(x, target, reduction="none"), equal_nan=True)


def test_cross_entropy_precision_of_a_small_loss_of_large_logits():
    # lse and the target logit are both ~1e4 and the loss ~4.6e-5: computed as lse - x_y
    # in fp32 it would be 0 or off by ~1e-3. Relative to the running max, it is off only
    # by the rounding of log(sum) near 1 (~1e-7 absolute), exactly like torch's fp32.
    x = torch.tensor([[10000.0, 9990.0, 9985.0]])
    prob = _prob_target(x, torch.float32)
    for target, kwargs in ((torch.tensor([0]), {}), (torch.tensor([0]), {"label_smoothing": 0.1}), (prob, {})):
        loss = fused_ops.cross_entropy(x, target, **kwargs)
        exact = F.cross_entropy(x.double(), target.double() if target.is_floating_point() else target, **kwargs)
        assert abs(loss.double() - exact) < 2e-7
        torch.testing.assert_close(loss, F.cross_entropy(x, target, **kwargs), rtol=1e-5, atol=2e-7)


def test_cross_entropy_is_deterministic():
    x = torch.randn(300, 40)
    target = _index_target(x, ignore_every=7)
    weight = torch.rand(40)
    first = fused_ops.cross_entropy(x, target, weight)
    assert all(torch.equal(fused_ops.cross_entropy(x, target, weight), first) for _ in range(3))


def test_cross_entropy_legacy_reduction_arguments():
    x = torch.randn(5, 4)
    target = _index_target(x)
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        loss = fused_ops.cross_entropy(x, target, size_average=False)
    assert_close(loss, F.cross_entropy(x, target, reduction="sum"))
    with pytest.warns(UserWarning):
        assert fused_ops.cross_entropy(x, target, reduce=False).shape == (5,)


@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_gradcheck_and_gradgradcheck(reduction, target_kind):
    # (N, C, d) logits with weights, smoothing and (for indices) ignored targets. fast_mode
    # checks the Jacobians along random directions: each interpreted launch is slow.
    x = torch.randn(3, 5, 2, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(5, dtype=torch.float64) + 0.5
    target = _index_target(x, ignore_every=3) if target_kind == "index" else _prob_target(x)

    def loss(x):
        return fused_ops.cross_entropy(x, target, weight, reduction=reduction, label_smoothing=0.25)

    assert torch.autograd.gradcheck(loss, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(loss, (x,), fast_mode=True)


def test_cross_entropy_full_gradgradcheck_of_a_small_case():
    # One exhaustive (slow mode) check, column by column, on a tiny (N, C).
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([2, 0])

    def loss(x):
        return fused_ops.cross_entropy(
            x, target, torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64), label_smoothing=0.1
        )

    assert torch.autograd.gradcheck(loss, (x,))
    assert torch.autograd.gradgradcheck(loss, (x,))


def test_cross_entropy_gradients_of_probability_targets_and_weight():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    prob = _prob_target(x).requires_grad_()
    weight = (torch.rand(4, dtype=torch.float64) + 0.5).requires_grad_()
    for reduction in REDUCTIONS:

        def loss(x, prob, weight, reduction=reduction):
            return fused_ops.cross_entropy(x, prob, weight, reduction=reduction, label_smoothing=0.2)

        assert torch.autograd.gradcheck(loss, (x, prob, weight), fast_mode=True)
        assert torch.autograd.gradgradcheck(loss, (x, prob, weight), fast_mode=True)


def test_cross_entropy_second_backward_through_freed_graph_raises():
    x = torch.randn(3, 4, requires_grad=True)
    loss = fused_ops.cross_entropy(x, torch.tensor([0, 1, 2]))
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()


def test_cross_entropy_module_matches_torch(kernel_launches):
    weight = torch.rand(6)
    kwargs = {"weight": weight, "ignore_index": 2, "reduction": "sum", "label_smoothing": 0.1}
    module = fused_ops.nn.CrossEntropyLoss(**kwargs)
    assert isinstance(module, torch.nn.CrossEntropyLoss)
    x = torch.randn(5, 6)
    target = _index_target(x)
    assert_close(module(x, target), torch.nn.CrossEntropyLoss(**kwargs)(x, target))
    assert kernel_launches.launch_count(FORWARD) == 1
    inplace = fused_ops.nn.CrossEntropyLoss(**kwargs, inplace_grad=True)
    assert_close(inplace(x, target), module(x, target))


def test_cross_entropy_reference_backend_matches_torch(kernel_launches):
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    with reference_backend():
        _check_against_torch(
            x, _index_target(x, ignore_every=3), torch.rand(3, dtype=torch.float64), label_smoothing=0.2
        )
        _check_against_torch(x, _prob_target(x), reduction="none")
        target = _index_target(x, ignore_every=2)
        leaf = x.clone().requires_grad_()
        logits = leaf * 1
        loss = fused_ops.cross_entropy(logits, target, inplace_grad=True)
        loss.backward(torch.tensor(2.0, dtype=torch.float64))
        loss_ref, grad_ref, _ = forward_backward(
            F.cross_entropy, x, target, wrt=(0,), grad_output=torch.tensor(2.0, dtype=torch.float64)
        )
        assert_close(loss, loss_ref)
        assert_close(leaf.grad, grad_ref)
        assert_close(logits.detach(), grad_ref), "the gradient was written over the logits"
    assert kernel_launches.launch_count() == 0


def _one_pass_cases():
    x2 = torch.randn(6, 9, dtype=torch.float64)
    x4 = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    weight = torch.rand(9, dtype=torch.float64) + 0.5
    return {
        "index_mean": (x2, _index_target(x2, ignore_every=4), {}),
        "index_weight_smooth_sum": (x2, _index_target(x2, ignore_every=4), {"weight": weight, "label_smoothing": 0.3}),
        "index_spatial": (x4, _index_target(x4, ignore_every=5), {"label_smoothing": 0.1}),
        # (2, 5, 1, 12) from a (2, 5, 12, 3) slice: spatial dims that do not merge (a copy-in).
        "index_spatial_unmergeable": (
            torch.randn(2, 5, 12, 3, dtype=torch.float64)[..., :1].transpose(2, 3),
            torch.randint(0, 5, (2, 1, 12)),
            {},
        ),
        "prob_weight_smooth_mean": (x2, _prob_target(x2), {"weight": weight, "label_smoothing": 0.2}),
        "prob_transposed_sum": (x2.t().contiguous().t(), _prob_target(x2), {"reduction": "sum"}),
        "long_rows": (torch.randn(2, 9000, dtype=torch.float64), torch.tensor([3, 8999]), {}),
    }


@pytest.mark.parametrize("case", list(_one_pass_cases()))
def test_cross_entropy_one_pass_and_inplace_grad_match_torch(case, kernel_launches):
    # The default one-pass gradient (its own buffer) and inplace_grad (written over the
    # logits) against torch, for a scaled backward; the default never writes the logits.
    x, target, kwargs = _one_pass_cases()[case]
    before = x.clone()
    loss, _ = _check_against_torch(x, target, reduction_size=x.numel(), **kwargs)
    assert torch.equal(x, before), "the logits are never written by default"
    assert kernel_launches.launch_count(SCALE) == 1 and kernel_launches.launch_count(BACKWARD) == 0
    leaf = x.clone().requires_grad_()
    logits = leaf * 1
    loss_inplace = fused_ops.cross_entropy(logits, target, inplace_grad=True, **kwargs)
    grad_output = torch.tensor(0.5, dtype=loss.dtype)
    loss_inplace.backward(grad_output)
    assert torch.equal(loss_inplace.detach(), loss.detach())
    x64, t64, w64 = _in_fp64(x, target, kwargs.pop("weight", None))
    _, grad_ref, _ = forward_backward(
        F.cross_entropy, x64, t64, wrt=(0,), grad_output=grad_output.double(), weight=w64, **kwargs
    )
    assert_close(leaf.grad, grad_ref, reduction_size=x.numel())
    assert_close(logits.detach(), grad_ref, reduction_size=x.numel()), "the gradient is in the logits' memory"


def test_cross_entropy_inplace_grad_over_spatial_dims_that_cannot_merge(kernel_launches):
    # The gradient is written over logits whose spatial dims have no single stride (a
    # sliced view): the forward copies it in, and a scaled backward scales the logits
    # themselves (in eager ops), not a merged copy of them.
    leaf = torch.randn(2, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 5, (2, 2, 6))
    logits = (leaf * 1)[:, :, ::2]
    fused_ops.cross_entropy(logits, target, inplace_grad=True).backward(torch.tensor(0.5, dtype=torch.float64))
    reference = leaf.detach().clone().requires_grad_()
    F.cross_entropy(reference[:, :, ::2], target).backward(torch.tensor(0.5, dtype=torch.float64))
    assert_close(leaf.grad, reference.grad, reduction_size=logits.numel())
    assert kernel_launches.launch_count(FORWARD) == 1 and kernel_launches.launch_count(SCALE) == 0


def test_cross_entropy_inplace_grad_limits():
    h = torch.randn(3, 4, requires_grad=True)
    target = torch.tensor([0, 1, 2])
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
        fused_ops.cross_entropy(h, target, inplace_grad=True)
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad is being used"):
        fused_ops.cross_entropy(h.view(3, 4), target, inplace_grad=True)
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        fused_ops.cross_entropy((h[:1] * 1).expand(3, 4), target, inplace_grad=True)
    loss = fused_ops.cross_entropy(h * 1, target, inplace_grad=True)
    with pytest.raises(RuntimeError, match="supports one backward only"):
        torch.autograd.grad(loss, h, create_graph=True)
    loss = fused_ops.cross_entropy(h * 1, target, inplace_grad=True)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="supports one backward only"):
        loss.backward()
    # Cases without the one-pass forward ignore the option and leave the logits alone.
    logits = h * 1
    before = logits.detach().clone()
    fused_ops.cross_entropy(logits, target, reduction="none", inplace_grad=True).sum().backward()
    with torch.no_grad():
        fused_ops.cross_entropy(logits, target, inplace_grad=True)
    assert torch.equal(logits, before)


def test_cross_entropy_inplace_grad_makes_other_users_of_the_logits_raise():
    # Another op saved the logits for its backward (pow saves its input): once they are
    # overwritten with the gradient, autograd's version check must refuse that backward
    # rather than compute a silently wrong gradient (Liger's default writes silently).
    h = torch.randn(4, 6, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3])
    logits = h * 2
    penalty = logits.pow(2).sum()
    loss = fused_ops.cross_entropy(logits, target, inplace_grad=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (loss + penalty).backward()
    # A view of the logits shares their version counter: the same refusal.
    logits = h * 2
    penalty = logits.view(-1).pow(2).sum()
    loss = fused_ops.cross_entropy(logits, target, inplace_grad=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (loss + penalty).backward()
    # Without the option the same graph is fine.
    logits = h * 2
    (fused_ops.cross_entropy(logits, target) + logits.pow(2).sum()).backward()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_second_backward_computes_a_fresh_gradient(reduction, kernel_launches):
    # retain_graph=True: the first backward hands out the forward's buffer (scaled in
    # place); a second one must compute a new gradient from the saved logits and never
    # rescale or overwrite the first, which autograd may keep as .grad.
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 3, -100, 6, 2])
    weight = torch.rand(7, dtype=torch.float64) + 0.5
    kwargs = {"weight": weight, "reduction": reduction, "label_smoothing": 0.1}
    loss = fused_ops.cross_entropy(x, target, **kwargs)
    (first,) = torch.autograd.grad(loss, x, torch.tensor(2.0, dtype=torch.float64), retain_graph=True)
    first_copy = first.clone()
    (second,) = torch.autograd.grad(loss, x, torch.tensor(3.0, dtype=torch.float64), retain_graph=True)
    assert torch.equal(first, first_copy), "the first gradient was rescaled or overwritten"
    assert second.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()
    (ref,) = torch.autograd.grad(F.cross_entropy(x, target, **kwargs), x)
    assert_close(first, 2 * ref)
    assert_close(second, 3 * ref)
    assert kernel_launches.launch_count(SCALE) == 1 and kernel_launches.launch_count(BACKWARD) == 1
    # .grad accumulation: the first backward's buffer becomes x.grad, the second adds to it.
    loss = fused_ops.cross_entropy(x, target, **kwargs)
    loss.backward(retain_graph=True)
    loss.backward()
    assert_close(x.grad, 2 * ref)


def _error_cases():
    x = torch.randn(4, 5)
    long = torch.long
    return {
        # Out-of-bounds targets (the names start with "bounds_"): the kernels find them.
        "bounds_target_too_large": (x, torch.tensor([0, 1, 2, 5]), {}),
        "bounds_negative_target": (x, torch.tensor([0, -1, 2, 3]), {}),
        "bounds_smoothing": (x, torch.tensor([0, 1, 7, 3]), {"label_smoothing": 0.1}),
        "bounds_spatial": (torch.randn(2, 5, 3), torch.full((2, 3), 9), {}),
        "bounds_spatial_none": (torch.randn(2, 5, 3), torch.tensor([[0, 1, 2], [3, -7, 4]]), {"reduction": "none"}),
        "bounds_unbatched": (torch.randn(5), torch.tensor(5), {}),
        "bounds_weighted_with_an_ignored_target": (x, torch.tensor([0, -100, 2, 99]), {"weight": torch.rand(5)}),
        "int32_target": (x, torch.zeros(4, dtype=torch.int32), {}),
        "float_target_wrong_shape": (x, torch.rand(4), {}),
        "long_target_shaped_like_input": (x, torch.zeros(4, 5, dtype=long), {}),
        "batch_mismatch": (x, torch.zeros(3, dtype=long), {}),
        "multi_target": (x, torch.zeros(4, 1, dtype=long), {}),
        "unbatched_target_size": (torch.randn(5), torch.tensor([1, 2]), {}),
        "spatial_target_size": (torch.randn(2, 5, 3), torch.zeros(2, 4, dtype=long), {}),
        "spatial_4d_target_dim": (torch.randn(2, 5, 3, 4), torch.zeros(2, 3, dtype=long), {}),
        "spatial_4d_target_size": (torch.randn(2, 5, 3, 4), torch.zeros(2, 3, 5, dtype=long), {}),
        "weight_size": (x, torch.zeros(4, dtype=long), {"weight": torch.ones(3)}),
        "weight_size_spatial": (torch.randn(2, 5, 3), torch.zeros(2, 3, dtype=long), {"weight": torch.ones(3)}),
        "weight_size_prob": (x, torch.rand(4, 5), {"weight": torch.ones(3)}),
        "weight_dtype": (x, torch.zeros(4, dtype=long), {"weight": torch.ones(5, dtype=torch.float64)}),
        "weight_requires_grad": (x, torch.zeros(4, dtype=long), {"weight": torch.ones(5, requires_grad=True)}),
        "integer_logits": (x.long(), torch.zeros(4, dtype=long), {}),
        "integer_logits_prob": (x.long(), torch.rand(4, 5), {}),
        "reduction_name": (x, torch.zeros(4, dtype=long), {"reduction": "avg"}),
        "smoothing_above_one": (x, torch.zeros(4, dtype=long), {"label_smoothing": 1.5}),
        "smoothing_above_one_prob": (x, torch.rand(4, 5), {"label_smoothing": 1.5}),
        "ignore_index_with_probabilities": (x, torch.rand(4, 5), {"ignore_index": 1}),
        "zero_dim_input": (torch.tensor(1.0), torch.tensor([0]), {}),
    }


# A bounds case whose every target is bad reduces over no valid row, 0 / 0, before it raises.
@pytest.mark.parametrize("case", list(_error_cases()))
def test_cross_entropy_errors_like_torch(case, kernel_launches):
    x, target, kwargs = _error_cases()[case]
    before = (x.clone(), target.clone())
    with pytest.raises(Exception) as expected:
        F.cross_entropy(x, target, **kwargs)
    with pytest.raises(expected.type) as actual:
        fused_ops.cross_entropy(x, target, **kwargs)
    torch_message = str(expected.value).split("\n")[0]
    if expected.type is NotImplementedError:
        assert "not implemented for 'Long'" in str(actual.value)
    else:
        assert str(actual.value) == torch_message
    assert torch.equal(x, before[0]) and torch.equal(target, before[1]), "inputs untouched"
    if case.startswith("bounds_"):
        # The forward kernel validates the targets it loads (writing only its own buffers).
        assert kernel_launches.launch_count(FORWARD) == 1
    else:
        assert kernel_launches.launch_count(FORWARD) == 0, "nothing ran before the error"


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_out_of_bounds_check_uses_no_host_sync_when_targets_are_valid(reduction, kernel_launches):
    # The bounds check is torch._assert_async: on the good path nothing reads a value on
    # the host (on a GPU a bad target becomes a device-side assertion instead).
    x = torch.randn(4, 5)
    with no_host_sync():
        fused_ops.cross_entropy(x, torch.tensor([0, 1, 2, 4]), reduction=reduction)
    with pytest.raises(IndexError, match=r"Target 5 is out of bounds\."):
        fused_ops.cross_entropy(x, torch.tensor([0, 1, 2, 5]), reduction=reduction)
    # inplace_grad: the targets are checked before the forward overwrites anything (by the
    # prepass, or here, one program, by the forward itself, which then writes no gradient).
    logits = torch.randn(4, 5, requires_grad=True) * 1
    before = logits.detach().clone()
    with pytest.raises(IndexError, match=r"Target -3 is out of bounds\."):
        fused_ops.cross_entropy(logits, torch.tensor([0, -3, 2, 5]), reduction=reduction, inplace_grad=True)
    assert torch.equal(logits, before), "the logits are untouched on error"
    assert kernel_launches.launch_count(FORWARD) == 3
    # Many programs: the prepass raises before the forward runs.
    logits = torch.randn(4, 9000, requires_grad=True) * 1
    before = logits.detach().clone()
    with pytest.raises(IndexError, match=r"Target -3 is out of bounds\."):
        fused_ops.cross_entropy(logits, torch.tensor([0, -3, 2, 5]), reduction=reduction, inplace_grad=True)
    assert torch.equal(logits, before), "the logits are untouched on error"
    assert kernel_launches.launch_count(FORWARD) == 3 + (reduction == "none")


@pytest.mark.parametrize("tile", ["one_program", "many_programs"])
def test_cross_entropy_out_of_bounds_target_in_any_program_is_found(tile, kernel_launches):
    # The forward writes one flag per program and the reduce kernel folds them: a bad
    # target in the last program of many (C = 3 puts up to 1024 rows in a program; 8000
    # classes give one row per program) must still raise. ignore_index=9 is out of range
    # but valid.
    x = torch.randn(5, 3) if tile == "one_program" else torch.randn(5, 8000)
    target = torch.tensor([0, 9, 1, 2, 4])
    target[-1] = x.shape[1]
    with pytest.raises(IndexError, match=rf"Target {x.shape[1]} is out of bounds\."):
        fused_ops.cross_entropy(x, target, ignore_index=9, reduction="none")
    target[-1] = 0
    _check_against_torch(x, target, None, ignore_index=9, reduction_size=x.shape[1])
    assert kernel_launches.launch_count(FORWARD) >= 2


class TestLaunches:
    @pytest.fixture(autouse=True)
    def _nan_filled_allocations(self):
        """Overrides conftest's NaN fill of torch.empty: its fill kernels would count as launches here."""

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_class_index_forward_of_one_program_is_one_kernel_and_one_assert(self, reduction):
        # The targets are validated inside the forward kernel as it loads them, and a
        # forward of one program reduces the loss itself: the only eager op left is the
        # torch._assert_async on its flag (eager torch runs 2 kernels; the 1 x 4096 case of
        # docs/traffic.md, where launches dominate). Two rows of 4096 take two programs and
        # the reduce kernel, which folds their flags.
        x = torch.randn(1, 4096)
        with KernelTrace() as triton_trace, TorchTrace() as eager_trace:
            fused_ops.cross_entropy(x, torch.tensor([7]), reduction=reduction)
        assert [launch.kernel for launch in triton_trace.launches] == [FORWARD]
        assert [op.name for op in eager_trace.ops] == ["aten._assert_async.msg"]
        assert eager_trace.kernel_count() == 1
        x = torch.randn(2, 4096)
        with KernelTrace() as triton_trace, TorchTrace() as eager_trace:
            fused_ops.cross_entropy(x, torch.tensor([7, 0]), reduction=reduction)
        assert [launch.kernel for launch in triton_trace.launches] == [FORWARD, REDUCE]
        assert [op.name for op in eager_trace.ops] == ["aten._assert_async.msg"]
        assert eager_trace.kernel_count() == 1

    def test_probability_forward_is_two_kernels(self):
        x = torch.randn(2, 4096)
        target = _prob_target(x)
        with KernelTrace() as triton_trace, TorchTrace() as eager_trace:
            fused_ops.cross_entropy(x, target)
        assert [launch.kernel for launch in triton_trace.launches] == [FORWARD, REDUCE]
        assert eager_trace.kernel_count() == 0


@pytest.mark.parametrize("inplace_grad", [False, True], ids=["default", "inplace_grad"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_has_no_host_sync(reduction, inplace_grad, kernel_launches):
    h = torch.randn(6, 7, requires_grad=True)
    weight = torch.rand(7)
    for target in (_index_target(h, ignore_every=3), _prob_target(h.detach())):
        for grad_output in (1.0, 2.0):  # the backward's early end and its scaling
            with no_host_sync():
                loss = fused_ops.cross_entropy(
                    h * 1, target, weight, reduction=reduction, label_smoothing=0.1, inplace_grad=inplace_grad
                )
                loss.backward(torch.full_like(loss, grad_output))
    assert kernel_launches.launch_count(BACKWARD if reduction == "none" else SCALE) == 4


def test_no_host_sync_detector_catches_a_bool_of_a_tensor():
    with pytest.raises(HostSyncError), no_host_sync():
        bool(torch.ones(1))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_cross_entropy_under_torch_compile_fullgraph(backend, kernel_launches):
    x = torch.randn(6, 8, requires_grad=True)
    weight = torch.rand(8)
    target = _index_target(x, ignore_every=3)
    prob = _prob_target(x.detach())

    def index_loss(x):
        return fused_ops.cross_entropy(x * 2, target, weight, label_smoothing=0.1)

    def prob_loss(x):
        return fused_ops.cross_entropy(x.view(6, 4, 2), prob.view(6, 4, 2), reduction="none")

    def module_loss(x):
        return fused_ops.nn.CrossEntropyLoss(reduction="sum")(x, target.clamp(min=0))

    for fn in (index_loss, prob_loss, module_loss):
        assert_compiled_matches_eager(fn, x, backend=backend)
    assert kernel_launches.launch_count(FORWARD) == 6  # eager + compiled, for each loss


# n = 0 draws an empty batch, whose mean is nan
@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(0, 5),
    c=st.integers(1, 40),
    spatial=st.lists(st.integers(1, 4), min_size=0, max_size=2),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    layout=st.sampled_from(["contiguous", "transposed", "sliced"]),
    prob=st.booleans(),
    with_weight=st.booleans(),
    label_smoothing=st.sampled_from([0.0, 0.15, 1.0]),
    reduction=st.sampled_from(REDUCTIONS),
)
def test_cross_entropy_property_random_shapes_layouts_and_options(
    n, c, spatial, dtype, layout, prob, with_weight, label_smoothing, reduction
):
    shape = (n, c, *spatial)
    x = torch.randn(shape, dtype=dtype) * 3
    if layout == "transposed":
        x = x.transpose(0, -1).contiguous().transpose(0, -1)
    elif layout == "sliced":
        x = torch.randn(n, 2 * c, *spatial, dtype=dtype)[:, ::2]
    target = _prob_target(x) if prob else _index_target(x, ignore_every=3)
    weight = torch.rand(c, dtype=dtype) + 0.1 if with_weight else None
    _check_against_torch(
        x, target, weight, reduction=reduction, label_smoothing=label_smoothing, reduction_size=max(x.numel(), 1)
    )


def _traffic(fn, *args, **kwargs):
    """(forward bytes, backward bytes) that the Triton kernels move for one call of ``fn``."""
    x = args[0].detach().requires_grad_()
    with KernelTrace() as forward:
        loss = fn(x, *args[1:], **kwargs)
    with KernelTrace() as backward:
        loss.backward(torch.ones_like(loss))
    return forward.bytes_moved, backward.bytes_moved


@pytest.mark.interpreter_only  # counts bytes
def test_cross_entropy_traffic_is_within_5_percent_of_the_minimum():
    # Minimum for contiguous fp32 (N, C) with int64 targets: forward reads each logit and
    # target once; backward reads each logit once and writes each gradient once.
    # ('none' keeps this two-pass design: the backward reads the saved logits.)
    n, c = 4, 3 * 4096
    x = torch.randn(n, c)
    target = _index_target(x)
    forward, backward = _traffic(fused_ops.cross_entropy, x, target, reduction="none")
    minimum_forward = 4 * n * c + 8 * n
    minimum_backward = 2 * 4 * n * c
    assert forward + backward < 1.05 * (minimum_forward + minimum_backward)
    assert forward < 1.01 * minimum_forward + 64 * n, "per row: a handful of scalars besides the logits"


# Options of the counted traffic cases, with the bytes per logit they may move above the
# bound. Class weights with smoothing or probability targets are needed class by class
# for every row: the one-pass forward loads them once per program of 128 rows, so none.
TRAFFIC_OPTIONS = {
    "weight_ignore_index": ({"weight": True}, 0),
    "smoothing_ignore_index": ({"label_smoothing": 0.1}, 0),
    "weight_smoothing_ignore_index": ({"weight": True, "label_smoothing": 0.1}, 0),
}


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("options", list(TRAFFIC_OPTIONS))
@pytest.mark.interpreter_only  # counts bytes
def test_cross_entropy_one_pass_traffic_is_8_bytes_per_fp32_logit(reduction, options):
    # Forward and backward together: each logit read once and its gradient written once,
    # 8.05 B per logit at most, with ignored targets and class weights or smoothing.
    # loss.backward() (grad_output 1) then reads grad_output alone, one scalar per program.
    # Where the weights are needed class by class (with smoothing, or probability targets),
    # 128 rows (one program of the forward), so that the minimum itself is under the bound:
    # the weights read once (4 * c B) are 0.031 B per logit, the int64 targets 0.002 B.
    # 8 rows otherwise, for the interpreter's time.
    kwargs, weight_bytes = TRAFFIC_OPTIONS[options]
    c = 4096
    weighted = bool(kwargs.get("weight"))
    kwargs = dict(kwargs, reduction=reduction, weight=torch.rand(c) if weighted else None)
    x = torch.randn(128 if weighted and "label_smoothing" in kwargs else 8, c)
    forward, backward = _traffic(fused_ops.cross_entropy, x, _index_target(x, ignore_every=3), **kwargs)
    assert forward + backward <= (8.05 + weight_bytes) * x.numel()
    assert backward <= 4 * x.shape[0], "grad_output == 1: one scalar read per program, nothing written"
    # Probability targets: a logits-sized input, read once more (the weights once a program).
    x = torch.randn(128 if weighted else 8, c)
    forward, backward = _traffic(fused_ops.cross_entropy, x, _prob_target(x), **kwargs)
    assert forward + backward <= (12.05 + weight_bytes) * x.numel()
    # Rows longer than one 8192-class tile read the logits twice (12 B per logit).
    long_rows = torch.randn(2, 9000)
    forward, backward = _traffic(fused_ops.cross_entropy, long_rows, torch.tensor([0, 8999]))
    assert forward + backward <= 12.05 * long_rows.numel()


@pytest.mark.interpreter_only  # counts bytes
def test_cross_entropy_scaled_backward_traffic():
    # grad_output != 1: the backward reads and writes the gradient once, in place.
    n, c = 4, 4096
    x = torch.randn(n, c, requires_grad=True)
    loss = fused_ops.cross_entropy(x, _index_target(x))
    with KernelTrace() as backward:
        loss.backward(torch.tensor(0.5))
    assert 8 * n * c <= backward.bytes_moved <= 8.05 * n * c


@pytest.mark.parametrize("options", ["weight_ignore_index", "smoothing_ignore_index"])
@pytest.mark.parametrize("requires_grad", [False, True], ids=["input_without_grad", "no_grad_mode"])
@pytest.mark.interpreter_only  # counts bytes
def test_cross_entropy_without_autograd_reads_each_logit_once(requires_grad, options):
    n, c = 8, 4096
    x = torch.randn(n, c, requires_grad=requires_grad)
    target = _index_target(x, ignore_every=3)
    kwargs, _ = TRAFFIC_OPTIONS[options]
    kwargs = dict(kwargs, weight=torch.rand(c) if kwargs.get("weight") else None)
    with torch.no_grad() if requires_grad else torch.enable_grad(), KernelTrace() as trace:
        fused_ops.cross_entropy(x, target, **kwargs)
    assert trace.bytes_stored < 64 * n, "no gradient written"
    assert 4 * n * c <= trace.bytes_moved <= 4.05 * n * c


def test_cross_entropy_one_pass_memory():
    # LiveBytes (profiler allocator events): the one-pass default allocates nothing
    # logits-sized but the gradient it returns (the two-pass design's peak too: its backward
    # allocates the same gradient), and inplace_grad not even that.
    n, c = 64, 1024
    logits_bytes = 4 * n * c
    h = torch.randn(n, c, requires_grad=True)
    target = _index_target(h, ignore_every=5)
    logits = h * 1
    with LiveBytes() as live:
        loss = fused_ops.cross_entropy(logits, target, label_smoothing=0.1)
        (grad,) = torch.autograd.grad(loss, logits)
    assert live.peak_excluding([grad]) < 0.05 * logits_bytes
    assert live.peak < 1.05 * logits_bytes
    logits = h * 1
    with LiveBytes() as live_two_pass:
        loss = fused_ops.cross_entropy(logits, target, label_smoothing=0.1, reduction="none")
        torch.autograd.grad(loss.sum(), logits)
    assert live.peak <= live_two_pass.peak + 0.05 * logits_bytes
    logits = h * 1
    with LiveBytes() as live_inplace:
        loss = fused_ops.cross_entropy(logits, target, label_smoothing=0.1, inplace_grad=True)
        (grad_inplace,) = torch.autograd.grad(loss, logits)
    assert live_inplace.peak < 0.05 * logits_bytes, "the gradient lives in the logits' memory"
    assert grad_inplace.untyped_storage().data_ptr() == logits.untyped_storage().data_ptr()
    assert_close(grad_inplace, grad)


def aot_workload():
    """Every cross-entropy kernel on every code path, in every dtype, for tests/test_aot.py."""
    for dtype in DTYPES:
        rows = torch.randn(3, 9000, dtype=dtype)  # (N, C): (4096, 1) tiles, 3 per row
        spatial = torch.randn(2, 6, 3, 5, dtype=dtype)  # (N, C, d1, d2): (8, 16) tiles
        weight = torch.rand(6, dtype=dtype)
        cases = [
            (rows, _index_target(rows, ignore_every=2), {}),
            (rows, _prob_target(rows), {"reduction": "sum"}),
            (spatial, _index_target(spatial, ignore_every=2), {"weight": weight, "label_smoothing": 0.1}),
            (spatial, _prob_target(spatial), {"weight": weight, "label_smoothing": 0.1, "reduction": "none"}),
            (spatial, _index_target(spatial), {"reduction": "none"}),
            (spatial, _prob_target(spatial), {}),
        ]
        for x, target, kwargs in cases:
            # The default (one-pass for 'mean'/'sum'), inplace_grad, a second backward
            # through the saved logits, and no autograd.
            for inplace_grad in (False, True):
                leaf = x.detach().requires_grad_()
                loss = fused_ops.cross_entropy(leaf * 1, target, inplace_grad=inplace_grad, **kwargs)
                loss.backward(torch.full_like(loss, 2.0), retain_graph=not inplace_grad)
                if not inplace_grad:
                    loss.backward(torch.ones_like(loss))
            fused_ops.cross_entropy(x, target, **kwargs)
        # One tile of 8192 padded classes over 16 warps (one-pass forward); with class
        # weights, rows grouped in a program over 32 warps (fp64: tiles of 4096, read twice).
        x = torch.randn(2, 5000, dtype=dtype, requires_grad=True)
        fused_ops.cross_entropy(x, torch.tensor([0, 4999]), label_smoothing=0.1).backward()
        weight = torch.rand(5000, dtype=dtype)
        fused_ops.cross_entropy(x, torch.tensor([0, 4999]), weight, label_smoothing=0.1).backward()
        fused_ops.cross_entropy(x, _prob_target(x.detach()), weight).backward()
    x = torch.randn(4, 7, requires_grad=True)
    fused_ops.cross_entropy(x, torch.randint(0, 7, (4,), dtype=torch.uint8)).backward()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_eager_calls_launch_without_torch_library_ops(reduction, kernel_launches):
    # The host path: eager calls reach the launchers directly (the custom ops are for
    # torch.compile only), with and without autograd, and with double backward.
    logits = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 3, -100, 7])
    with torch.profiler.profile() as profile:
        loss = fused_ops.cross_entropy(logits, target, reduction=reduction)
        loss.sum().backward(retain_graph=True)
        (grad,) = torch.autograd.grad(loss.sum(), logits, create_graph=True)
        grad.sum().backward()
        with torch.no_grad():
            fused_ops.cross_entropy(logits, target, reduction=reduction)
    ops = {event.name for event in profile.events()}
    assert not any(op.startswith("fused_ops::") for op in ops), ops
    one_pass = reduction != "none"
    # The one-pass forward keeps no per-row statistics: the differentiable backward
    # recomputes them with a forward launch.
    assert kernel_launches.launch_count("cross_entropy_forward_kernel") == 2 + one_pass
    assert kernel_launches.launch_count("cross_entropy_scale_grad_kernel") == one_pass
    assert kernel_launches.launch_count("cross_entropy_backward_kernel") == 1 + (not one_pass)


def test_inputs_like_ones_seen_before_reuse_their_plan_and_others_are_checked(kernel_launches):
    # cross_entropy keeps a validated plan per (shapes, strides, dtypes, devices, options):
    # a call like an earlier one skips the checks, any difference is checked again, and
    # the per-call bounds check of the targets still runs.
    x = torch.randn(4, 8, requires_grad=True)
    target = torch.randint(0, 8, (4,))
    for reduction in ("mean", "sum", "mean"):
        x.grad = None
        fused_ops.cross_entropy(x, target, reduction=reduction).backward()
        x_ref = x.detach().requires_grad_()
        F.cross_entropy(x_ref, target, reduction=reduction).backward()
        assert_close(x.grad, x_ref.grad)
    assert kernel_launches.launch_count("cross_entropy_forward_kernel") == 3
    with pytest.raises(ValueError, match="batch_size"):
        fused_ops.cross_entropy(x, torch.randint(0, 8, (5,)))
    with pytest.raises(RuntimeError, match="expected target dtype"):
        fused_ops.cross_entropy(x, target.int())
    with pytest.raises(RuntimeError, match="label_smoothing"):
        fused_ops.cross_entropy(x, target, label_smoothing=1.5)
    with pytest.raises(IndexError, match="Target 9 is out of bounds"):
        fused_ops.cross_entropy(x, torch.tensor([0, 9, 1, 2]))
