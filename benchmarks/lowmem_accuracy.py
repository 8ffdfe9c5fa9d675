"""Accuracy of the low-precision optimizer states (issue 12) against fp32 AdamW from the same seed.

    python benchmarks/lowmem_accuracy.py [--steps 300] [--png docs/lowmem_accuracy.png]

1. Quantization error of the moments after one AdamW step on random data (16,384
   normal gradients): fused_ops' 8-bit scheme, and bitsandbytes' CPU
   ``quantize_blockwise`` with the same map and block size when bitsandbytes imports.
2. Training curves, same seed, same batches: fp32 AdamW, bf16 moments
   (``state_dtype=torch.bfloat16``) and 8-bit moments (``AdamW8bit``) on
   - scikit-learn's digits, a 64-256-256-10 MLP (two of its tensors over 4,096
     elements, so quantized), full-batch on a fixed 80% split; its training loss goes
     to ~0.01, where relative differences are noise, so the held-out loss on the other
     20% is reported too;
   - a small causal language model: transformers' GPT-2 from a tiny config (2 layers,
     width 128, random weights, no download), character-level, on this repository's
     Python sources, batches of 16 x 64 characters.

Runs on the CPU. Without TRITON_INTERPRET (the default here), the optimizers step on
their eager references (``adam_step_ref`` on bf16 moments, ``adam8bit_step_ref``),
which tests/test_adam_state_dtype.py and tests/test_adam8bit.py show compute what the
kernels compute (the same 8-bit codes); the Triton interpreter would take hours.
Prints a Markdown table and writes the plot.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

import fused_ops.optim
from fused_ops import reference

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "fp32 AdamW": lambda params, lr: torch.optim.AdamW(params, lr=lr),
    "bf16 moments": lambda params, lr: fused_ops.optim.AdamW(params, lr=lr, state_dtype=torch.bfloat16),
    "8-bit moments": lambda params, lr: fused_ops.optim.AdamW8bit(params, lr=lr),
}


def quantization_error() -> list[str]:
    torch.manual_seed(0)
    g = torch.randn(64 * 256)
    moments = {"exp_avg": (0.1 * g, True), "exp_avg_sq": (0.001 * g * g, False)}
    lines = ["| moment | fused_ops 8-bit rel. L2 error | bitsandbytes rel. L2 error |", "|---|--:|--:|"]
    for key, (exact, signed) in moments.items():
        codes, scales = reference.quantize_blockwise_ref(exact, signed)
        ours = reference.dequantize_blockwise_ref(codes, scales, signed)
        theirs = "not installed"
        try:
            import bitsandbytes.functional as bnb

            q, state = bnb.quantize_blockwise(exact, code=bnb.create_dynamic_map(signed=signed), blocksize=256)
            theirs = f"{((bnb.dequantize_blockwise(q, state) - exact).norm() / exact.norm()).item():.4%}"
        except Exception as error:  # an import or CPU-path failure is reported, not fatal
            theirs = f"unavailable ({type(error).__name__})"
        lines.append(f"| {key} | {((ours - exact).norm() / exact.norm()).item():.4%} | {theirs} |")
    return lines


HELD_OUT: dict[str, float] = {}


def digits_run(make_optimizer, steps: int, name: str = "") -> list[float]:
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    x_all = torch.tensor(images, dtype=torch.float32)[order] / 16.0
    y_all = torch.tensor(labels)[order]
    split = int(0.8 * len(labels))
    x, y = x_all[:split], y_all[:split]
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 256), torch.nn.Tanh(), torch.nn.Linear(256, 10)
    )
    optimizer = make_optimizer(list(model.parameters()), 1e-3)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        HELD_OUT[name] = torch.nn.functional.cross_entropy(model(x_all[split:]), y_all[split:]).item()
    return losses


def lm_run(make_optimizer, steps: int, name: str = "") -> list[float]:
    from transformers import GPT2Config, GPT2LMHeadModel

    text = "".join(path.read_text() for path in sorted((ROOT / "fused_ops").rglob("*.py")))
    vocabulary = sorted(set(text))
    data = torch.tensor([vocabulary.index(c) for c in text])
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(vocabulary), n_positions=64, n_embd=128, n_layer=2, n_head=4, resid_pdrop=0, embd_pdrop=0
    )
    config.attn_pdrop = 0.0
    model = GPT2LMHeadModel(config)
    optimizer = make_optimizer(list(model.parameters()), 3e-3)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        starts = torch.randint(0, data.numel() - 65, (16,), generator=generator)
        batch = torch.stack([data[s : s + 64] for s in starts.tolist()])
        optimizer.zero_grad()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def smoothed(losses: list[float], window: int = 20) -> float:
    """The mean of the last ``window`` losses (the final loss, less batch noise)."""
    return sum(losses[-window:]) / len(losses[-window:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "lowmem_accuracy.png")
    parser.add_argument("--tasks", default="digits,lm", help="comma-separated: digits, lm")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("\n".join(quantization_error()))
    curves = {}
    tasks = {"digits": ("digits MLP", digits_run), "lm": ("tiny GPT-2, characters", lm_run)}
    for key in args.tasks.split(","):
        task, run = tasks[key]
        curves[task] = {name: run(make, args.steps, name) for name, make in VARIANTS.items()}
    print()
    print(f"| task | {' | '.join(VARIANTS)} | bf16 vs fp32 | 8-bit vs fp32 |")
    print("|---|" + "--:|" * (len(VARIANTS) + 2))
    for task, runs in curves.items():
        final = {name: smoothed(losses) for name, losses in runs.items()}
        base = final["fp32 AdamW"]
        cells = " | ".join(f"{final[name]:.4f}" for name in VARIANTS)
        print(
            f"| {task} | {cells} | {final['bf16 moments'] / base - 1:+.2%} | {final['8-bit moments'] / base - 1:+.2%} |"
        )
    if HELD_OUT:
        base = HELD_OUT["fp32 AdamW"]
        cells = " | ".join(f"{HELD_OUT[name]:.4f}" for name in VARIANTS)
        bf16, eight = HELD_OUT["bf16 moments"] / base - 1, HELD_OUT["8-bit moments"] / base - 1
        print(f"| digits MLP, held-out loss | {cells} | {bf16:+.2%} | {eight:+.2%} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4), squeeze=False)
    for axis, (task, runs) in zip(axes[0], curves.items(), strict=True):
        for name, losses in runs.items():
            axis.plot(range(1, len(losses) + 1), losses, label=name, linewidth=1)
        axis.set_title(f"{task}: training loss, same seed")
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.set_yscale("log")
        axis.legend()
    figure.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.png, dpi=120)
    print(f"\nwrote {args.png}")
    return 0 if all(math.isfinite(v) for runs in curves.values() for losses in runs.values() for v in losses) else 1


if __name__ == "__main__":
    raise SystemExit(main())
