"""fused_ops.patch() on models nobody here wrote: transformers' GPT-2, Llama and BERT, a CNN and an MLP.

Each model is built from a tiny config (random weights, nothing downloaded), copied, and
trained a few steps twice from the same weights and batches: on plain torch, and under
``fused_ops.patch(model)``. The losses must agree within the tolerance table, and the
launch counter shows which call sites ran through fused kernels. A dry run lists what
stayed on torch, and why.
"""

import copy
import warnings

import pytest
import torch
import transformers
from helpers import tolerance

import fused_ops

transformers.logging.set_verbosity_error()

VOCAB, SEQ, BATCH, STEPS = 64, 8, 2, 3


def _gpt2(attn: str) -> torch.nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0
    )
    return transformers.GPT2LMHeadModel._from_config(config, attn_implementation=attn)


def _llama(attn: str) -> torch.nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
    )
    return transformers.LlamaForCausalLM._from_config(config, attn_implementation=attn)


def _bert(attn: str) -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        hidden_dropout_prob=0,
        attention_probs_dropout_prob=0,
        num_labels=3,
    )
    return transformers.BertForSequenceClassification._from_config(config, attn_implementation=attn)


def _generator(step: int) -> torch.Generator:
    # On the suite's device (a CPU generator cannot fill CUDA tensors), seeded per step so
    # that the torch run and the patched run see the same batches.
    return torch.Generator(torch.get_default_device()).manual_seed(step)


def _language_batch(step: int) -> dict:
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=_generator(step))
    return {"input_ids": ids, "labels": ids}


def _classification_batch(step: int) -> dict:
    generator = _generator(step)
    return {
        "input_ids": torch.randint(0, VOCAB, (BATCH, SEQ), generator=generator),
        "labels": torch.randint(0, 3, (BATCH,), generator=generator),
    }


# model, attention implementation -> (builder, batches, kernels that must run fused,
# calls a dry run must report as left to torch). "sdpa" is transformers' default.
TRANSFORMERS_CASES = {
    "gpt2-eager": (_gpt2, "eager", _language_batch, {"gelu", "softmax", "cross_entropy"}, set()),
    "gpt2-sdpa": (_gpt2, "sdpa", _language_batch, {"gelu", "cross_entropy"}, {"F.scaled_dot_product_attention"}),
    "llama-eager": (_llama, "eager", _language_batch, {"silu", "softmax", "cross_entropy"}, set()),
    "llama-sdpa": (_llama, "sdpa", _language_batch, {"silu", "cross_entropy"}, {"F.scaled_dot_product_attention"}),
    "bert-eager": (_bert, "eager", _classification_batch, {"gelu", "tanh", "softmax", "cross_entropy"}, set()),
}


def _train(model: torch.nn.Module, batches, step_loss) -> list[torch.Tensor]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for step in range(STEPS):
        loss = step_loss(model, batches(step))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.detach())
    return losses


def _transformers_loss(model, batch):
    return model(**batch).loss


def _assert_losses_match(fused: list[torch.Tensor], eager: list[torch.Tensor], reduction_size: int) -> None:
    rtol, atol = tolerance(torch.float32, reduction_size)
    torch.testing.assert_close(torch.stack(fused), torch.stack(eager), rtol=rtol, atol=atol)


# cross_entropy writes its gradient in the forward; its backward kernel only scales it.
_BACKWARD_KERNELS = {"cross_entropy": "cross_entropy_scale_grad_kernel"}


def _forward_kernels(kernel_launches) -> set[str]:
    return {name.removesuffix("_forward_kernel") for name in kernel_launches.kernel_names() if "_forward" in name}


@pytest.mark.parametrize("case", list(TRANSFORMERS_CASES))
def test_transformers_model_trains_like_torch_under_patch(case, kernel_launches):
    build, attn, batches, fused_kernels, left_to_torch = TRANSFORMERS_CASES[case]
    eager_model = build(attn)
    patched_model = copy.deepcopy(eager_model)
    eager_losses = _train(eager_model, batches, _transformers_loss)
    assert kernel_launches.launch_count() == 0

    with fused_ops.patch(patched_model) as handle:
        fused_losses = _train(patched_model, batches, _transformers_loss)
    _assert_losses_match(fused_losses, eager_losses, reduction_size=BATCH * SEQ * VOCAB)
    assert _forward_kernels(kernel_launches) == fused_kernels
    for kernel in fused_kernels:
        assert kernel_launches.launch_count(_BACKWARD_KERNELS.get(kernel, f"{kernel}_backward_kernel")) >= STEPS, kernel
    # Undone: the model's own modules are back, and run on torch.
    assert not any(isinstance(m, fused_ops.nn._Fused) for m in patched_model.modules())
    report = handle.report()
    assert all(site.fused for site in report.calls), str(report)

    kernel_launches.clear()
    with fused_ops.patch(patched_model, dry_run=True) as dry:
        with torch.no_grad():
            patched_model(**batches(0))
    assert kernel_launches.launch_count() == 0
    missed = {site.call for site in dry.report().unfused_calls()}
    assert missed == left_to_torch, str(dry.report())


def test_gpt2_activation_is_swapped_by_what_it_computes():
    model = _gpt2("eager")
    act = model.transformer.h[0].mlp.act
    assert type(act).__name__ == "NewGELUActivation"
    with fused_ops.patch(model) as handle:
        swapped = model.transformer.h[0].mlp.act
        assert type(swapped) is fused_ops.nn.GELU and swapped.approximate == "tanh"
        assert "fused_ops.GELU(approximate='tanh')" in repr(model)
        sites = {site.name: site for site in handle.report().modules}
        assert "gelu(approximate='tanh')" in sites["transformer.h.0.mlp.act"].reason
    assert model.transformer.h[0].mlp.act is act


def test_dry_run_of_gpt2_counts_the_bytes_the_swapped_gelu_saves():
    model = _gpt2("eager")
    with fused_ops.patch(model, dry_run=True) as dry, torch.no_grad():
        model(**_language_batch(0))
    report = dry.report()
    gelus = [site for site in report.modules if site.replacement == "fused_ops.GELU"]
    assert len(gelus) == 2
    for site in gelus:
        # NewGELUActivation is 8 eager kernels; the fused GELU reads 2x8x128 floats once and writes them once.
        assert site.eager_kernels == 8 and site.fused_bytes == 2 * BATCH * SEQ * 128 * 4
    assert report.bytes_saved > sum(site.eager_bytes for site in gelus) // 2


def test_patched_gpt2_under_torch_compile_matches_eager(kernel_launches):
    model = _gpt2("eager")
    ids = _language_batch(0)["input_ids"]

    # The loss is computed here rather than by the model: transformers' own loss_function
    # logs a warning once, which dynamo cannot trace with fullgraph=True (not fused_ops').
    def loss(ids):
        logits = model(input_ids=ids).logits
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())

    torch._dynamo.reset()
    with fused_ops.patch(model):
        eager = loss(ids)
        eager_launches = kernel_launches.launch_count()
        compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")(ids)
    assert _forward_kernels(kernel_launches) == {"gelu", "softmax", "cross_entropy"}
    # The same kernels again, but for eager cross-entropy's targets pass (launched only
    # when its forward takes several programs): under torch.compile cross-entropy takes
    # its two-pass custom ops, which need none.
    targets_pass = kernel_launches.launch_count("cross_entropy_total_weight_kernel")
    assert targets_pass <= 1
    assert kernel_launches.launch_count() == 2 * eager_launches - targets_pass
    rtol, atol = tolerance(torch.float32, BATCH * SEQ * VOCAB)
    torch.testing.assert_close(compiled, eager, rtol=rtol, atol=atol)


class CNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 8, 3)
        )
        self.head = torch.nn.Linear(8 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(x)).flatten(1))


def _cnn_loss(model, batch):
    images, labels = batch
    return torch.nn.functional.cross_entropy(model(images), labels, label_smoothing=0.1)


def _cnn_batch(step: int):
    generator = _generator(step)
    return torch.randn(4, 1, 8, 8, generator=generator), torch.randint(0, 5, (4,), generator=generator)


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16),
        torch.nn.GELU(),
        torch.nn.Linear(16, 16),
        torch.nn.SiLU(),
        torch.nn.Linear(16, 16),
        torch.nn.Sigmoid(),
        torch.nn.Linear(16, 3),
    )


def _mlp_loss(model, batch):
    x, target = batch
    return torch.nn.functional.mse_loss(model(x), target)


def _mlp_batch(step: int):
    generator = _generator(step)
    return torch.randn(8, 6, generator=generator), torch.randn(8, 3, generator=generator)


@pytest.mark.parametrize(
    ("build", "batches", "step_loss", "fused_kernels"),
    [
        (CNN, _cnn_batch, _cnn_loss, {"relu", "cross_entropy"}),
        (_mlp, _mlp_batch, _mlp_loss, {"gelu", "silu", "sigmoid", "mse_loss"}),
    ],
    ids=["cnn", "mlp"],
)
def test_plain_torch_models_train_like_torch_under_patch(build, batches, step_loss, fused_kernels, kernel_launches):
    eager_model = build()
    patched_model = copy.deepcopy(eager_model)
    eager_losses = _train(eager_model, batches, step_loss)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fused_ops.patch(patched_model):
            fused_losses = _train(patched_model, batches, step_loss)
    _assert_losses_match(fused_losses, eager_losses, reduction_size=64)
    # mse_loss's forward kernel is named after its partial sums.
    names = {name.replace("_partial_sums", "_forward") for name in kernel_launches.kernel_names()}
    assert {name.removesuffix("_forward_kernel") for name in names if "_forward" in name} == fused_kernels


# GPT-2's logits are compared through the loss only: under autocast its written-out GELU
# (8 eager ops) rounds every intermediate to the half dtype, where the fused GELU rounds
# once, so its logits differ from torch's by a few half-precision ulps after two layers.
@pytest.mark.parametrize(
    ("build", "batches", "dtype", "compare_logits"),
    [
        (_gpt2, _language_batch, torch.bfloat16, False),
        (_gpt2, _language_batch, torch.float16, False),
        (_llama, _language_batch, torch.bfloat16, True),
        (_bert, _classification_batch, torch.bfloat16, True),
    ],
    ids=["gpt2-bf16", "gpt2-fp16", "llama-bf16", "bert-bf16"],
)
def test_patched_models_under_cpu_autocast_match_torch(build, batches, dtype, compare_logits, kernel_launches):
    model = build("eager")
    batch = batches(0)
    with torch.autocast("cpu", dtype=dtype):
        expected = model(**batch)
        assert kernel_launches.launch_count() == 0
        with fused_ops.patch(model):
            actual = model(**batch)
    assert kernel_launches.launch_count("cross_entropy_forward_kernel") == 1
    assert kernel_launches.launch_count("softmax_forward_kernel") == 2
    # torch's autocast dtypes: half-precision logits, a float32 loss.
    assert actual.logits.dtype == expected.logits.dtype == dtype
    assert actual.loss.dtype == expected.loss.dtype == torch.float32
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=rtol, atol=atol)
    if compare_logits:
        torch.testing.assert_close(actual.logits, expected.logits, rtol=rtol, atol=atol)


# transformers' activation registry -> the fused module patch() puts in its place (None:
# left alone). Classes of torch.nn are matched by class, transformers' own by a probe.
ACTIVATIONS = {
    "gelu": ("GELU", "none"),
    "gelu_python": ("GELU", "none"),
    "gelu_new": ("GELU", "tanh"),
    "gelu_fast": ("GELU", "tanh"),
    "gelu_pytorch_tanh": ("GELU", "tanh"),
    "gelu_python_tanh": ("GELU", "tanh"),
    "gelu_accurate": ("GELU", "tanh"),
    "silu": ("SiLU", None),
    "swish": ("SiLU", None),
    "relu": ("ReLU", None),
    "sigmoid": ("Sigmoid", None),
    "tanh": ("Tanh", None),
    "gelu_10": None,  # clamps to [-10, 10]: the probe's large values tell it from gelu
    "quick_gelu": None,  # x * sigmoid(1.702 x)
    "mish": None,
    "relu2": None,
    "linear": None,
    "laplace": None,
    "sqrtsoftplus": None,
    "hardswish": None,
    "leaky_relu": None,
    "relu6": None,
}


def test_every_transformers_activation_is_matched_by_what_it_computes(kernel_launches):
    from transformers.activations import ACT2CLS, ACT2FN

    assert set(ACTIVATIONS) <= set(ACT2CLS)
    names = sorted(ACTIVATIONS)
    model = torch.nn.ModuleDict({name: ACT2FN[name] for name in names})
    originals = dict(model.items())
    x = torch.linspace(-12, 12, 49)
    with fused_ops.patch(model, functions=False):
        for name in names:
            expected = ACTIVATIONS[name]
            module = model[name]
            if expected is None:
                assert module is originals[name], name
                continue
            cls, approximate = expected
            assert type(module) is getattr(fused_ops.nn, cls), name
            if approximate is not None:
                assert module.approximate == approximate, name
            rtol, atol = tolerance(torch.float32)
            torch.testing.assert_close(module(x), originals[name](x), rtol=rtol, atol=atol, msg=name)
    assert dict(model.items()) == originals
    assert kernel_launches.launch_count() >= 12
