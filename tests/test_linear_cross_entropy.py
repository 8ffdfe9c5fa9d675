"""linear_cross_entropy: loss and gradients against torch, through the Triton kernels.

Kernels (kernels/linear_cross_entropy.py; logits tiles of BLOCK_N x BLOCK_V, 64 x 64 for
fp32/fp16/bf16 and 32 x 32 for fp64, never stored):
- linear_cross_entropy_forward_kernel: per (row block, class split) partial logsumexp;
- linear_cross_entropy_finalize_kernel: merges the splits, writes lse/coef and the loss;
- linear_cross_entropy_grad_input_kernel: one program per row block, walks the classes;
- linear_cross_entropy_grad_weight_kernel: one program per class block, walks the rows
  (grad of the linear weight and of the bias).
Shapes: V = 150 is 3 class blocks of 64 (the last one partial); N = 70 is 2 row blocks (the
last partial); D = 40 is 2 blocks of 32 (fp32). The forward splits the classes only past 32
class blocks (test_large_vocabulary_splits_and_many_row_blocks lowers that bound, and the
memory test's V = 8192 splits 8 ways).
"""

import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fused_ops.kernels import linear_cross_entropy as lce_kernels
from helpers import (
    BENCHMARKS,
    DTYPES,
    LiveBytes,
    assert_close,
    assert_compiled_matches_eager,
    no_host_sync,
    run_compiled_script,
    tolerance,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import fused_ops
from fused_ops import _native
from fused_ops._dispatch import reference_backend
from fused_ops.profiling import KernelTrace

REDUCTIONS = ("none", "mean", "sum")
FORWARD = "linear_cross_entropy_forward_kernel"
FINALIZE = "linear_cross_entropy_finalize_kernel"
GRAD_INPUT = "linear_cross_entropy_grad_input_kernel"
GRAD_WEIGHT = "linear_cross_entropy_grad_weight_kernel"
KERNELS = {FORWARD, FINALIZE, GRAD_INPUT, GRAD_WEIGHT}
# For inputs whose result is nan by design (a mean over only ignored targets), numpy inside
# Triton's interpreter warns as it computes exactly that.
NAN_BY_DESIGN = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _problem(n=70, d=40, v=150, dtype=torch.float32, bias=True, ignore_every=0, ignore_index=-100):
    """Random (input, linear_weight, linear_bias, target) with logits of moderate size."""
    x = torch.randn(n, d, dtype=torch.float64).to(dtype)
    w = (torch.randn(v, d, dtype=torch.float64) / d**0.5).to(dtype)
    b = torch.randn(v, dtype=torch.float64).to(dtype) if bias else None
    target = torch.randint(0, v, (n,))
    if ignore_every and n:
        target[::ignore_every] = ignore_index
    return x, w, b, target


def _run(fn, x, w, b, target, grad_output=None, **kwargs):
    """Loss and the gradients of (input, linear_weight, linear_bias) for a random grad_output."""
    leaves = [t.detach().requires_grad_() for t in (x, w, b) if t is not None]
    if b is None:
        leaves.append(None)
    loss = fn(leaves[0], leaves[1], target, linear_bias=leaves[2], **kwargs)
    if grad_output is None:
        grad_output = torch.randn(loss.shape, dtype=torch.float64).to(loss.dtype)
    wanted = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(loss, wanted, grad_output)
    return loss, list(grads), grad_output


def _check_against_torch(x, w, b, target, weight=None, **kwargs):
    """Our loss and gradients vs torch's F.linear_cross_entropy in fp64 on the same values."""
    loss, grads, grad_output = _run(fused_ops.linear_cross_entropy, x, w, b, target, weight=weight, **kwargs)
    up = [None if t is None else t.double() for t in (x, w, b)]
    w64 = None if weight is None else weight.double()
    loss_ref, grads_ref, _ = _run(F.linear_cross_entropy, *up, target, grad_output.double(), weight=w64, **kwargs)
    names = ("loss", "input", "linear_weight", "linear_bias")
    ours, refs = [loss, *grads], [loss_ref, *grads_ref]
    for name, value, ref in zip(names, ours, refs, strict=False):
        assert value.shape == ref.shape and value.dtype == x.dtype, name
    if x.dtype in (torch.float32, torch.float64):
        v, d = w.shape
        n = x.shape[0] if x.dim() == 2 else 1
        # The loss sums over classes (and rows for a reduction); the gradients over
        # classes and features (input) or rows (weight, bias): atol grows with those sums.
        for name, value, ref, size in zip(names, ours, refs, (v * n, v * d, n, n), strict=False):
            assert_close(value, ref.to(value.dtype), reduction_size=size, msg=name)
    else:
        # 16-bit: torch itself computes the logits and their gradient in that dtype, with
        # errors of the order of its ulp times the largest value. Ours (fp32 logits, the
        # gradient tile rounded to the dtype before each dot, as tensor cores need) must
        # be at least as close to fp64 as torch in the same dtype, and within the table.
        _, grads_torch, _ = _run(F.linear_cross_entropy, x, w, b, target, grad_output, weight=weight, **kwargs)
        loss_torch = F.linear_cross_entropy(x, w, target, linear_bias=b, weight=weight, **kwargs)
        rtol, _ = tolerance(x.dtype)
        for name, value, ref, theirs in zip(names, ours, refs, [loss_torch, *grads_torch], strict=False):
            scale = ref.abs().max().clamp_min(1e-30) if ref.numel() else 1
            error = (value.double() - ref).abs().max() / scale if ref.numel() else 0
            error_torch = (theirs.double() - ref).abs().max() / scale if ref.numel() else 0
            assert error <= rtol, f"{name}: {error} relative to the largest value"
            assert error <= 1.5 * error_torch + rtol / 8, f"{name}: {error}, torch in {x.dtype}: {error_torch}"
    return loss, grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_torch_with_every_option(dtype, reduction, kernel_launches):
    # Class weights, label smoothing, ignored targets and a bias all at once.
    x, w, b, target = _problem(dtype=dtype, ignore_every=4)
    weight = (torch.rand(w.shape[0], dtype=torch.float64) + 0.2).to(dtype)
    _check_against_torch(x, w, b, target, weight, reduction=reduction, label_smoothing=0.15)
    assert kernel_launches.kernel_names() == KERNELS


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("bias", [False, True])
def test_matches_torch_without_options(reduction, bias, kernel_launches):
    x, w, b, target = _problem(bias=bias)
    _check_against_torch(x, w, b, target, reduction=reduction)
    assert kernel_launches.kernel_names() == KERNELS


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ignore_index": None},  # None means -100 for class indices
        {"ignore_index": 3},
        {"label_smoothing": 1.0},
        {"label_smoothing": -0.2},  # torch treats a negative smoothing as none
        {"label_smoothing": 0.3, "weight": "rand"},
        {"weight": "rand"},
    ],
)
def test_ignore_index_smoothing_and_weights_match_torch(kwargs, kernel_launches):
    x, w, b, target = _problem(ignore_every=3, ignore_index=kwargs.get("ignore_index") or -100)
    target[1::7] = 3
    if kwargs.get("weight") == "rand":
        kwargs = {**kwargs, "weight": torch.rand(w.shape[0]) + 0.1}
    _check_against_torch(x, w, b, target, **kwargs)
    assert kernel_launches.launch_count(GRAD_INPUT) == 1


def test_default_ignore_index_is_minus_100(kernel_launches):
    x, w, b, target = _problem(ignore_every=2)
    loss = fused_ops.linear_cross_entropy(x, w, target, linear_bias=b, reduction="none")
    assert (loss[::2] == 0).all() and (loss[1::2] > 0).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_one_dimensional_input(reduction, kernel_launches):
    # (D,) input with a 0-d target. (torch's forward also takes a (1,) target, but then its
    # own backward fails, so there is nothing to compare with.)
    x, w, b, _ = _problem(n=1)
    loss, grads = _check_against_torch(x[0], w, b, torch.tensor(7), reduction=reduction, label_smoothing=0.1)
    assert loss.shape == () and grads[0].shape == x[0].shape
    assert kernel_launches.launch_count(FORWARD) == 1


def test_strided_and_uint8_inputs(kernel_launches):
    # A transposed linear weight (stride (1, V)), a sliced input and bias, uint8 targets.
    x, w, b, target = _problem(n=20, d=40, v=150)
    x = torch.randn(20, 80)[:, ::2]
    w_t = w.t().contiguous().t()
    b = torch.randn(300)[::2]
    _check_against_torch(x, w_t, b, target.to(torch.uint8), label_smoothing=0.05)
    assert kernel_launches.launch_count(GRAD_WEIGHT) == 1


def test_large_vocabulary_splits_and_many_row_blocks(monkeypatch, kernel_launches):
    # 2 forward splits of 4 class blocks each (the forward's program target lowered to 2
    # per row block, and splits allowed down to one class block), 3 row blocks, so every
    # merge path of the finalize runs.
    monkeypatch.setattr(lce_kernels, "LINEAR_CE_FORWARD_PROGRAMS", 6)
    monkeypatch.setattr(lce_kernels, "LINEAR_CE_MIN_BLOCKS_PER_SPLIT", 1)
    monkeypatch.setattr(sys.modules["fused_ops.linear_cross_entropy"], "_PLANS", {})  # plans hold the splits
    x, w, b, target = _problem(n=150, d=20, v=500, ignore_every=5)
    assert lce_kernels.forward_splits(150, 500, torch.float32) == (2, 4)
    _check_against_torch(x, w, b, target, weight=torch.rand(500) + 0.1, label_smoothing=0.1)
    assert kernel_launches.launch_count(FORWARD) == 1


@NAN_BY_DESIGN
def test_all_ignored_and_empty_batches(kernel_launches):
    x, w, b, target = _problem(n=5)
    target[:] = -100
    _check_against_torch(x, w, b, target)  # nan loss, zero gradients, as torch
    _check_against_torch(x, w, b, target, reduction="sum")
    empty = _problem(n=0)
    for reduction in REDUCTIONS:
        _check_against_torch(*empty, reduction=reduction)


def test_only_the_requested_gradients_are_computed(kernel_launches):
    x, w, b, target = _problem()
    out = fused_ops.linear_cross_entropy(x.requires_grad_(), w, target, linear_bias=b)
    (grad_x,) = torch.autograd.grad(out, x)
    assert kernel_launches.launch_count(GRAD_WEIGHT) == 0 and kernel_launches.launch_count(GRAD_INPUT) == 1
    x64 = x.detach().double().requires_grad_()
    ref = F.linear_cross_entropy(x64, w.double(), target, linear_bias=b.double())
    assert_close(grad_x, torch.autograd.grad(ref, x64)[0].float(), reduction_size=150 * 40)
    kernel_launches.clear()
    w.requires_grad_()
    out = fused_ops.linear_cross_entropy(x.detach(), w, target, linear_bias=b)
    (_grad_w,) = torch.autograd.grad(out, w)
    assert kernel_launches.launch_count(GRAD_INPUT) == 0 and kernel_launches.launch_count(GRAD_WEIGHT) == 1


@NAN_BY_DESIGN  # n = 0, or every target ignored: a mean over nothing is nan
@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(0, 70),
    d=st.integers(1, 40),
    v=st.integers(1, 150),
    bias=st.booleans(),
    with_weight=st.booleans(),
    label_smoothing=st.sampled_from([0.0, 0.2, 1.0]),
    reduction=st.sampled_from(REDUCTIONS),
    transposed=st.booleans(),
)
def test_property_random_shapes_and_options(n, d, v, bias, with_weight, label_smoothing, reduction, transposed):
    x, w, b, target = _problem(n=n, d=d, v=v, bias=bias, ignore_every=3)
    if transposed:  # column-major input and linear weight: strides (1, N) and (1, V)
        x, w = x.t().contiguous().t(), w.t().contiguous().t()
    weight = torch.rand(v) + 0.1 if with_weight else None
    with KernelTrace() as trace:
        _check_against_torch(x, w, b, target, weight, reduction=reduction, label_smoothing=label_smoothing)
    assert trace.launch_count(FORWARD) == (1 if n else 0)


def test_gradcheck_fp64(kernel_launches):
    x, w, b, target = _problem(n=9, d=5, v=40, dtype=torch.float64, ignore_every=4)
    weight = torch.rand(40, dtype=torch.float64) + 0.1
    for reduction in REDUCTIONS:
        leaves = [t.detach().requires_grad_() for t in (x, w, b)]
        assert torch.autograd.gradcheck(
            lambda x, w, b, reduction=reduction: fused_ops.linear_cross_entropy(
                x, w, target, linear_bias=b, weight=weight, reduction=reduction, label_smoothing=0.2
            ),
            leaves,
            fast_mode=True,
        )
    # fp64 always finalizes in a second launch (its one-program variants would spill).
    assert kernel_launches.kernel_names() == KERNELS


def test_gradgradcheck_fp64(kernel_launches):
    # create_graph=True takes the eager reference for the differentiable gradient.
    x, w, b, target = _problem(n=4, d=3, v=6, dtype=torch.float64, ignore_every=3)
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    assert torch.autograd.gradgradcheck(
        lambda x, w, b: fused_ops.linear_cross_entropy(x, w, target, linear_bias=b, label_smoothing=0.1),
        leaves,
        fast_mode=True,
    )
    assert kernel_launches.launch_count(FORWARD) > 0


def test_matches_the_reference_backend():
    x, w, b, target = _problem(ignore_every=3)
    grad_output = torch.tensor(0.7)
    with KernelTrace() as trace:
        fused, fused_grads, _ = _run(fused_ops.linear_cross_entropy, x, w, b, target, grad_output, label_smoothing=0.1)
    with reference_backend(), KernelTrace() as none:
        ref, ref_grads, _ = _run(fused_ops.linear_cross_entropy, x, w, b, target, grad_output, label_smoothing=0.1)
    assert trace.launch_count() == 4 and none.launch_count() == 0
    assert_close(fused, ref, reduction_size=150 * 70)
    for ours, theirs, size in zip(fused_grads, ref_grads, (150 * 40, 70, 70), strict=True):
        assert_close(ours, theirs, reduction_size=size)


def test_probability_targets_and_k_dim_weights_take_the_reference(caplog, kernel_launches):
    x, w, b, _ = _problem(n=4, d=6, v=5)
    probs = torch.randn(4, 5).softmax(-1)
    with caplog.at_level("WARNING", logger="fused_ops"):
        loss = fused_ops.linear_cross_entropy(x, w, probs, linear_bias=b, label_smoothing=0.1)
    assert_close(loss, F.linear_cross_entropy(x, w, probs, linear_bias=b, label_smoothing=0.1))
    w3 = torch.randn(5, 3, 6)
    target3 = torch.randint(0, 5, (4, 3))
    loss = fused_ops.linear_cross_entropy(x, w3, target3, reduction="none")
    assert_close(loss, F.linear_cross_entropy(x, w3, target3, reduction="none"))
    assert kernel_launches.launch_count() == 0


def _error(fn):
    try:
        fn()
    except Exception as error:
        return type(error), str(error)
    return None


ERROR_CASES = {
    "3-d input": lambda x, w, t: ((x.unsqueeze(0), w, t), {}),
    "1-d weight": lambda x, w, t: ((x, w[0], t), {}),
    "in_features": lambda x, w, t: ((x[:, :3], w, t), {}),
    "bias shape": lambda x, w, t: ((x, w, t), {"linear_bias": torch.randn(4)}),
    "k-dim unbatched": lambda x, w, t: ((x[0], w.unsqueeze(1), t[0]), {}),
    "weight dtype": lambda x, w, t: ((x, w.double(), t), {}),
    "input dtype": lambda x, w, t: ((x.half(), w, t), {}),
    "bias dtype": lambda x, w, t: ((x, w, t), {"linear_bias": torch.randn(5).double()}),
    "target dtype": lambda x, w, t: ((x, w, t.int()), {}),
    "batch size": lambda x, w, t: ((x, w, t[:2]), {}),
    "2-d target": lambda x, w, t: ((x, w, t[None]), {}),
    "1-d input, long target": lambda x, w, t: ((x[0], w, t), {}),
    "out of bounds": lambda x, w, t: ((x, w, torch.tensor([0, 1, 9])), {}),
    "negative target": lambda x, w, t: ((x, w, torch.tensor([0, -3, 1])), {}),
    "class weight size": lambda x, w, t: ((x, w, t), {"weight": torch.rand(4)}),
    "class weight dtype": lambda x, w, t: ((x, w, t), {"weight": torch.rand(5).double()}),
    "class weight grad": lambda x, w, t: ((x, w, t), {"weight": torch.rand(5, requires_grad=True)}),
    "smoothing": lambda x, w, t: ((x, w, t), {"label_smoothing": 1.5}),
    "reduction": lambda x, w, t: ((x, w, t), {"reduction": "avg"}),
    "ignore_index with probabilities": lambda x, w, t: ((x, w, torch.rand(3, 5)), {"ignore_index": 1}),
    "integer input": lambda x, w, t: ((x.long(), w.long(), t), {}),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_match_torch(case, kernel_launches):
    x, w, t = torch.randn(3, 4), torch.randn(5, 4), torch.tensor([0, 4, 2])
    args, kwargs = ERROR_CASES[case](x, w, t)
    ours = _error(lambda: fused_ops.linear_cross_entropy(*args, **kwargs))
    theirs = _error(lambda: F.linear_cross_entropy(*args, **kwargs))
    assert theirs is not None and ours is not None, case
    assert ours[0] is theirs[0], (ours, theirs)
    assert ours[1].startswith(theirs[1]), (ours, theirs)


def test_out_of_bounds_target_leaves_inputs_untouched(kernel_launches):
    x, w, b, target = _problem(n=6)
    target[2] = 150
    before = [t.clone() for t in (x, w, b, target)]
    with pytest.raises(IndexError, match=r"Target 150 is out of bounds\."):
        fused_ops.linear_cross_entropy(x, w, target, linear_bias=b)
    for tensor, copy in zip((x, w, b, target), before, strict=True):
        assert torch.equal(tensor, copy)


@pytest.mark.parametrize("n", [20, 70])  # one forward program (which finalizes), or two row blocks
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_no_host_sync(reduction, n, kernel_launches):
    x, w, b, target = _problem(n=n, ignore_every=3)
    leaves = [t.requires_grad_() for t in (x, w, b)]
    with no_host_sync():
        loss = fused_ops.linear_cross_entropy(
            leaves[0], leaves[1], target, linear_bias=leaves[2], weight=torch.rand(150), reduction=reduction
        )
        loss.backward(torch.ones_like(loss))
    assert kernel_launches.kernel_names() == (KERNELS if n == 70 else KERNELS - {FINALIZE})


def _plans():
    return sys.modules["fused_ops.linear_cross_entropy"]._PLANS


def _node_run(x, w, b, target, grad_output, **kwargs):
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    loss = fused_ops.linear_cross_entropy(leaves[0], leaves[1], target, linear_bias=leaves[2], **kwargs)
    name = loss.grad_fn.name()
    grads = torch.autograd.grad(loss, leaves, grad_output)
    return name, loss, grads


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_eager_path_records_the_cpp_node_and_the_function_matches_it(reduction, monkeypatch, kernel_launches):
    # The eager path records the C++ autograd node (fused_ops/_native.py) and matches torch;
    # where the node cannot be built, the Python Function runs the same kernels: same bits.
    x, w, b, target = _problem(n=20, ignore_every=4)
    grad_output = torch.rand(20 if reduction == "none" else ())
    kwargs = {"reduction": reduction, "label_smoothing": 0.1, "weight": torch.rand(150) + 0.1}
    name, loss, grads = _node_run(x, w, b, target, grad_output, **kwargs)
    assert name == "FusedLinearCrossEntropyBackward"
    ref_leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    ref_kwargs = {**kwargs, "weight": kwargs["weight"].double()}
    ref = F.linear_cross_entropy(ref_leaves[0], ref_leaves[1], target, linear_bias=ref_leaves[2], **ref_kwargs)
    assert_close(loss, ref.float(), reduction_size=150 * 20)
    ref_grads = torch.autograd.grad(ref, ref_leaves, grad_output.double())
    for ours, theirs, size in zip(grads, ref_grads, (150 * 40, 20, 20), strict=True):
        assert_close(ours, theirs.float(), reduction_size=size)
    assert kernel_launches.launch_count(GRAD_INPUT) == 1 and kernel_launches.launch_count(GRAD_WEIGHT) == 1
    monkeypatch.setattr(_native, "_attach", None)
    kernel_launches.clear()
    name, loss_f, grads_f = _node_run(x, w, b, target, grad_output, **kwargs)
    assert name == "LinearCrossEntropyFunctionBackward"
    assert torch.equal(loss, loss_f)
    for ours, theirs in zip(grads, grads_f, strict=True):
        assert torch.equal(ours, theirs)
    assert kernel_launches.launch_count(GRAD_INPUT) == 1 and kernel_launches.launch_count(GRAD_WEIGHT) == 1


def test_cpp_node_double_backward_and_freed_graph(kernel_launches):
    # create_graph=True through the node takes the differentiable reference; a second
    # backward through a freed graph raises torch's error (the node's saved tensors are freed).
    x, w, b, target = _problem(n=5, d=4, v=7, dtype=torch.float64)
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    loss = fused_ops.linear_cross_entropy(leaves[0], leaves[1], target, linear_bias=leaves[2])
    assert loss.grad_fn.name() == "FusedLinearCrossEntropyBackward"
    (grad_x,) = torch.autograd.grad(loss, leaves[0], create_graph=True)
    (second,) = torch.autograd.grad(grad_x.square().sum(), leaves[1])
    ref_leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    ref = F.linear_cross_entropy(ref_leaves[0], ref_leaves[1], target, linear_bias=ref_leaves[2])
    (ref_grad_x,) = torch.autograd.grad(ref, ref_leaves[0], create_graph=True)
    (ref_second,) = torch.autograd.grad(ref_grad_x.square().sum(), ref_leaves[1])
    assert_close(grad_x, ref_grad_x) and assert_close(second, ref_second)
    loss = fused_ops.linear_cross_entropy(leaves[0], leaves[1], target, linear_bias=leaves[2])
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()


def test_one_program_forward_matches_the_split_forward(monkeypatch, kernel_launches):
    # 20 rows and 150 classes fit one forward program, which finalizes itself (one launch);
    # forced into 2 class splits, the forward and the finalize give the same numbers.
    x, w, b, target = _problem(n=20, ignore_every=3)
    target[5] = -3  # out of bounds: both paths raise
    kwargs = {"weight": torch.rand(150) + 0.1, "label_smoothing": 0.2}
    results = {}
    for split in (False, True):
        if split:
            monkeypatch.setattr(lce_kernels, "LINEAR_CE_FORWARD_PROGRAMS", 2)
            monkeypatch.setattr(lce_kernels, "LINEAR_CE_MIN_BLOCKS_PER_SPLIT", 1)
            monkeypatch.setattr(sys.modules["fused_ops.linear_cross_entropy"], "_PLANS", {})
        with pytest.raises(IndexError, match=r"Target -3 is out of bounds\."):
            fused_ops.linear_cross_entropy(x, w, target, linear_bias=b, **kwargs)
        good = target.clone()
        good[5] = 0
        for reduction in REDUCTIONS:
            kernel_launches.clear()
            torch.manual_seed(1)  # the same random grad_output on both paths
            results[split, reduction] = _check_against_torch(x, w, b, good, reduction=reduction, **kwargs)
            assert kernel_launches.launch_count(FORWARD) == 1
            assert kernel_launches.launch_count(FINALIZE) == (1 if split else 0)
    for reduction in REDUCTIONS:
        (loss, grads), (loss_split, grads_split) = results[False, reduction], results[True, reduction]
        assert_close(loss, loss_split, reduction_size=150 * 20)
        for ours, theirs in zip(grads, grads_split, strict=True):
            assert_close(ours, theirs, reduction_size=150)


def test_cached_signatures_still_check_what_the_cache_cannot_know(kernel_launches):
    # Validation runs once per signature, except the checks that read more than shapes,
    # strides, dtypes and devices: class weights that require grad (and grad mode).
    x, w, _, target = _problem(n=6)
    weight = torch.rand(150)
    fused_ops.linear_cross_entropy(x, w, target, weight=weight)
    assert any(key[0] == x.shape for key in _plans())
    with pytest.raises(RuntimeError, match="not differentiable with respect to argument 'weight'"):
        fused_ops.linear_cross_entropy(x, w, target, weight=weight.requires_grad_())
    with torch.no_grad():
        fused_ops.linear_cross_entropy(x, w, target, weight=weight)
    # A cached signature with another device or dtype is another key: checked again.
    with pytest.raises(RuntimeError, match="expected m1 and m2 to have the same dtype"):
        fused_ops.linear_cross_entropy(x, w.double(), target)


def test_a_signature_seen_before_reuses_its_plan(monkeypatch, kernel_launches):
    # The checks and the launches' arithmetic run once per signature: a second call with
    # new tensors of the same shapes, strides, dtypes and options reuses the plan (and its
    # bound launches); another layout is another plan.
    plans = {}
    monkeypatch.setattr(sys.modules["fused_ops.linear_cross_entropy"], "_PLANS", plans)
    x, w, b, target = _problem(n=6, d=8, v=30)
    fused_ops.linear_cross_entropy(x, w, target, linear_bias=b, reduction="sum")
    (plan,) = plans.values()
    launches = plan.launches
    assert launches is not None and launches.n_rows == 6
    x2, w2, b2, target2 = _problem(n=6, d=8, v=30)
    loss = fused_ops.linear_cross_entropy(x2, w2, target2, linear_bias=b2, reduction="sum")
    assert list(plans.values()) == [plan] and plan.launches is launches
    assert_close(loss, F.linear_cross_entropy(x2, w2, target2, linear_bias=b2, reduction="sum"), reduction_size=180)
    fused_ops.linear_cross_entropy(x2.t().contiguous().t(), w2, target2, linear_bias=b2, reduction="sum")
    assert len(plans) == 2


def test_no_float_atomics_in_the_kernels():
    # The interpreter runs programs one after another, so no repeatability test can catch
    # an order-dependent atomic sum: every output block must have one owner instead.
    source = Path(lce_kernels.__file__).read_text()
    assert "tl.atomic" not in source


def test_deterministic(kernel_launches):
    x, w, b, target = _problem(ignore_every=5)
    first = _run(fused_ops.linear_cross_entropy, x, w, b, target, torch.tensor(1.0), label_smoothing=0.1)
    second = _run(fused_ops.linear_cross_entropy, x, w, b, target, torch.tensor(1.0), label_smoothing=0.1)
    assert torch.equal(first[0], second[0])
    for a, c in zip(first[1], second[1], strict=True):
        assert torch.equal(a, c)


def test_tf32_only_when_torch_allows_it(kernel_launches):
    x, w, _b, target = _problem(n=8)
    previous = torch.get_float32_matmul_precision()
    try:
        for precision, allowed in (("highest", False), ("high", True)):
            torch.set_float32_matmul_precision(precision)
            kernel_launches.clear()
            fused_ops.linear_cross_entropy(x, w, target)
            (launch,) = [launch for launch in kernel_launches.launches if launch.kernel == FORWARD]
            assert launch.kwargs["ALLOW_TF32"] == {"bool": allowed}
    finally:
        torch.set_float32_matmul_precision(previous)
    kernel_launches.clear()
    fused_ops.linear_cross_entropy(x.half(), w.half(), target)
    assert kernel_launches.launches[0].kwargs["ALLOW_TF32"] == {"bool": False}


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_torch_compile_fullgraph(backend, reduction, kernel_launches):
    # Under the interpreter the ops are custom ops (the kernels cannot be traced there);
    # the next test checks the graphs where they are triton_ops. 'none' reads a gradient
    # per row (assert_compiled_matches_eager sends a linspace).
    x, w, b, target = _problem(n=12, d=16, v=70, ignore_every=3)
    weight = torch.rand(70) + 0.1

    def fn(x, w, b):
        return fused_ops.linear_cross_entropy(
            x, w, target, linear_bias=b, weight=weight, label_smoothing=0.1, reduction=reduction
        )

    leaves = [t.requires_grad_() for t in (x, w, b)]
    assert_compiled_matches_eager(fn, *leaves, backend=backend)
    assert kernel_launches.launch_count(FORWARD) == 2  # eager + compiled
    assert kernel_launches.launch_count(GRAD_WEIGHT) == 2
    # The compiled forward still checks the targets, and raises torch's error.
    target[1] = 70
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    with pytest.raises(IndexError, match=r"Target 70 is out of bounds\."):
        compiled(*leaves)


COMPILE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {benchmarks!r})
    import torch
    from torch._dynamo.testing import AotEagerAndRecordGraphs
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
    from standin_driver import standin_cuda_driver
    import fused_ops

    # The stand-in launches nothing, so the forward's "every target is in bounds" flag
    # keeps what torch.empty put there, and the compiled graph asserts on it: deterministic
    # mode fills empty int8 tensors with 127 (true), where garbage could be 0.
    torch.use_deterministic_algorithms(True)


    def kernels(graph):
        # The Triton kernel each triton_kernel_wrapper node of the graph launches.
        wrapper = torch.ops.higher_order.triton_kernel_wrapper_functional
        nodes = [node for node in graph.graph.nodes if node.target is wrapper]
        return {{kernel_side_table.get_kernel(node.kwargs["kernel_idx"]).fn.__name__ for node in nodes}}


    CASES = {{
        "mean": {{}},
        "none, bias, weights, smoothing, 70 rows": {{
            "reduction": "none", "bias": True, "weight": torch.rand(16) + 0.1, "label_smoothing": 0.1, "rows": 70,
        }},
    }}
    with standin_cuda_driver():
        for name, options in CASES.items():
            options = dict(options)
            bias = torch.randn(16, requires_grad=True) if options.pop("bias", False) else None
            rows = options.pop("rows", 4)
            target = torch.randint(0, 16, (rows,))

            def fn(x, w):
                loss = fused_ops.linear_cross_entropy(x, w, target, linear_bias=bias, **options)
                return loss.sum() * 2

            torch._dynamo.reset()
            backend = AotEagerAndRecordGraphs()
            compiled = torch.compile(fn, backend=backend, fullgraph=True)
            x = torch.randn(rows, 8, requires_grad=True)
            w = torch.randn(16, 8, requires_grad=True)
            compiled(x, w).backward()  # the stand-in launches nothing: values are not checked
            (forward,), (backward,) = backend.fw_graphs, backend.bw_graphs
            # 4 rows: one forward program, which finalizes itself; 70 rows: two row blocks.
            forward_kernels = {{"linear_cross_entropy_forward_kernel"}}
            if x.shape[0] > 64:
                forward_kernels.add("linear_cross_entropy_finalize_kernel")
            expected = (
                (forward, forward_kernels),
                (backward, {{"linear_cross_entropy_grad_input_kernel", "linear_cross_entropy_grad_weight_kernel"}}),
            )
            for graph, names in expected:
                # The kernels themselves, as nodes inductor can launch, not an opaque op.
                assert kernels(graph) == names, (name, graph.code)
                assert "fused_ops" not in graph.code, (name, graph.code)
            # The out-of-bounds check stays in the compiled forward, on the device.
            assert "aten._assert_async.msg" in forward.code, (name, forward.code)
            print(name, "ok")
    print("ok")
    """
)


def test_compiled_graphs_hold_the_kernels_on_the_standin_driver(tmp_path):
    # Where kernels compile (a GPU, or here the stand-in CUDA driver of
    # benchmarks/standin_driver.py, in a process without TRITON_INTERPRET) both ops are
    # torch.library.triton_ops, so torch.compile(fullgraph=True) records their four kernels
    # (the interpreter cannot trace a kernel: the test above checks values there). This
    # file's one long case: a fresh process, torch.compile twice, 4 kernels built for sm_90
    # on a cold Triton cache.
    run_compiled_script(tmp_path / "compiled_graphs.py", COMPILE_SCRIPT.format(benchmarks=str(BENCHMARKS)))


def test_nn_module_matches_torch(kernel_launches):
    torch_module = torch.nn.LinearCrossEntropyLoss(12, 30, bias=True, label_smoothing=0.1, reduction="sum")
    module = fused_ops.nn.LinearCrossEntropyLoss(12, 30, bias=True, label_smoothing=0.1, reduction="sum")
    assert isinstance(module, torch.nn.LinearCrossEntropyLoss)
    module.load_state_dict(torch_module.state_dict())
    x = torch.randn(6, 12)
    target = torch.randint(0, 30, (6,))
    ours = module(x, target)
    ours.backward()
    theirs = torch_module(x, target)
    theirs.backward()
    assert_close(ours, theirs, reduction_size=180)
    assert_close(module.linear.weight.grad, torch_module.linear.weight.grad, reduction_size=6)
    assert_close(module.linear.bias.grad, torch_module.linear.bias.grad, reduction_size=6)
    assert kernel_launches.launch_count(GRAD_WEIGHT) == 1


def test_extra_memory_is_below_1_percent_of_the_logits(kernel_launches):
    # The target is N = 4096, D = 256, V = 32000; the interpreter would need hours
    # for that (about 3 hours of the 4 kernels' tiles on this machine), so this runs the
    # same code at N = 128, D = 32, V = 8192 (8 forward splits of 16 class blocks, 2 row
    # blocks) against the same bound: 1% of the N x V fp32 logits. Every option that adds
    # per-row state is on (smoothing: 5 partial planes instead of 3; class weights; bias).
    n, d, v = 128, 32, 8192
    x, w, b, target = _problem(n=n, d=d, v=v, ignore_every=7)
    weight = torch.rand(v) + 0.1
    leaves = [t.requires_grad_() for t in (x, w, b)]
    logits_bytes = n * v * 4
    kwargs = {"linear_bias": leaves[2], "weight": weight, "label_smoothing": 0.1}
    with LiveBytes() as fused:
        loss = fused_ops.linear_cross_entropy(leaves[0], leaves[1], target, **kwargs)
        grads = torch.autograd.grad(loss, leaves)
    extra = fused.peak_excluding(grads)
    assert extra <= 0.01 * logits_bytes, f"{extra} B beyond the returned gradients"
    assert kernel_launches.kernel_names() == KERNELS
    # The tracker sees what eager torch holds: the logits, their log-softmax and gradient.
    with LiveBytes() as eager:
        loss = F.linear_cross_entropy(leaves[0], leaves[1], target, **kwargs)
        grads = torch.autograd.grad(loss, leaves)
    assert eager.peak_excluding(grads) >= 2 * logits_bytes


@pytest.mark.interpreter_only  # counts bytes
def test_traffic_matches_the_tile_model():
    # The bytes KernelTrace counts (every load, no cache) are what modeled_traffic() says,
    # within the per-row scalars it omits, so the model can state the traffic of shapes
    # too large for the interpreter (the README's 4096 x 256 x 32000 figures).
    n, d, v = 100, 48, 300
    x, w, _, target = _problem(n=n, d=d, v=v)
    leaves = [t.requires_grad_() for t in (x, w)]
    with KernelTrace() as trace:
        loss = fused_ops.linear_cross_entropy(*leaves, target)
        loss.backward()
    model = lce_kernels.modeled_traffic(n, d, v, torch.float32)
    for kernel, key in ((FORWARD, "forward"), (GRAD_INPUT, "grad_input"), (GRAD_WEIGHT, "grad_weight")):
        (launch,) = [launch for launch in trace.launches if launch.kernel == kernel]
        assert model[key] <= launch.bytes_moved <= model[key] + 64 * n * (v // 64 + 1), kernel
    assert model["minimum"] == 4 * 3 * (n * d + v * d)


def aot_workload():
    """Every linear cross-entropy kernel on every code path, in every dtype, for tests/test_aot.py."""
    for dtype in DTYPES:
        x, w, b, target = _problem(n=70, d=40, v=150, dtype=dtype, ignore_every=4)
        weight = torch.rand(150, dtype=dtype)
        cases = [
            ({"linear_bias": b}, "mean"),
            ({"weight": weight, "label_smoothing": 0.1}, "none"),
            ({"linear_bias": b, "weight": weight, "label_smoothing": 0.1}, "sum"),
        ]
        for kwargs, reduction in cases:
            leaves = [t.detach().requires_grad_() for t in (x, w)]
            if "linear_bias" in kwargs:
                kwargs = {**kwargs, "linear_bias": kwargs["linear_bias"].detach().requires_grad_()}
            loss = fused_ops.linear_cross_entropy(*leaves, target, reduction=reduction, **kwargs)
            loss.backward(torch.ones_like(loss))
        # One forward program (20 rows), which finalizes itself, for each reduction.
        small = [x.detach()[:20].requires_grad_(), w.detach().requires_grad_()]
        for reduction in REDUCTIONS:
            loss = fused_ops.linear_cross_entropy(
                *small, target[:20], weight=weight, label_smoothing=0.1, reduction=reduction
            )
            loss.backward(torch.ones_like(loss))
        fused_ops.linear_cross_entropy(*small, target[:20], linear_bias=b).backward()
        # The bias gradient alone (GRAD_W off), and TF32 for fp32.
        bias = b.detach().requires_grad_()
        fused_ops.linear_cross_entropy(x, w, target, linear_bias=bias).backward()
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        x, w, b, target = _problem(n=70, d=40, v=150)
        leaves = [t.detach().requires_grad_() for t in (x, w, b)]
        fused_ops.linear_cross_entropy(leaves[0], leaves[1], target, linear_bias=leaves[2]).backward()
    finally:
        torch.set_float32_matmul_precision(previous)
