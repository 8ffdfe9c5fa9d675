"""Memory, bytes, launches and FLOPs of linear + cross-entropy: fused_ops against torch's paths.

    python benchmarks/linear_cross_entropy_memory.py [N D V]      # default 4096 256 32000, fp32

Prints one markdown table, forward + backward (gradients of input and linear weight, mean):

- memory: the most bytes live at once beyond the inputs and the returned gradients, from
  the profiler's allocator events (tests/helpers.py LiveBytes), for eager torch
  (``F.linear_cross_entropy(options=None)``: linear, then cross_entropy), torch's chunked
  path with its default options, torch's chunked path with ``chunking_method="aspect_ratio"``
  (chunks sized so the chunk's logits match the input in memory: Liger-Kernel's chunk
  size, github.com/linkedin/Liger-Kernel src/liger_kernel/ops/fused_linear_cross_entropy.py),
  and fused_ops.
- fused_ops at this size in Triton's interpreter would take hours on a CPU, so by default
  its bound kernels are replaced by no-ops for the memory figure: every allocation of the op
  happens on the host in its launchers (the kernels allocate nothing), so the figure is
  exact; the numbers themselves are checked at smaller shapes by
  tests/test_linear_cross_entropy.py. ``--real`` runs the real kernels instead.
- bytes: fused_ops from ``modeled_traffic`` (every load counted, no cache; checked against
  KernelTrace's count in test_traffic_matches_the_tile_model), eager torch from TorchTrace.
- FLOPs: 2 N V D per logits matmul. fused_ops computes the logits 3 times (forward and
  once in each backward kernel) plus the two gradient products: 10 N V D; eager torch
  6 N V D (it keeps the logits).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import torch.nn.functional as F
from fused_ops.kernels import linear_cross_entropy as lce
from helpers import LiveBytes

import fused_ops
from fused_ops.profiling import KernelTrace, TorchTrace


class _NoLaunch:
    """Stands in for a bound kernel (kernels/_launch.py BoundKernel, as the launch plans call
    it): launching does nothing, except writing the "every target is in bounds" flag (the
    tensor argument at ``ok_index``: the forward kernel's, with one program, or the finalize's)."""

    def __init__(self, ok_index: int | None = None) -> None:
        self.ok_index = ok_index

    def launch(self, programs, args, constants, num_warps, grid_1=1, grid_2=1) -> None:
        if self.ok_index is not None:
            args[self.ok_index].fill_(1)

    def planned(self, fixed, constants, num_warps):
        def launch(programs, leading, grid_1=1, grid_2=1):
            self.launch(programs, leading, constants, num_warps)

        return launch


def _measure(fn, leaves):
    start = time.perf_counter()
    with LiveBytes() as live, KernelTrace() as kernels, TorchTrace() as aten:
        loss = fn()
        grads = torch.autograd.grad(loss, leaves)
    return live.peak_excluding(grads), kernels, aten, time.perf_counter() - start


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", nargs="*", type=int, default=[4096, 256, 32000])
    parser.add_argument("--real", action="store_true", help="run fused_ops' real kernels (hours in the interpreter)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args(argv)
    n, d, v = args.shape
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    x = torch.randn(n, d, dtype=dtype, requires_grad=True)
    w = (torch.randn(v, d) / d**0.5).to(dtype).requires_grad_()
    target = torch.randint(0, v, (n,))
    logits = n * v * x.element_size()
    rows = []

    def add(name, fn, kernels_note=""):
        extra, kernels, aten, seconds = _measure(fn, [x, w])
        launches = kernels.launch_count() or aten.kernel_count()
        moved = kernels.bytes_moved or aten.bytes_moved
        rows.append((name, extra, launches, moved, seconds, kernels_note))
        print(f"{name}: {extra / 1e6:.2f} MB in {seconds:.1f} s", file=sys.stderr, flush=True)

    add("eager torch (options=None)", lambda: F.linear_cross_entropy(x, w, target))
    options = torch.nn.LinearCrossEntropyOptions()
    add("torch chunked, default options", lambda: F.linear_cross_entropy(x, w, target, options=options))
    aspect = torch.nn.LinearCrossEntropyOptions(chunking_method="aspect_ratio", acc_policy="accurate")
    add(
        "torch chunked, aspect_ratio (Liger's chunk size)",
        lambda: F.linear_cross_entropy(x, w, target, options=aspect),
    )
    if not args.real:
        # The launch plans bind these module globals when they are made (at the first call).
        lce._FORWARD = _NoLaunch(ok_index=8)
        lce._FINALIZE = _NoLaunch(ok_index=5)
        lce._GRAD_INPUT = _NoLaunch()
        lce._GRAD_WEIGHT = _NoLaunch()
    add("fused_ops", lambda: fused_ops.linear_cross_entropy(x, w, target))

    model = lce.modeled_traffic(n, d, v, dtype)
    fused_bytes = model["forward"] + model["grad_input"] + model["grad_weight"]
    print(f"\nN = {n}, D = {d}, V = {v}, {args.dtype}; logits {logits / 1e6:.1f} MB", end="")
    print(f"; 1% of them {logits / 1e8:.2f} MB\n")
    print("| path | extra memory | % of logits | launches / aten kernels | bytes moved | matmul FLOPs |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, extra, launches, moved, _, _ in rows:
        fused = name == "fused_ops"
        if fused:
            launches, moved = 4, fused_bytes
        flops = (10 if fused else 6) * n * v * d
        moved_text = f"{moved / 1e9:.2f} GB" + (" (modeled, no cache)" if fused else "")
        if name.startswith("torch chunked"):
            moved_text, launches = "n/a", "n/a"
        print(
            f"| {name} | {extra / 1e6:.2f} MB | {extra / logits * 100:.3f}% | {launches} | {moved_text} | "
            f"{flops / 1e9:.1f} G |"
        )
    print(f"\nminimum bytes (read x and W once each way, write both gradients): {model['minimum'] / 1e6:.1f} MB")
    print(f"matmul minimum FLOPs (forward + 2 gradient products): {6 * n * v * d / 1e9:.1f} G")
    if not args.real:
        print("fused_ops memory measured with its kernels stubbed out (they allocate nothing); see the docstring")


if __name__ == "__main__":
    main(sys.argv[1:])
