"""fused_ops.patch(): function hooks, module swaps, opt-out, idempotence, undo, nesting, compile, dry runs.

Also fused_ops.nn.convert's report, warnings, hooks and printing. Shapes are tiny: every
call below launches interpreted kernels on CPU.
"""

import threading
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close

import fused_ops
from fused_ops.patch import _PatchMode


def _x(*shape):
    return torch.randn(*shape)


def _labels():
    return torch.tensor([0, 3, 1, 2])


# (torch call, its arguments, the fused forward kernel it must reach)
FUNCTION_CASES = {
    "torch.sigmoid": (lambda x: torch.sigmoid(x), "sigmoid_forward_kernel"),
    "Tensor.sigmoid": (lambda x: x.sigmoid(), "sigmoid_forward_kernel"),
    "F.sigmoid": (lambda x: F.sigmoid(x), "sigmoid_forward_kernel"),
    "torch.tanh": (lambda x: torch.tanh(x), "tanh_forward_kernel"),
    "Tensor.tanh": (lambda x: x.tanh(), "tanh_forward_kernel"),
    "F.tanh": (lambda x: F.tanh(x), "tanh_forward_kernel"),
    "torch.relu": (lambda x: torch.relu(x), "relu_forward_kernel"),
    "Tensor.relu": (lambda x: x.relu(), "relu_forward_kernel"),
    "F.relu": (lambda x: F.relu(x), "relu_forward_kernel"),
    "F.relu(inplace)": (lambda x: F.relu(x * 1, inplace=True), "relu_forward_kernel"),
    "torch.softmax": (lambda x: torch.softmax(x, 1), "softmax_forward_kernel"),
    "Tensor.softmax": (lambda x: x.softmax(dim=0), "softmax_forward_kernel"),
    "F.softmax": (lambda x: F.softmax(x, dim=-1), "softmax_forward_kernel"),
    "F.softmax(dtype)": (lambda x: F.softmax(x.half(), dim=-1, dtype=torch.float32), "softmax_forward_kernel"),
    "torch.log_softmax": (lambda x: torch.log_softmax(x, -1), "softmax_forward_kernel"),
    "Tensor.log_softmax": (lambda x: x.log_softmax(1), "softmax_forward_kernel"),
    "F.log_softmax": (lambda x: F.log_softmax(x, dim=1), "softmax_forward_kernel"),
    "F.gelu": (lambda x: F.gelu(x), "gelu_forward_kernel"),
    "F.gelu(tanh)": (lambda x: F.gelu(x, approximate="tanh"), "gelu_forward_kernel"),
    "F.silu": (lambda x: F.silu(x), "silu_forward_kernel"),
    "F.silu(inplace)": (lambda x: F.silu(x * 1, inplace=True), "silu_forward_kernel"),
    "nn.Tanh (unconverted module)": (lambda x: torch.nn.Tanh()(x), "tanh_forward_kernel"),
    "F.mse_loss": (lambda x: F.mse_loss(x, torch.ones_like(x), reduction="sum"), "mse_loss_partial_sums_kernel"),
    "F.cross_entropy": (
        lambda x: F.cross_entropy(x, _labels(), label_smoothing=0.1),
        "cross_entropy_forward_kernel",
    ),
    "nn.CrossEntropyLoss": (lambda x: torch.nn.CrossEntropyLoss()(x, _labels()), "cross_entropy_forward_kernel"),
}


@pytest.mark.parametrize("case", list(FUNCTION_CASES))
def test_each_torch_call_runs_the_fused_kernel_with_torch_numbers(case, kernel_launches):
    call, kernel = FUNCTION_CASES[case]
    x = _x(4, 6)
    expected = call(x)
    assert kernel_launches.launch_count() == 0
    with fused_ops.patch() as handle:
        actual = call(x)
    assert kernel_launches.launch_count(kernel) == 1, kernel_launches.kernel_names()
    assert_close(actual, expected, reduction_size=x.numel())
    report = handle.report()
    assert [site.fused for site in report.calls] == [True], str(report)


def test_backward_runs_fused_and_matches_torch(kernel_launches):
    x = _x(4, 6).requires_grad_()

    def loss():
        return F.cross_entropy(F.log_softmax(torch.tanh(x), dim=-1), _labels())

    expected = loss()
    (expected_grad,) = torch.autograd.grad(expected, x)
    with fused_ops.patch():
        actual = loss()
    # The backward runs after the patch ended: it is the fused graph's, not rerouted.
    (grad,) = torch.autograd.grad(actual, x)
    assert_close(actual, expected, reduction_size=24)
    assert_close(grad, expected_grad, reduction_size=24)
    # cross_entropy's gradient was written by its forward; its backward only scales it.
    for kernel in ("tanh_backward_kernel", "softmax_backward_kernel", "cross_entropy_scale_grad_kernel"):
        assert kernel_launches.launch_count(kernel) == 1, kernel


class Subclass(torch.Tensor):
    pass


UNSUPPORTED_CASES = {
    "integer relu": (lambda: torch.relu(torch.arange(-3, 3)), "dtype torch.int64"),
    "softmax dim=None": (lambda: F.softmax(_x(2, 3)), "dim=None"),
    "tensor subclass": (lambda: torch.sigmoid(_x(3).as_subclass(Subclass)), "tensor subclass"),
    "out=": (lambda: torch.tanh(_x(3), out=torch.empty(3)), "out= argument"),
    "complex sigmoid": (lambda: torch.sigmoid(torch.randn(3, dtype=torch.complex64)), "complex64"),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED_CASES))
def test_unsupported_arguments_run_on_torch_and_say_why(case, kernel_launches):
    call, reason = UNSUPPORTED_CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # softmax's implicit-dim deprecation warning
        with fused_ops.patch() as handle:
            call()
    assert kernel_launches.launch_count() == 0
    (site,) = handle.report().calls
    assert not site.fused and reason in site.reason, site


def test_torch_errors_stay_torch_errors():
    with fused_ops.patch(), pytest.raises(TypeError):
        F.softmax(_x(2, 3), dim=0, unknown=1)
    with fused_ops.patch(), pytest.raises(IndexError, match="Dimension out of range"):
        F.softmax(_x(2, 3), dim=5)


def test_opt_out_per_op(kernel_launches):
    x = _x(3, 5)
    with fused_ops.patch(exclude=["softmax"]) as handle:
        F.softmax(torch.tanh(x), dim=-1)
    assert kernel_launches.kernel_names() == {"tanh_forward_kernel"}
    sites = {site.call: site for site in handle.report().calls}
    assert sites["torch.tanh"].fused
    assert not sites["F.softmax"].fused and "excluded" in sites["F.softmax"].reason
    kernel_launches.clear()
    with fused_ops.patch(ops=["softmax"]):
        F.softmax(torch.tanh(x), dim=-1)
    assert kernel_launches.kernel_names() == {"softmax_forward_kernel"}


def test_unknown_op_names_are_refused():
    with pytest.raises(ValueError, match="unknown op"):
        fused_ops.patch(exclude=["softmaxx"])


def _patch_modes():
    return [m for m in torch.overrides._get_current_function_mode_stack() if isinstance(m, _PatchMode)]


def test_patching_twice_changes_nothing(kernel_launches):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh())
    with fused_ops.patch(model) as outer:
        fused_tanh = model[1]
        assert type(fused_tanh) is fused_ops.nn.Tanh
        with fused_ops.patch(model) as inner:
            assert model[1] is fused_tanh and inner.replaced == []
            assert len(_patch_modes()) == 1
            torch.sigmoid(_x(3))
        assert outer.active and len(_patch_modes()) == 1 and model[1] is fused_tanh
    assert kernel_launches.launch_count("sigmoid_forward_kernel") == 1
    assert _patch_modes() == []


def test_undo_restores_the_original_modules_with_their_hooks(kernel_launches):
    tanh = torch.nn.Tanh()
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), tanh, torch.nn.Sequential(tanh))
    seen = []
    tanh.register_forward_hook(lambda module, args, output: seen.append(type(module).__name__))
    handle = fused_ops.patch(model)
    assert type(model[1]) is fused_ops.nn.Tanh and model[2][0] is model[1], "a shared module stays shared"
    model(_x(2, 4))
    assert seen == ["Tanh", "Tanh"] and kernel_launches.launch_count("tanh_forward_kernel") == 2
    handle.undo()
    handle.undo()  # idempotent
    assert model[1] is tanh and model[2][0] is tanh
    kernel_launches.clear()
    model(_x(2, 4))
    assert kernel_launches.launch_count() == 0 and len(seen) == 4
    assert _patch_modes() == []


def test_undo_out_of_order_keeps_the_other_patch():
    first = fused_ops.patch()
    second = fused_ops.patch(exclude=["tanh"])
    other = torch.overrides.TorchFunctionMode()
    other.__enter__()
    first.undo()
    assert [m.handle for m in _patch_modes()] == [second]
    other.__exit__(None, None, None)
    second.undo()
    assert _patch_modes() == []


def test_a_nested_patch_decides_the_calls_inside_it(kernel_launches):
    x = _x(3, 5)
    with fused_ops.patch():
        with fused_ops.patch(exclude=["softmax"]):
            F.softmax(x, dim=-1)
        assert kernel_launches.launch_count() == 0, "the outer patch must not reroute what the inner declined"
        F.softmax(x, dim=-1)
    assert kernel_launches.launch_count("softmax_forward_kernel") == 1


def test_fused_ops_own_torch_calls_never_come_back_into_the_patch(kernel_launches):
    # On the reference backend fused_ops.softmax calls torch's softmax: under a patch that
    # must run torch, not recurse into fused_ops.
    x = _x(3, 5)
    with fused_ops.patch(), fused_ops._dispatch.reference_backend():
        assert_close(F.softmax(x, dim=-1), torch.softmax(x, -1))
    assert kernel_launches.launch_count() == 0


def test_the_patch_is_scoped_to_its_thread(kernel_launches):
    results, errors = [], []

    def other_thread(handle):
        results.append(torch.sigmoid(_x(3)))
        try:
            handle.undo()
        except RuntimeError as error:
            errors.append(str(error))

    with fused_ops.patch() as handle:
        thread = threading.Thread(target=other_thread, args=(handle,))
        thread.start()
        thread.join()
        assert handle.active and len(_patch_modes()) == 1
    assert len(results) == 1 and kernel_launches.launch_count() == 0
    assert errors == ["fused_ops.patch: undo() must run on the thread that called patch()"]


class TanhGELU(torch.nn.Module):
    """GPT-2's NewGELUActivation, written out: no function hook can see it."""

    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * (x + 0.044715 * torch.pow(x, 3.0))))


class QuickGELU(torch.nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class HandSigmoid(torch.nn.Module):
    def forward(self, x):
        return 1 / (1 + torch.exp(-x))


class MyReLU(torch.nn.ReLU):
    def forward(self, x):
        return torch.clamp(x, min=0.0)


def test_modules_are_matched_by_what_they_compute(kernel_launches):
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 4),
        HandSigmoid(),
        QuickGELU(),
        MyReLU(),
        torch.nn.Dropout(0.5),
        TanhGELU(),
        torch.nn.GELU(),
        torch.nn.Linear(4, 2),
    )
    quick = model[2]
    torch.manual_seed(1)
    expected_rng = torch.rand(3)
    torch.manual_seed(1)
    with fused_ops.patch(model) as handle:
        # The probes ran forward on modules, none moved the random stream (Dropout).
        assert_close(torch.rand(3), expected_rng)
        assert type(model[1]) is fused_ops.nn.Sigmoid
        assert type(model[3]) is fused_ops.nn.ReLU, "a subclass that computes relu is matched by its output"
        assert model[2] is quick
        assert type(model[5]) is fused_ops.nn.GELU and model[5].approximate == "tanh"
        assert type(model[6]) is fused_ops.nn.GELU and model[6].approximate == "none", "by class"
        sites = {site.name: site for site in handle.report().modules}
        assert sites["1"].replacement == "fused_ops.Sigmoid" and "computes sigmoid" in sites["1"].reason
        assert sites["2"].replacement is None and "closest" in sites["2"].reason
        model.eval()(_x(2, 4))
    # HandSigmoid's fused module, and the torch.sigmoid inside QuickGELU, rerouted by the function hook.
    assert kernel_launches.launch_count("sigmoid_forward_kernel") == 2
    assert kernel_launches.launch_count("relu_forward_kernel") == 1
    assert kernel_launches.launch_count("gelu_forward_kernel") == 2


def test_compile_fullgraph_gives_the_eager_patched_results(kernel_launches):
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.LogSoftmax(dim=-1))
    x = _x(3, 6)

    def run(fn):
        loss = F.cross_entropy(fn(x), torch.tensor([0, 4, 2]))
        grads = torch.autograd.grad(loss, list(model.parameters()))
        return loss, grads

    torch._dynamo.reset()
    with fused_ops.patch(model):
        eager_loss, eager_grads = run(model)
        eager_launches = kernel_launches.launch_count()
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        compiled_loss, compiled_grads = run(compiled)
    assert eager_launches > 0 and kernel_launches.launch_count() == 2 * eager_launches
    assert_close(compiled_loss, eager_loss)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads, strict=True):
        assert_close(compiled_grad, eager_grad)
    kernel_launches.clear()
    torch.compile(F.softmax, fullgraph=True, backend="aot_eager")(x, dim=-1)
    assert kernel_launches.launch_count() == 0, "after the patch, compiled code is plain torch again"


def test_compile_fullgraph_of_functions_inside_a_patch(kernel_launches):
    def f(x):
        return F.softmax(torch.tanh(x).relu(), dim=-1)

    x = _x(4, 8).requires_grad_()
    torch._dynamo.reset()
    with fused_ops.patch():
        eager = f(x)
        compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(x)
    assert_close(compiled, eager)
    compiled.sum().backward()
    assert kernel_launches.launch_count("softmax_forward_kernel") == 2
    assert kernel_launches.launch_count("tanh_backward_kernel") == 1


def test_code_compiled_before_a_patch_recompiles_with_the_fused_ops(kernel_launches):
    def f(x):
        return F.softmax(torch.tanh(x), dim=-1)

    x = _x(4, 8)
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    expected = compiled(x)
    assert kernel_launches.launch_count() == 0
    with fused_ops.patch():
        assert_close(compiled(x), expected)
    assert kernel_launches.kernel_names() == {"tanh_forward_kernel", "softmax_forward_kernel"}
    kernel_launches.clear()
    with fused_ops.patch(exclude=["tanh"]):
        compiled(x)
    assert kernel_launches.kernel_names() == {"softmax_forward_kernel"}, "the opt-out holds in compiled code"


class Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x):
        q = self.proj(x).view(2, 3, 2, 4).transpose(1, 2)
        sdpa = F.scaled_dot_product_attention(q, q, q).transpose(1, 2).reshape(2, 3, 8)
        # With weights, MHA's softmax runs inside F.multi_head_attention_forward, out of the hook's sight.
        return self.mha(sdpa, sdpa, sdpa, need_weights=True)[0]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attention()
        self.act = TanhGELU()
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x, labels):
        h = self.act(self.attn(x))
        logits = self.head(h).flatten(0, 1)
        return F.cross_entropy(logits, labels) + F.softmax(logits, dim=None).mean() * 0 + torch.tanh(logits).mean()


def test_dry_run_reports_caught_and_missed_sites_and_bytes(kernel_launches):
    model = Net()
    x, labels = _x(2, 3, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    expected = model(x, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fused_ops.patch(model, dry_run=True) as dry:
            actual = model(x, labels)
    assert kernel_launches.launch_count() == 0, "a dry run runs torch"
    assert torch.equal(actual, expected)
    assert type(model.act) is TanhGELU, "a dry run replaces nothing"
    report = dry.report()
    (module,) = [m for m in report.modules if m.replacement]
    assert module.name == "act" and module.count == 1
    # The written-out formula is several eager kernels; the fused one reads x once and writes once.
    assert module.eager_kernels >= 3 and module.fused_bytes == 2 * 2 * 3 * 8 * 4
    assert module.bytes_saved > 0
    fused = {site.call: site for site in report.fused_calls()}
    assert set(fused) == {"F.cross_entropy", "torch.tanh"}
    ce = fused["F.cross_entropy"]
    assert ce.eager_kernels >= 2 and ce.bytes_saved > 0, ce
    missed = {(site.where, site.call): site.reason for site in report.unfused_calls()}
    assert "attention (SDPA)" in missed[("attn", "F.scaled_dot_product_attention")]
    assert "dim=None" in missed[("(model)", "F.softmax")]
    mha_softmax = [reason for (where, call), reason in missed.items() if call == "aten._softmax"]
    assert mha_softmax and "multi_head_attention_forward" in mha_softmax[0], missed
    assert report.bytes_saved == sum(s.bytes_saved for s in [*report.modules, *report.calls]) > 0
    text = str(report)
    assert "would replace 1" in text and "F.scaled_dot_product_attention" in text and "bytes saved" in text
    assert _patch_modes() == []


def test_convert_reports_and_warns_and_keeps_hooks(caplog):
    relu = torch.nn.ReLU()
    calls = []
    handle = relu.register_forward_pre_hook(lambda module, args: calls.append(module))
    grads = []
    relu.register_full_backward_hook(lambda module, grad_input, grad_output: grads.append(grad_output[0]))
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), relu, MyReLU(), torch.nn.Softmax(dim=-1))
    with pytest.warns(UserWarning, match=r"left 1 module\(s\) alone: 2 \(MyReLU\)"):
        report = fused_ops.nn.convert_with_report(model)
    assert report.model is model
    assert report.counts() == {"fused_ops.ReLU": 1, "fused_ops.Softmax": 1}
    assert [(r.name, r.hooks) for r in report.replaced] == [("1", 2), ("3", 0)]
    assert [(s.name, type(s.module)) for s in report.skipped] == [("2", MyReLU)]
    assert "replaced 2 module(s)" in str(report)
    model(_x(2, 3).requires_grad_()).sum().backward()
    assert calls == [model[1]], "the hook moved to the fused module"
    assert len(grads) == 1 and grads[0].shape == (2, 3), "so did the full backward hook"
    handle.remove()
    model(_x(2, 3))
    assert len(calls) == 1, "the original handle still removes it"
    assert "(1): fused_ops.ReLU()" in repr(model) and "(3): fused_ops.Softmax(dim=-1)" in repr(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fused_ops.nn.convert(torch.nn.Sequential(torch.nn.Tanh())) is not None


def test_convert_logs_what_it_did(caplog):
    with caplog.at_level("INFO", logger="fused_ops"):
        fused_ops.nn.convert(torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Sigmoid()))
    assert "replaced 2 module(s): 1 fused_ops.Tanh, 1 fused_ops.Sigmoid" in caplog.text
