"""fused_ops.nn.convert: swaps torch.nn modules for fused ones in place, with unchanged outputs."""

import copy

import pytest
import torch
from helpers import assert_close, assert_compiled_matches_eager

import fused_ops
from fused_ops.nn import convert


class Block(torch.nn.Module):
    """A user module holding activations as plain attributes, next to a ModuleList and ModuleDict."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(16, 16)
        self.act = torch.nn.Tanh()
        self.gates = torch.nn.ModuleList([torch.nn.Sigmoid(), torch.nn.ReLU()])
        self.heads = torch.nn.ModuleDict({"log_probs": torch.nn.LogSoftmax(dim=1)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.linear(x))
        h = self.gates[0](h) * self.gates[1](h)
        return self.heads["log_probs"](h)


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16),
        torch.nn.ReLU(inplace=True),
        torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Sequential(torch.nn.Sigmoid())),
        Block(),
        torch.nn.Softmax(dim=-1),
    )


def _forward_backward(model, x):
    x = x.detach().requires_grad_()
    out = model(x)
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    return out, x.grad, [p.grad for p in model.parameters()]


def test_convert_replaces_nested_modules_and_keeps_outputs(kernel_launches):
    model = _model()
    reference = copy.deepcopy(model)
    assert convert(model) is model
    assert type(model[1]) is fused_ops.nn.ReLU and model[1].inplace
    assert type(model[2][1]) is fused_ops.nn.Tanh
    assert type(model[2][2][0]) is fused_ops.nn.Sigmoid
    assert type(model[3].act) is fused_ops.nn.Tanh
    assert [type(m) for m in model[3].gates] == [fused_ops.nn.Sigmoid, fused_ops.nn.ReLU]
    assert not model[3].gates[1].inplace
    assert type(model[3].heads["log_probs"]) is fused_ops.nn.LogSoftmax and model[3].heads["log_probs"].dim == 1
    assert type(model[4]) is fused_ops.nn.Softmax and model[4].dim == -1
    # Modules without a fused counterpart, and the parameters, are the same objects.
    assert type(model[0]) is torch.nn.Linear and model[0].weight is model[0].weight

    x = torch.randn(5, 8)
    out, grad, param_grads = _forward_backward(model, x)
    out_ref, grad_ref, param_grads_ref = _forward_backward(reference, x)
    assert_close(out, out_ref)
    assert_close(grad, grad_ref)
    for param_grad, param_grad_ref in zip(param_grads, param_grads_ref, strict=True):
        assert_close(param_grad, param_grad_ref)
    for kernel in ("relu", "tanh", "sigmoid", "softmax"):
        assert kernel_launches.launch_count(f"{kernel}_forward_kernel") >= 1, kernel
        assert kernel_launches.launch_count(f"{kernel}_backward_kernel") >= 1, kernel


def test_convert_keeps_loss_arguments_and_the_weight_buffer(kernel_launches):
    weight = torch.rand(5) + 0.5
    losses = torch.nn.ModuleDict(
        {
            "mse": torch.nn.MSELoss(reduction="sum"),
            "ce": torch.nn.CrossEntropyLoss(weight=weight, ignore_index=2, reduction="sum", label_smoothing=0.1),
        }
    )
    reference = copy.deepcopy(losses)
    convert(losses)
    mse, ce = losses["mse"], losses["ce"]
    assert type(mse) is fused_ops.nn.MSELoss and mse.reduction == "sum"
    assert type(ce) is fused_ops.nn.CrossEntropyLoss
    assert (ce.ignore_index, ce.reduction, ce.label_smoothing) == (2, "sum", 0.1)
    assert ce.weight is weight and "weight" in dict(ce.named_buffers())

    logits, target = torch.randn(7, 5), torch.tensor([0, 1, 2, 3, 4, 2, 1])
    assert_close(ce(logits, target), reference["ce"](logits, target), reduction_size=7)
    prediction, goal = torch.randn(4, 6), torch.randn(4, 6)
    assert_close(mse(prediction, goal), reference["mse"](prediction, goal), reduction_size=24)
    assert kernel_launches.launch_count("cross_entropy_forward_kernel") >= 1
    assert kernel_launches.kernel_names() & {"mse_loss_kernel", "mse_loss_partial_sums_kernel"}


def test_convert_leaves_subclasses_and_fused_modules_alone():
    class LeakyRelu(torch.nn.ReLU):
        def forward(self, input):
            return torch.nn.functional.leaky_relu(input)

    model = torch.nn.Sequential(LeakyRelu(), fused_ops.nn.Tanh(), torch.nn.Softmax(dim=0))
    subclass, fused = model[0], model[1]
    convert(model)
    assert model[0] is subclass and model[1] is fused
    assert type(model[2]) is fused_ops.nn.Softmax
    again = model[2]
    convert(model)
    assert model[2] is again, "converting twice changes nothing"


def test_convert_keeps_shared_modules_shared_and_their_mode():
    shared = torch.nn.ReLU()
    model = torch.nn.Sequential(shared, torch.nn.Linear(3, 3), shared, torch.nn.Tanh().eval())
    convert(model)
    assert type(model[0]) is fused_ops.nn.ReLU and model[0] is model[2]
    assert model[0].training and not model[3].training


def test_convert_returns_the_replacement_of_a_bare_module():
    module = torch.nn.LogSoftmax(dim=0)
    converted = convert(module)
    assert type(converted) is fused_ops.nn.LogSoftmax and converted.dim == 0


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_converted_model_under_torch_compile_fullgraph(backend, kernel_launches):
    model = convert(_model())
    x = torch.randn(3, 8, requires_grad=True)
    assert_compiled_matches_eager(model, x, backend=backend)
    assert kernel_launches.launch_count("tanh_backward_kernel") == 4  # 2 Tanh modules x (eager, compiled)
    assert kernel_launches.launch_count("relu_forward_kernel") == 4  # 2 ReLU modules x (eager, compiled)
