"""Accuracy of the low-precision optimizer states (issue 12) against fp32 AdamW from the same seed.

    python benchmarks/lowmem_accuracy.py [--steps 300] [--seeds 0,1,2,3,4] [--tasks digits,lm]
        [--variants fp32,bf16,8bit] [--json out.json] [--png docs/lowmem_accuracy.png]
    python benchmarks/lowmem_accuracy.py --from-json a.json b.json --png ...   (table and plot only)
    TRITON_INTERPRET=1 python benchmarks/lowmem_accuracy.py --lockstep 20 --tasks lm
        (AdamW8bit's kernel against adam8bit_step_ref on the same gradients, step by step)

1. Quantization error of the moments after one AdamW step on random data (16,384
   normal gradients): fused_ops' 8-bit scheme, and bitsandbytes' CPU
   ``quantize_blockwise`` with the same map and block size when bitsandbytes imports.
2. Training curves, same seed, same batches: fp32 AdamW (torch's), bf16 moments
   (``state_dtype=torch.bfloat16``) and 8-bit moments (``AdamW8bit``), all at lr 1e-3
   (digits) or 3e-3 (language model), weight decay 1e-2, on
   - scikit-learn's digits, a 64-256-256-10 MLP (two of its tensors over 4,096
     elements, so quantized), full-batch on a fixed 80% split; its training loss goes
     to ~0.007 (the training set memorized), so the held-out loss on the other 20% is
     reported too; a seed changes the initial weights;
   - a small causal language model: transformers' GPT-2 from a tiny config (2 layers,
     width 128, random weights, no download), character-level, on the sources of the
     installed torch's ``torch/optim/*.py`` (a fixed corpus for a pinned torch; this
     repository's own sources changed with every commit), batches of 16 x 64
     characters; a seed changes the initial weights and the batches.
   The final loss is the mean of the last 20 steps' training losses (batch noise).
   Several seeds measure the run-to-run noise: fp32 AdamW against itself across seeds,
   next to each variant against fp32 AdamW with the same seed.

Where the optimizers step: with ``TRITON_INTERPRET=1`` in the environment, fused_ops'
optimizers run their Triton kernels in Triton's interpreter (slow: seconds per step);
without it, on the CPU, they step on their eager references (``adam_step_ref`` on bf16
moments, ``adam8bit_step_ref``), which tests/test_adam_state_dtype.py and
tests/test_adam8bit.py compare with the kernels. The JSON output records which.
Prints Markdown tables and writes the plot.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
from pathlib import Path

import torch

import fused_ops.optim
from fused_ops import _dispatch, reference
from fused_ops.profiling import KernelTrace

ROOT = Path(__file__).resolve().parent.parent
FP32, BF16, EIGHT = "fp32 AdamW", "bf16 moments", "8-bit moments"
VARIANTS = {
    FP32: lambda params, lr: torch.optim.AdamW(params, lr=lr),
    BF16: lambda params, lr: fused_ops.optim.AdamW(params, lr=lr, state_dtype=torch.bfloat16),
    EIGHT: lambda params, lr: fused_ops.optim.AdamW8bit(params, lr=lr),
}
SHORT = {"fp32": FP32, "bf16": BF16, "8bit": EIGHT}
DIGITS, LM = "digits MLP", "tiny GPT-2, characters"
WINDOW = 20


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


def _train(model, optimizer, batches, steps: int) -> tuple[list[float], int]:
    """Training losses per step, and the Triton kernel launches the optimizer made."""
    losses = []
    with KernelTrace() as trace:
        for step in range(steps):
            inputs, loss_fn = batches(step)
            optimizer.zero_grad()
            loss = loss_fn(model(inputs))
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses, trace.launch_count()


def digits_run(make_optimizer, steps: int, seed: int) -> dict:
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    x_all = torch.tensor(images, dtype=torch.float32)[order] / 16.0
    y_all = torch.tensor(labels)[order]
    split = int(0.8 * len(labels))
    x, y = x_all[:split], y_all[:split]
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 256), torch.nn.Tanh(), torch.nn.Linear(256, 10)
    )
    optimizer = make_optimizer(list(model.parameters()), 1e-3)
    losses, launches = _train(
        model, optimizer, lambda step: (x, lambda out: torch.nn.functional.cross_entropy(out, y)), steps
    )
    with torch.no_grad():
        held_out = torch.nn.functional.cross_entropy(model(x_all[split:]), y_all[split:]).item()
    return {"losses": losses, "held_out": held_out, "launches": launches}


def lm_corpus() -> str:
    return "".join(path.read_text() for path in sorted((Path(torch.__file__).parent / "optim").glob("*.py")))


def lm_run(make_optimizer, steps: int, seed: int) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    text = lm_corpus()
    vocabulary = sorted(set(text))
    index = {c: i for i, c in enumerate(vocabulary)}
    data = torch.tensor([index[c] for c in text])
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(vocabulary),
        n_positions=64,
        n_embd=128,
        n_layer=2,
        n_head=4,
        resid_pdrop=0,
        embd_pdrop=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    config.attn_pdrop = 0.0
    model = GPT2LMHeadModel(config)
    optimizer = make_optimizer(list(model.parameters()), 3e-3)
    generator = torch.Generator().manual_seed(seed + 1)

    def batches(step):
        starts = torch.randint(0, data.numel() - 65, (16,), generator=generator)
        batch = torch.stack([data[s : s + 64] for s in starts.tolist()])
        return batch, lambda out: torch.nn.functional.cross_entropy(
            out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), batch[:, 1:].reshape(-1)
        )

    losses, launches = _train(lambda batch: model(input_ids=batch), optimizer, batches, steps)
    return {"losses": losses, "launches": launches}


class Lockstep:
    """AdamW8bit through its Triton kernel, and ``adam8bit_step_ref`` on a copy of the
    parameters fed the same gradients: after each step, how far the two are apart (the
    kernel's parameters drive the training)."""

    def __init__(self, params: list[torch.Tensor], lr: float) -> None:
        self.kernel = fused_ops.optim.AdamW8bit(params, lr=lr)
        self.lr, self.params = lr, params
        self.shadow = [p.detach().clone() for p in params]
        self.states = []
        for p in params:
            if p.numel() >= 4096:
                blocks = -(-p.numel() // 256)
                self.states.append(
                    {
                        "step": torch.zeros(()),
                        "exp_avg_codes": torch.full((p.numel(),), 127, dtype=torch.uint8),
                        "exp_avg_scales": torch.zeros(blocks),
                        "exp_avg_sq_codes": torch.zeros(p.numel(), dtype=torch.uint8),
                        "exp_avg_sq_scales": torch.zeros(blocks),
                    }
                )
            else:
                self.states.append(
                    {"step": torch.zeros(()), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                )
        self.report: list[dict] = []

    def zero_grad(self) -> None:
        self.kernel.zero_grad()

    def step(self) -> None:
        grads = [p.grad.detach().clone() for p in self.params]
        self.kernel.step()
        reference.adam8bit_step_ref(
            self.shadow,
            grads,
            self.states,
            lr=self.lr,
            beta1=0.9,
            beta2=0.999,
            eps=1e-8,
            weight_decay=1e-2,
            maximize=False,
            decoupled_weight_decay=True,
        )
        codes = different = params = unequal = 0
        worst = 0.0
        for p, q, state in zip(self.params, self.shadow, self.states, strict=True):
            params += p.numel()
            unequal += int((p.detach() != q).sum())
            worst = max(worst, ((p.detach() - q).abs().max() / q.abs().max().clamp(min=1e-30)).item())
            for key in ("exp_avg_codes", "exp_avg_sq_codes"):
                if key in state:
                    codes += state[key].numel()
                    different += int((self.kernel.state[p][key] != state[key]).sum())
        self.report.append(
            {
                "unequal_params": unequal,
                "params": params,
                "max_rel_param_diff": worst,
                "different_codes": different,
                "codes": codes,
            }
        )


def lockstep(task: str, steps: int, seed: int) -> list[str]:
    """Run ``task`` with :class:`Lockstep` (needs TRITON_INTERPRET=1): a Markdown summary."""
    if not _dispatch.TRITON_INTERPRETED:
        raise SystemExit("--lockstep compares the Triton kernel with the reference: set TRITON_INTERPRET=1")
    holder = []

    def make(params, lr):
        holder.append(Lockstep(params, lr))
        return holder[0]

    out = {"digits": digits_run, "lm": lm_run}[task](make, steps, seed)
    report = holder[0].report
    lines = [
        f"{task}, seed {seed}: AdamW8bit's kernel ({out['launches']} launches) against adam8bit_step_ref, "
        "same gradients",
        "| step | parameters not bit-equal | max relative parameter difference | codes not equal |",
        "|--:|--:|--:|--:|",
    ]
    for step, row in enumerate(report, 1):
        if step in (1, 2, 5) or step % 10 == 0 or step == len(report):
            lines.append(
                f"| {step} | {row['unequal_params']} of {row['params']} | {row['max_rel_param_diff']:.1e} "
                f"| {row['different_codes']} of {row['codes']} |"
            )
    return lines


def final(losses: list[float]) -> float:
    """The mean of the last WINDOW losses (the final loss, less batch noise)."""
    return sum(losses[-WINDOW:]) / len(losses[-WINDOW:])


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {statistics.stdev(values):.4f}"


def tables(results: dict) -> list[str]:
    """Markdown: final losses (mean ± std over seeds), each variant against fp32 with the same
    seed, and fp32 against itself across seeds (the noise floor)."""
    lines = []
    for task, by_variant in results["runs"].items():
        metrics = {"training loss": lambda run: final(run["losses"])}
        if task == DIGITS:
            metrics["held-out loss"] = lambda run: run["held_out"]
        for metric, value in metrics.items():
            names = [name for name in VARIANTS if name in by_variant] + [n for n in by_variant if n not in VARIANTS]
            seeds = sorted(set.intersection(*(set(by_variant[name]) for name in names)), key=int)
            lines.append(f"\n{task}, {metric}, {results['steps']} steps, seeds {', '.join(seeds)}:\n")
            lines.append("| variant | final (mean ± std) | vs fp32, same seed: mean | min | max |")
            lines.append("|---|--:|--:|--:|--:|")
            base = {s: value(by_variant[FP32][s]) for s in seeds} if FP32 in names else None
            for name in names:
                values = [value(by_variant[name][s]) for s in seeds]
                cells = ["", "", ""]
                if base is not None and name != FP32:
                    ratios = [value(by_variant[name][s]) / base[s] - 1 for s in seeds]
                    cells = [f"{statistics.fmean(ratios):+.2%}", f"{min(ratios):+.2%}", f"{max(ratios):+.2%}"]
                lines.append(f"| {name} | {_spread(values)} | {' | '.join(cells)} |")
            if base is not None and len(seeds) > 1:
                values = list(base.values())
                mean = statistics.fmean(values)
                pairs = [a / b - 1 for i, a in enumerate(values) for j, b in enumerate(values) if i != j]
                lines.append(
                    f"| fp32 vs fp32, other seed (noise) | | {statistics.fmean(abs(p) for p in pairs):.2%} (mean abs) "
                    f"| {min(pairs):+.2%} | {max(pairs):+.2%} |"
                )
                lines.append(f"| fp32 std / mean | {statistics.stdev(values) / mean:.2%} | | | |")
    return lines


def _smooth(curves: torch.Tensor, window: int) -> torch.Tensor:
    """Trailing moving average along the steps (the first steps average what there is)."""
    padded = torch.nn.functional.pad(curves, (window - 1, 0), value=float("nan"))
    return padded.unfold(-1, window, 1).nanmean(-1)


def plot(results: dict, png: Path) -> None:
    """Top: training loss (mean over seeds). Bottom: each variant's loss over fp32 AdamW's
    with the same seed, minus 1 (mean and min-max over seeds), against the noise floor:
    each fp32 seed's loss over the fp32 mean across seeds. The LM's curves are smoothed
    over WINDOW steps (its batches are noisy), the digits' are not (full batch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    figure, axes = plt.subplots(2, len(runs), figsize=(6.5 * len(runs), 7.5), squeeze=False)
    for column, (task, by_variant) in enumerate(runs.items()):
        window = 1 if task == DIGITS else WINDOW
        curves = {
            name: _smooth(torch.tensor([by_seed[s]["losses"] for s in sorted(by_seed, key=int)]), window)
            for name, by_seed in by_variant.items()
        }
        top, bottom = axes[0][column], axes[1][column]
        for name, curve in curves.items():
            steps = range(1, curve.shape[1] + 1)
            top.plot(steps, curve.mean(0), label=f"{name} ({curve.shape[0]} seeds)", linewidth=1)
        smoothing = "" if window == 1 else f", {window}-step moving average"
        top.set_title(f"{task}: training loss (mean over seeds{smoothing})", fontsize=9)
        top.set_yscale("log")
        top.set_ylabel("loss")
        top.legend(fontsize=8)
        base = curves.get(FP32)
        if base is None:
            continue
        noise = base / base.mean(0, keepdim=True) - 1
        steps = range(1, base.shape[1] + 1)
        bottom.fill_between(
            steps,
            100 * noise.min(0).values,
            100 * noise.max(0).values,
            color="grey",
            alpha=0.25,
            label="fp32 AdamW seeds around their mean (noise)",
        )
        for (name, curve), color in zip(
            curves.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False
        ):
            if name == FP32 or curve.shape != base.shape:
                continue
            ratio = 100 * (curve / base - 1)
            bottom.plot(steps, ratio.mean(0), color=color, linewidth=1, label=f"{name} / fp32 AdamW, same seed")
            bottom.fill_between(steps, ratio.min(0).values, ratio.max(0).values, color=color, alpha=0.15)
        for level in (-2, 2):
            bottom.axhline(level, color="black", linewidth=0.5, linestyle="--")
        bottom.set_ylim(-15, 15)
        bottom.set_title(f"{task}: loss vs fp32 AdamW, same seed (%; mean, min-max)", fontsize=9)
        bottom.set_xlabel("step")
        bottom.set_ylabel("% difference")
        bottom.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=110)


def merge(paths: list[Path]) -> dict:
    """Runs from several JSON outputs (same steps): later files add seeds or variants."""
    merged = None
    for path in paths:
        part = json.loads(path.read_text())
        if merged is None:
            merged = part
            continue
        if part["steps"] != merged["steps"]:
            raise ValueError(f"{path} has {part['steps']} steps, {paths[0]} {merged['steps']}")
        for task, by_variant in part["runs"].items():
            for name, by_seed in by_variant.items():
                merged["runs"].setdefault(task, {}).setdefault(name, {}).update(by_seed)
    return merged


def demo_comparison(seeds: list[int]) -> list[str]:
    """`make demo`'s own training (examples/demo.py: its MLP, batches, learning rate and
    10 epochs) with fp32 AdamW, bf16 moments and 8-bit moments from the same start: the
    final epoch's mean training loss against fp32's, and the test accuracy."""
    import sys

    sys.path.insert(0, str(ROOT / "examples"))
    import demo

    lines = [
        "| seed | fp32 AdamW final loss | bf16 moments vs fp32 | 8-bit vs fp32 | test accuracy fp32 / bf16 / 8-bit |",
        "|--:|--:|--:|--:|--:|",
    ]
    relative = {BF16: [], EIGHT: []}
    for seed in seeds:
        config = demo.DemoConfig(seed=seed)
        data = demo.load_digits(seed)
        generator = torch.Generator().manual_seed(seed)
        orders = [torch.randperm(len(data.x_train), generator=generator) for _ in range(config.epochs)]
        runs = {}
        for name in (FP32, BF16, EIGHT):
            # The demo builds its optimizer as optimizer_cls(params, lr=..., weight_decay=...).
            optimizer = functools.partial(_with_decay, name)
            model = demo.build_model(config.hidden, seed)
            runs[name] = demo.train(model, torch.nn.functional.cross_entropy, optimizer, data, orders, config)
        base = runs[FP32].epoch_losses[-1]
        for name in (BF16, EIGHT):
            relative[name].append(runs[name].epoch_losses[-1] / base - 1)
        accuracy = " / ".join(f"{runs[name].test_accuracy:.2%}" for name in (FP32, BF16, EIGHT))
        lines.append(f"| {seed} | {base:.4f} | {relative[BF16][-1]:+.2%} | {relative[EIGHT][-1]:+.2%} | {accuracy} |")
    mean = {name: statistics.mean(values) for name, values in relative.items()}
    lines.append(f"| mean | | {mean[BF16]:+.2%} | {mean[EIGHT]:+.2%} | |")
    return lines


def _with_decay(name: str, params, lr: float, weight_decay: float = 0.0):
    """The variant ``name`` with the demo's decoupled weight decay."""
    if name == FP32:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == BF16:
        return fused_ops.optim.AdamW(params, lr=lr, weight_decay=weight_decay, state_dtype=torch.bfloat16)
    return fused_ops.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)


def lr_sensitivity(steps: int, seeds: list[int], factors=(0.97, 1.03, 1.1)) -> list[str]:
    """How much fp32 AdamW's own digits losses move when only its learning rate changes.

    The scale against which a low-precision variant's difference can be read: a variant
    that takes slightly larger or smaller steps than fp32 (as quantized moments do) moves
    a memorized training loss a lot and the held-out loss hardly at all.
    """
    lines = ["| seed | lr factor | training loss vs lr x1 | held-out loss vs lr x1 |", "|--:|--:|--:|--:|"]
    for seed in seeds:
        base = digits_run(VARIANTS[FP32], steps, seed)
        for factor in factors:
            run = digits_run(lambda params, lr, f=factor: torch.optim.AdamW(params, lr=lr * f), steps, seed)
            lines.append(
                f"| {seed} | {factor} | {final(run['losses']) / final(base['losses']) - 1:+.2%} | "
                f"{run['held_out'] / base['held_out'] - 1:+.2%} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument("--tasks", default="digits,lm", help="comma-separated: digits, lm")
    parser.add_argument("--variants", default="fp32,bf16,8bit", help="comma-separated: fp32, bf16, 8bit")
    parser.add_argument("--json", type=Path, help="write every curve here")
    parser.add_argument("--from-json", type=Path, nargs="+", help="print tables and plot from saved runs")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "lowmem_accuracy.png")
    parser.add_argument(
        "--lockstep", type=int, metavar="STEPS", help="compare the 8-bit kernel with its reference over STEPS steps"
    )
    parser.add_argument(
        "--lr-sensitivity", action="store_true", help="fp32 AdamW's digits losses at learning rates x0.97, x1.03, x1.1"
    )
    parser.add_argument("--demo", action="store_true", help="make demo's training with each optimizer variant")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.demo:
        print("\n".join(demo_comparison([int(s) for s in args.seeds.split(",")])), flush=True)
        return 0
    if args.lr_sensitivity:
        print("\n".join(lr_sensitivity(args.steps, [int(s) for s in args.seeds.split(",")])), flush=True)
        return 0
    if args.lockstep:
        for task in args.tasks.split(","):
            print("\n".join(lockstep(task, args.lockstep, int(args.seeds.split(",")[0]))), flush=True)
        return 0
    if args.from_json:
        results = merge(args.from_json)
    else:
        print("\n".join(quantization_error()))
        backend = "Triton interpreter" if _dispatch.TRITON_INTERPRETED else "eager reference"
        results = {"steps": args.steps, "backend": backend, "torch": torch.__version__, "runs": {}}
        tasks = {"digits": (DIGITS, digits_run), "lm": (LM, lm_run)}
        for key in args.tasks.split(","):
            task, run = tasks[key]
            for name in (SHORT[v] for v in args.variants.split(",")):
                for seed in args.seeds.split(","):
                    out = run(VARIANTS[name], args.steps, int(seed))
                    results["runs"].setdefault(task, {}).setdefault(name, {})[seed] = out
                    print(
                        f"{task} | {name} | seed {seed} | final {final(out['losses']):.4f} | "
                        f"optimizer kernel launches {out['launches']} ({backend})",
                        flush=True,
                    )
                    if args.json:
                        args.json.write_text(json.dumps(results))
    print("\n".join(tables(results)))
    if args.png:
        plot(results, args.png)
        print(f"\nwrote {args.png}")
    curves = [
        v
        for by_variant in results["runs"].values()
        for by_seed in by_variant.values()
        for run in by_seed.values()
        for v in run["losses"]
    ]
    return 0 if all(math.isfinite(v) for v in curves) else 1


if __name__ == "__main__":
    raise SystemExit(main())
