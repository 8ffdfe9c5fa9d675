"""The C++ autograd node of the eager path (fused_ops/_native.py, csrc/autograd_node.cpp).

Activations, softmax and log_softmax record their kernels in the autograd graph with a
C++ node instead of a Python Function. These tests check that it is used, that it behaves
as torch's own nodes do (freed graphs, in-place checks, saved-tensor hooks, threads,
errors), and that the Python Functions it replaces give the same numbers without it.
"""

import threading

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close

import fused_ops
from fused_ops import _native

# name -> (fused op, torch op, the node's name)
OPS = {
    "sigmoid": (fused_ops.sigmoid, torch.sigmoid, "FusedSigmoidBackward"),
    "tanh": (fused_ops.tanh, torch.tanh, "FusedTanhBackward"),
    "relu": (fused_ops.relu, torch.relu, "FusedReLUBackward"),
    "gelu": (
        lambda x: fused_ops.gelu(x, approximate="tanh"),
        lambda x: F.gelu(x, approximate="tanh"),
        "FusedGELUBackward",
    ),
    "silu": (fused_ops.silu, F.silu, "FusedSiLUBackward"),
    "softmax": (lambda x: fused_ops.softmax(x, -1), lambda x: torch.softmax(x, -1), "FusedSoftmaxBackward"),
    "log_softmax": (
        lambda x: fused_ops.log_softmax(x, -1),
        lambda x: torch.log_softmax(x, -1),
        "FusedLogSoftmaxBackward",
    ),
}


@pytest.fixture
def without_native(monkeypatch):
    """The ops as they run where the extension cannot be built: on their Python Functions."""
    monkeypatch.setattr(_native, "_attach", None)


def test_the_extension_builds_here():
    # The machine running the suite has a compiler: the node must be there, not silently
    # replaced by the fallback (which the tests below would then not cover).
    assert _native.attach() is not None


@pytest.mark.parametrize("name", list(OPS))
def test_ops_record_the_cpp_node_and_match_torch(name, kernel_launches):
    fused, eager, node_name = OPS[name]
    x = torch.randn(4, 33, requires_grad=True)
    grad = torch.randn(4, 33)
    y = fused(x)
    assert type(y.grad_fn).__name__ == "CppFunction" and y.grad_fn.name() == node_name
    y.backward(grad)
    assert kernel_launches.launch_count() == 2, "the forward and backward kernels"
    x_ref = x.detach().requires_grad_()
    eager(x_ref).backward(grad)
    assert_close(y.detach(), eager(x.detach()))
    assert_close(x.grad, x_ref.grad)


@pytest.mark.parametrize("name", list(OPS))
def test_python_functions_give_the_same_numbers(name, monkeypatch):
    fused, _, node_name = OPS[name]
    x = torch.randn(3, 17, requires_grad=True)
    grad = torch.randn(3, 17)
    y = fused(x)
    (native_grad,) = torch.autograd.grad(y, x, grad)
    monkeypatch.setattr(_native, "_attach", None)
    y_function = fused(x)
    assert y_function.grad_fn.name() != node_name, "the fallback is the Python Function"
    (function_grad,) = torch.autograd.grad(y_function, x, grad)
    assert torch.equal(y, y_function) and torch.equal(native_grad, function_grad)


@pytest.mark.parametrize("name", ["sigmoid", "gelu", "softmax"])
def test_double_backward_through_the_node(name):
    fused, _, node_name = OPS[name]
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert fused(x).grad_fn.name() == node_name
    assert torch.autograd.gradgradcheck(fused, (x,))


def test_a_freed_graph_raises_torchs_error():
    x = torch.randn(8, requires_grad=True)
    y = fused_ops.sigmoid(x)
    y.sum().backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.sum().backward()
    # retain_graph keeps the saved output: two backwards, the same gradient twice.
    x.grad = None
    y = fused_ops.tanh(x)
    y.sum().backward(retain_graph=True)
    first = x.grad.clone()
    y.sum().backward()
    assert torch.equal(x.grad, 2 * first)


def test_modifying_a_saved_tensor_raises_torchs_error():
    x = torch.randn(8, requires_grad=True)
    y = fused_ops.sigmoid(x)  # saves its output
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    h = x * 1
    z = fused_ops.silu(h)  # saves its input
    h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()


def test_saved_tensor_hooks_see_the_saved_tensor():
    # As torch's own nodes: activation offloading and checkpointing tools rely on these.
    packed, unpacked = [], []

    def pack(t):
        packed.append(t.shape)
        return t

    def unpack(t):
        unpacked.append(t.shape)
        return t

    x = torch.randn(2, 3, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        y = fused_ops.softmax(x, -1)
    y.backward(torch.randn(2, 3))
    assert packed == [torch.Size([2, 3])] and unpacked == [torch.Size([2, 3])]


def test_errors_in_backward_keep_their_type():
    def unpack(_):
        raise ValueError("from the unpack hook")

    x = torch.randn(4, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, unpack):
        y = fused_ops.sigmoid(x)
    with pytest.raises(ValueError, match="from the unpack hook"):
        y.sum().backward()


def test_backward_on_another_thread_and_graphs_dropped_unused():
    x = torch.randn(16, requires_grad=True)
    y = fused_ops.relu(x)
    errors = []

    def run():
        try:
            y.backward(torch.ones(16))
        except Exception as error:  # reported below
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert not errors and torch.equal(x.grad, (x > 0).to(x.dtype))
    # A graph that is never run back is freed with its Python backward, without a crash.
    for _ in range(3):
        fused_ops.gelu(torch.randn(4, requires_grad=True))


def test_inputs_that_need_no_node(without_native):
    # No grad, integer inputs and forward-mode AD never reach the node; here, with no
    # node at all, every path still works.
    x = torch.randn(5, requires_grad=True)
    with torch.no_grad():
        assert fused_ops.sigmoid(x).grad_fn is None
    assert fused_ops.relu(torch.arange(-2, 3)).dtype == torch.int64
    y = fused_ops.sigmoid(x)
    assert y.grad_fn.name() == "SigmoidFunctionBackward"


def test_an_unbuildable_extension_falls_back_with_a_warning(monkeypatch, caplog):
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise OSError("no C++ compiler here")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    with caplog.at_level("WARNING", logger="fused_ops"):
        assert _native._load() is None
    assert "could not build the C++ autograd node" in caplog.text and "no C++ compiler" in caplog.text
    monkeypatch.setenv(_native.ENVIRONMENT_VARIABLE, "0")
    assert _native._load() is None


@pytest.mark.parametrize("name", ["sigmoid", "silu", "softmax"])
def test_outputs_and_saved_tensors_are_freed_without_the_garbage_collector(name):
    # No reference cycle through the node (a saved output is held as torch holds its own
    # ops' results): dropping the output frees it, and its graph, at once.
    import gc
    import weakref

    fused, _, _ = OPS[name]
    x = torch.randn(64, requires_grad=True)
    gc.disable()
    try:
        y = fused(x)
        output = weakref.ref(y)
        del y
        assert output() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("native", [True, False], ids=["node", "function"])
def test_cross_entropy_one_pass_records_the_node_and_keeps_its_semantics(native, monkeypatch, kernel_launches):
    # A 'mean' loss over logits that alone require grad: the forward writes the gradient,
    # the first backward scales and hands it out, a retained second backward recomputes
    # it, and create_graph=True differentiates it. The same with the node and without.
    if not native:
        monkeypatch.setattr(_native, "_attach", None)
    x = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 9, (6,))
    loss = fused_ops.cross_entropy(x, target, label_smoothing=0.1)
    assert (loss.grad_fn.name() == "FusedCrossEntropyBackward") == native
    x_ref = x.detach().requires_grad_()
    loss_ref = F.cross_entropy(x_ref, target, label_smoothing=0.1)
    assert_close(loss.detach(), loss_ref.detach())
    (first,) = torch.autograd.grad(loss, x, torch.tensor(0.5, dtype=torch.float64), retain_graph=True)
    assert kernel_launches.launch_count("cross_entropy_scale_grad_kernel") == 1
    (expected,) = torch.autograd.grad(loss_ref, x_ref, torch.tensor(0.5, dtype=torch.float64))
    assert_close(first, expected)
    kept = first.clone()
    (second,) = torch.autograd.grad(loss, x, torch.tensor(0.5, dtype=torch.float64), retain_graph=True)
    assert_close(second, expected)
    assert torch.equal(first, kept), "a later backward leaves the handed-out gradient alone"
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    assert grad.requires_grad
    assert torch.autograd.gradgradcheck(lambda t: fused_ops.cross_entropy(t, target), (x,))
    # inplace_grad: one backward only, through the node as through the Function.
    h = x * 1
    loss = fused_ops.cross_entropy(h, target, inplace_grad=True)
    loss.backward(retain_graph=True)
    assert_close(x.grad, torch.autograd.grad(F.cross_entropy(x_ref, target), x_ref)[0])
    with pytest.raises(RuntimeError, match="one backward only"):
        loss.backward()


def test_a_node_over_several_inputs_routes_each_gradient():
    # attach with a tuple of inputs (Nones allowed): the backward returns one gradient (or
    # None) per input, which autograd routes to each input's edge.
    attach = _native.attach()
    a = torch.randn(5, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    with torch.no_grad():
        out = a * b

    def backward(grad, saved_a, saved_b):
        return grad * saved_b, None, grad * saved_a

    out = attach(out, (a, None, b), (a, b), backward, backward, (), "ProductBackward")
    assert out.grad_fn.name() == "ProductBackward" and out.grad_fn.next_functions[1] == (None, 0)
    out.backward(torch.ones(5))
    assert torch.equal(a.grad, b.detach()) and torch.equal(b.grad, a.detach())

    def wrong(grad, saved_a, saved_b):
        return grad * saved_b

    with torch.no_grad():
        out = a * b
    out = attach(out, (a, b), (a, b), wrong, wrong, (), "ProductBackward")
    with pytest.raises(RuntimeError, match="tuple of 2 gradients"):
        out.sum().backward()
