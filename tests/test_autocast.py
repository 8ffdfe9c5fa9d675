"""Every op under torch.autocast behaves as torch's op does: output dtype, values, gradient dtypes.

On CPU (the machine these tests run on without a GPU) torch's autocast runs mse_loss and
cross_entropy in float32 and every other op here in its input's dtype. The CUDA policy
cannot run here; its table is checked against torch's documented CUDA list, and the
mechanism it uses for softmax (``dtype=float32`` given to the kernel) is exercised on CPU
by installing that policy for CPU in one test.
"""

import functools

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, assert_compiled_matches_eager

import fused_ops
from fused_ops import _autocast

AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)
INPUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _class_targets(x):
    return torch.randint(0, x.shape[-1], x.shape[:-1])


def _prob_targets(x):
    return torch.softmax(torch.randn(x.shape), dim=-1).to(x.dtype)


# name -> (fused op, torch op, extra arguments built from the input, kernel that must run).
OPS = {
    "sigmoid": (fused_ops.sigmoid, torch.sigmoid, None, "sigmoid_forward_kernel"),
    "tanh": (fused_ops.tanh, torch.tanh, None, "tanh_forward_kernel"),
    "relu": (fused_ops.relu, torch.relu, None, "relu_forward_kernel"),
    "gelu": (fused_ops.gelu, F.gelu, None, "gelu_forward_kernel"),
    "gelu_tanh": (
        functools.partial(fused_ops.gelu, approximate="tanh"),
        functools.partial(F.gelu, approximate="tanh"),
        None,
        "gelu_forward_kernel",
    ),
    "silu": (fused_ops.silu, F.silu, None, "silu_forward_kernel"),
    "softmax": (
        functools.partial(fused_ops.softmax, dim=-1),
        functools.partial(torch.softmax, dim=-1),
        None,
        "softmax_forward_kernel",
    ),
    "log_softmax": (
        functools.partial(fused_ops.log_softmax, dim=-1),
        functools.partial(F.log_softmax, dim=-1),
        None,
        "softmax_forward_kernel",
    ),
    "mse_loss": (fused_ops.mse_loss, F.mse_loss, lambda x: (torch.randn(x.shape).to(x.dtype),), "mse_loss"),
    "cross_entropy": (fused_ops.cross_entropy, F.cross_entropy, lambda x: (_class_targets(x),), "cross_entropy"),
    "cross_entropy_probs": (
        fused_ops.cross_entropy,
        F.cross_entropy,
        lambda x: (_prob_targets(x),),
        "cross_entropy",
    ),
    "cross_entropy_weight": (
        fused_ops.cross_entropy,
        F.cross_entropy,
        lambda x: (_class_targets(x), torch.rand(x.shape[-1]).to(x.dtype)),
        "cross_entropy",
    ),
    "nn.CrossEntropyLoss": (
        lambda x, t: fused_ops.nn.CrossEntropyLoss(label_smoothing=0.1)(x, t),
        lambda x, t: torch.nn.CrossEntropyLoss(label_smoothing=0.1)(x, t),
        lambda x: (_class_targets(x),),
        "cross_entropy",
    ),
    "nn.MSELoss": (
        lambda x, t: fused_ops.nn.MSELoss(reduction="sum")(x, t),
        lambda x, t: torch.nn.MSELoss(reduction="sum")(x, t),
        lambda x: (torch.randn(x.shape).to(x.dtype),),
        "mse_loss",
    ),
    "nn.Softmax": (fused_ops.nn.Softmax(dim=1), torch.nn.Softmax(dim=1), None, "softmax_forward_kernel"),
    "nn.GELU": (fused_ops.nn.GELU(), torch.nn.GELU(), None, "gelu_forward_kernel"),
    "nn.SiLU": (fused_ops.nn.SiLU(), torch.nn.SiLU(), None, "silu_forward_kernel"),
}


_SOFTMAX_BACKWARD = {
    "softmax": torch.ops.aten._softmax_backward_data,
    "nn.Softmax": torch.ops.aten._softmax_backward_data,
    "log_softmax": torch.ops.aten._log_softmax_backward_data,
}


def _run(op, x, extra):
    """Output under the current autocast, and the leaves: x, and a float target, require grad."""
    # A class weight stays constant: with class-index targets, torch refuses its gradient.
    leaves = [x.detach().requires_grad_()] + [
        e.detach().requires_grad_() if i == 0 and e.is_floating_point() else e for i, e in enumerate(extra)
    ]
    out = op(*leaves)
    return out, leaves


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("input_dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize("autocast_dtype", AUTOCAST_DTYPES, ids=str)
def test_op_under_cpu_autocast_matches_torch(name, input_dtype, autocast_dtype, kernel_launches):
    fused_op, torch_op, make_extra, kernel = OPS[name]
    x = (torch.randn(6, 11) * 3).to(input_dtype)
    extra = make_extra(x) if make_extra else ()
    with torch.autocast("cpu", dtype=autocast_dtype):
        out, leaves = _run(fused_op, x, extra)
        out_ref, leaves_ref = _run(torch_op, x, extra)
    assert out.dtype == out_ref.dtype, f"{name}: {out.dtype} under autocast, torch gives {out_ref.dtype}"
    assert_close(out.detach(), out_ref.detach())
    grad_output = torch.randn(out.shape).to(out.dtype)
    out.backward(grad_output)
    out_ref.backward(grad_output)
    grad_refs = [leaf.grad for leaf in leaves_ref]
    if name in _SOFTMAX_BACKWARD and out.dtype in AUTOCAST_DTYPES:
        # As in tests/test_softmax.py: two half-precision forwards may round an element to
        # neighbouring values, and g - sum(g * y) magnifies that ulp, so torch's backward
        # is applied to OUR output.
        grad_refs[0] = _SOFTMAX_BACKWARD[name](grad_output, out.detach(), 1, out.dtype).to(x.dtype)
    for leaf, leaf_ref, grad_ref in zip(leaves, leaves_ref, grad_refs, strict=True):
        if leaf_ref.requires_grad:
            assert leaf.grad.dtype == grad_ref.dtype == leaf_ref.dtype
            assert_close(leaf.grad, grad_ref)
    assert any(k.startswith(kernel) for k in kernel_launches.kernel_names()), "the fused kernel did not run"


def test_cross_entropy_on_bf16_logits_returns_fp32_like_torch():
    # The issue-13 report: a bf16 loss (3.531250) where torch gives fp32 (3.536798).
    logits = torch.randn(8, 50).to(torch.bfloat16)
    labels = torch.randint(0, 50, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fused_ops.cross_entropy(logits, labels)
        expected = F.cross_entropy(logits, labels)
    assert loss.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


def test_ops_outside_autocast_keep_their_dtypes():
    x = torch.randn(4, 5).to(torch.bfloat16)
    labels = torch.randint(0, 5, (4,))
    assert fused_ops.cross_entropy(x, labels).dtype == torch.bfloat16
    assert fused_ops.mse_loss(x, x * 2).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert fused_ops.cross_entropy(x, labels).dtype == torch.bfloat16


def test_helpers_return_their_arguments_untouched_without_autocast():
    x = torch.randn(3).to(torch.float16)
    target = torch.randn(3).to(torch.float16)
    got = _autocast.autocast_inputs("mse_loss", x, target)
    assert got[0] is x and got[1] is target
    assert _autocast.autocast_dtype("softmax", x, None) is None
    # Device types with no policy here (meta) never reach torch.is_autocast_enabled, which raises for them.
    meta = torch.empty(3, device="meta", dtype=torch.float16)
    assert _autocast.autocast_inputs("mse_loss", meta)[0] is meta


def test_cpu_policy_table_is_torchs(device):
    # Derived from torch itself: which of these ops return fp32 for a bf16 input under CPU autocast.
    torch_ops = {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "gelu": F.gelu,
        "silu": F.silu,
        "softmax": functools.partial(torch.softmax, dim=-1),
        "log_softmax": functools.partial(torch.log_softmax, dim=-1),
        "mse_loss": lambda x: F.mse_loss(x, x),
        "cross_entropy": lambda x: F.cross_entropy(x, torch.tensor([0, 1], device="cpu")),  # host: CPU policy
    }
    x = torch.randn(2, 3, dtype=torch.bfloat16, device="cpu")  # host: torch's CPU autocast policy, read off torch
    for op, torch_op in torch_ops.items():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            runs_in_fp32 = torch_op(x).dtype == torch.float32
        assert (_autocast.policy(op, "cpu") is not None) == runs_in_fp32, op


# torch's docs, "CUDA Ops that can autocast to float32" (torch.amp, Autocast Op Reference).
CUDA_FP32_OPS_DOCUMENTED = set(
    "__pow__ __rdiv__ __rpow__ __rtruediv__ acos asin binary_cross_entropy_with_logits cosh "
    "cosine_embedding_loss cdist cosine_similarity cross_entropy cumprod cumsum dist erfinv exp expm1 "
    "group_norm hinge_embedding_loss kl_div l1_loss layer_norm log log_softmax log10 log1p log2 "
    "margin_ranking_loss mse_loss multilabel_margin_loss multi_margin_loss nll_loss norm normalize pdist "
    "poisson_nll_loss pow prod reciprocal rsqrt sinh smooth_l1_loss soft_margin_loss softmax softmin "
    "softplus sum renorm tan triplet_margin_loss".split()
)
FUSED_OPS = ("sigmoid", "tanh", "relu", "gelu", "silu", "softmax", "log_softmax", "mse_loss", "cross_entropy")


@pytest.mark.parametrize("op", FUSED_OPS)
def test_cuda_policy_table_is_torchs_documented_list(op):
    expected = op in CUDA_FP32_OPS_DOCUMENTED
    assert (_autocast.policy(op, "cuda") is not None) == expected
    if op in ("softmax", "log_softmax"):
        # Registered as fp32_set_opt_dtype: an explicit dtype= wins, otherwise float32.
        assert _autocast.policy(op, "cuda") == _autocast.FP32_SET_OPT_DTYPE


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_set_opt_dtype_policy_casts_inside_the_kernel(name, monkeypatch, kernel_launches):
    # CUDA's rule for softmax, installed for CPU: a bf16 input gives fp32 with no extra
    # cast kernel or copy (the kernel reads bf16 and writes fp32); dtype= given wins; fp64 stays.
    monkeypatch.setitem(_autocast.POLICIES, "cpu", {name: _autocast.FP32_SET_OPT_DTYPE})
    fused_op = getattr(fused_ops, name)
    torch_op = getattr(torch, name)
    x = torch.randn(4, 9).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused_op(x, dim=-1)
        explicit = fused_op(x, dim=-1, dtype=torch.float16)
        double = fused_op(x.double(), dim=-1)
    assert out.dtype == torch.float32 and explicit.dtype == torch.float16 and double.dtype == torch.float64
    assert_close(out, torch_op(x, dim=-1, dtype=torch.float32))
    assert kernel_launches.launch_count("softmax_forward_kernel") == 3


def test_cross_entropy_under_autocast_and_torch_compile(kernel_launches):
    logits = torch.randn(6, 7).to(torch.bfloat16)
    labels = torch.randint(0, 7, (6,))

    def loss(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fused_ops.cross_entropy(x, labels)

    assert loss(logits).dtype == torch.float32
    assert_compiled_matches_eager(loss, logits.requires_grad_(), backend="aot_eager")
    assert kernel_launches.launch_count("cross_entropy_forward_kernel") >= 2
