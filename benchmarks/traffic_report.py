"""The traffic report: bytes, launches and modeled GPU time per op and optimizer step.

Memory-bound kernels take about (bytes moved) ÷ (bandwidth) plus a fixed cost per
launch, and both figures can be counted exactly on any machine. For every op case and
every dtype, in forward, backward and full (forward then backward) mode, and for every
optimizer case, the report counts:

- fused_ops: the bytes every Triton launch loads and stores, under Triton's interpreter
  (:class:`fused_ops.profiling.KernelTrace`), plus any aten op the fused path runs
  (:class:`fused_ops.profiling.TorchTrace`);
- eager torch: the kernels and bytes of its aten ops, as CUDA runs them (TorchTrace);
- the minimum: each input read once, each output written once
  (:func:`fused_ops.profiling.minimum_bytes`).

The cases are the ``CASES`` of every ``benchmarks/bench_<family>.py`` (see harness.py),
collected into :data:`OP_CASES` and :data:`OPTIMIZER_CASES`; ``tests/test_traffic.py``
checks that every public op and optimizer has one.

Ops are counted at 1, 2 and 4 rows of :data:`harness.COLS` columns and extrapolated to
:data:`LARGE_ROWS` rows along the line through those points; the report checks that the
three points lie on one line (traffic affine in rows) and marks any figure that does not.
A kernel whose grid stops growing past some size (a reduction with a capped number of
partial sums) moves a little less than the line says, so its figure is an upper bound.
Times are **modeled**, never measured: ``bytes ÷ bandwidth + launches × LAUNCH_US``
with the bandwidths in :data:`GPUS`.

    python benchmarks/traffic_report.py --out-dir docs     # or: make report

writes ``traffic.md`` and ``traffic.png``. ``make report`` also runs
``benchmarks/static_report.py`` (``static.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import interpreter
import torch
from harness import COLS, DTYPES, MODES, OPTIMIZER_PROVIDERS, OpCase, OptimizerCase, make_parameters

from fused_ops import _dispatch
from fused_ops.profiling import KernelTrace, TorchTrace

SCRIPT = Path(__file__).resolve()
BENCHMARKS_DIR = SCRIPT.parent
# The report reads from elementwise ops to reductions, losses and optimizers. A family
# not listed comes after these, alphabetically: adding one needs no edit here.
FAMILY_ORDER = ("activations", "softmax", "mse", "cross_entropy", "adam", "sgd", "clip_grad_norm")


def families() -> list[str]:
    """Every op family with a ``benchmarks/bench_<family>.py``, in the report's order."""
    found = {path.stem.removeprefix("bench_") for path in BENCHMARKS_DIR.glob("bench_*.py")}
    return sorted(found, key=lambda f: (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER), f))


def collect_cases() -> tuple[tuple[OpCase, ...], tuple[OptimizerCase, ...]]:
    """The ``CASES`` of every benchmark file: ``(op cases, optimizer cases)``, in :func:`families` order."""
    cases = [case for family in families() for case in importlib.import_module(f"bench_{family}").CASES]
    return tuple(c for c in cases if isinstance(c, OpCase)), tuple(c for c in cases if isinstance(c, OptimizerCase))


OP_CASES, OPTIMIZER_CASES = collect_cases()
MEASURED_ROWS = (1, 2, 4)
SMALL_ROWS = 1  # 1 × 4096: launch overhead dominates
LARGE_ROWS = 8192  # 8192 × 4096 = 33.5M elements: bandwidth dominates
# The optimizer workload: OPTIMIZER_TENSORS parameters of rows × COLS each.
OPTIMIZER_TENSORS = 16
OPTIMIZER_LARGE_ROWS = 256  # 16 × 256 × 4096 = 16.8M parameters


@dataclasses.dataclass(frozen=True)
class Gpu:
    """A GPU as the time model sees it: DRAM bandwidth in TB/s."""

    name: str
    tb_per_s: float


GPUS = (Gpu("H100", 3.35), Gpu("A100", 2.0))
# The cost of one launch in the model: the usual gap between dependent small kernels
# launched from eager PyTorch (CPU dispatch plus launch latency) is a few microseconds.
LAUNCH_US = 4.0


def modeled_us(bytes_moved: float, launches: float, gpu: Gpu) -> float:
    """Modeled time in µs: ``bytes ÷ bandwidth + launches × LAUNCH_US``.

    Args:
        bytes_moved: bytes read plus written.
        launches: kernel launches.
        gpu: the bandwidth to assume.

    Returns:
        Microseconds, a model and not a measurement.

    Example:
        >>> round(modeled_us(3.35e9, 1, GPUS[0]), 1)  # 3.35 GB on an H100, one launch
        1004.0
    """
    return bytes_moved / (gpu.tb_per_s * 1e12) * 1e6 + launches * LAUNCH_US


def host_step_tensors(provider: str, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The step counters that torch's for-loop and foreach Adam keep on the host."""
    if provider not in ("torch for-loop", "torch foreach"):
        return []
    return [state["step"] for state in optimizer.state.values() if "step" in state]


@dataclasses.dataclass(frozen=True)
class Traffic:
    """Bytes moved and kernels launched; ``exact`` is False for an extrapolation off its line."""

    bytes: float
    launches: float
    exact: bool = True

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.bytes + other.bytes, self.launches + other.launches, self.exact and other.exact)


@dataclasses.dataclass
class Traced:
    """What one traced call ran: total traffic and a per-kernel breakdown (name -> launches, bytes)."""

    traffic: Traffic
    kernels: dict[str, tuple[int, int]]


def trace(fn: Callable[[], object], host_tensors: Sequence[torch.Tensor] = ()) -> tuple[object, Traced]:
    """Run ``fn`` under KernelTrace and TorchTrace; return its result and what it moved.

    Triton launches (interpreted) and aten ops both count, so a fused path's own aten
    work (e.g. a reduction of partial sums in torch) is not hidden.
    """
    with KernelTrace() as triton_trace, TorchTrace(host_tensors) as torch_trace:
        result = fn()
    kernels: dict[str, tuple[int, int]] = {}
    for launch in triton_trace.launches:
        count, moved = kernels.get(launch.kernel, (0, 0))
        kernels[launch.kernel] = (count + 1, moved + launch.bytes_moved)
    for name, op in torch_trace.by_op().items():
        kernels[name] = (op.kernels, op.bytes_moved)
    traffic = Traffic(
        triton_trace.bytes_moved + torch_trace.bytes_moved, triton_trace.launch_count() + torch_trace.kernel_count()
    )
    return result, Traced(traffic, kernels)


@dataclasses.dataclass
class OpTraffic:
    """One op at one size and dtype: per mode, fused and eager traffic and the minimum bytes."""

    elements: int
    fused: dict[str, Traced]
    eager: dict[str, Traced]
    minimum: dict[str, int]


def _forward_backward(call: Callable, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, Traced, Traced]:
    output, forward = trace(lambda: call(*inputs))
    # A loss is backpropagated as training does it, `loss.backward()` (grad_output 1); any
    # other op with a random grad_output.
    if output.dim() == 0:
        grad_output = torch.ones((), dtype=output.dtype)
    else:
        grad_output = torch.randn(output.shape, generator=torch.Generator().manual_seed(1)).to(output.dtype)
    _, backward = trace(lambda: output.backward(grad_output))
    return output, forward, backward


def _with_full(forward: Traced, backward: Traced) -> dict[str, Traced]:
    kernels = dict(forward.kernels)
    for name, (count, moved) in backward.kernels.items():
        old_count, old_moved = kernels.get(name, (0, 0))
        kernels[name] = (old_count + count, old_moved + moved)
    return {"forward": forward, "backward": backward, "full": Traced(forward.traffic + backward.traffic, kernels)}


def measure_op(case: OpCase, dtype: torch.dtype, rows: int, cols: int = COLS) -> OpTraffic:
    """Traffic of ``case`` at ``(rows, cols)`` in ``dtype``: fused (interpreted) and eager, every mode.

    The fused figures need ``TRITON_INTERPRET=1`` (set before fused_ops is imported);
    without it the fused path runs on the eager reference and KernelTrace sees nothing.
    """
    fused_inputs = case.inputs(rows, cols, dtype)
    output, fused_forward, fused_backward = _forward_backward(case.fused, fused_inputs)
    eager_inputs = case.inputs(rows, cols, dtype)
    _, eager_forward, eager_backward = _forward_backward(case.eager, eager_inputs)
    return OpTraffic(
        elements=fused_inputs[0].numel(),
        fused=_with_full(fused_forward, fused_backward),
        eager=_with_full(eager_forward, eager_backward),
        minimum={mode: case.minimum(mode, fused_inputs, output.detach()) for mode in MODES},
    )


def measure_optimizer(
    case: OptimizerCase, provider: str, tensors: int, rows: int, cols: int = COLS, dtype=torch.float32
) -> tuple[Traced, int, int]:
    """Traffic of one optimizer step after the first (state exists): (traced, minimum bytes, parameters)."""
    params = make_parameters(tensors, rows, cols, dtype)
    optimizer = case.build(provider, params)
    step = case.step(provider, optimizer)
    step()
    _, traced = trace(step, host_step_tensors(provider, optimizer))
    return traced, case.minimum(params), sum(p.numel() for p in params)


def extrapolate_series(series: dict[int, Traffic], rows: int) -> Traffic:
    """:func:`extrapolate` of traffic measured at several row counts (rows -> traffic)."""
    return extrapolate({r: t.bytes for r, t in series.items()}, {r: t.launches for r, t in series.items()}, rows)


def extrapolate(points: dict[int, float], launches: dict[int, int], rows: int) -> Traffic:
    """The traffic at ``rows`` on the line through the measured ``points`` (rows -> bytes).

    ``exact`` is True when every point lies on that line and the launch count is the
    same at every size, so the extrapolation is exact for traffic affine in rows.
    """
    (r1, b1), (r2, b2), (r3, b3) = sorted(points.items())
    on_line = (b2 - b1) * (r3 - r2) == (b3 - b2) * (r2 - r1)
    same_launches = len(set(launches.values())) == 1
    slope = (b3 - b2) / (r3 - r2)
    return Traffic(b3 + slope * (rows - r3), launches[r3], on_line and same_launches)


@dataclasses.dataclass
class OpRow:
    """One row of the report: an op, dtype and mode at the small and the large size."""

    op: str
    dtype: str
    mode: str
    small: dict[str, Traffic]  # provider ("fused_ops", "eager", "minimum") -> traffic at SMALL_ROWS
    large: dict[str, Traffic]  # the same, extrapolated to LARGE_ROWS
    small_elements: int
    large_elements: int
    fused_kernels: dict[str, tuple[int, int]]  # at the largest measured size
    eager_kernels: dict[str, tuple[int, int]]

    def per_element(self, provider: str) -> float:
        return self.large[provider].bytes / self.large_elements


def op_rows(case: OpCase, dtype_name: str) -> list[OpRow]:
    """Measure ``case`` at :data:`MEASURED_ROWS` and build its report rows, one per mode."""
    measured = {rows: measure_op(case, DTYPES[dtype_name], rows) for rows in MEASURED_ROWS}
    largest = measured[max(MEASURED_ROWS)]
    rows_out = []
    for mode in MODES:
        series = {
            "fused_ops": {r: m.fused[mode].traffic for r, m in measured.items()},
            "eager": {r: m.eager[mode].traffic for r, m in measured.items()},
            "minimum": {r: Traffic(m.minimum[mode], 0) for r, m in measured.items()},
        }
        rows_out.append(
            OpRow(
                op=case.name,
                dtype=dtype_name,
                mode=mode,
                small={p: s[SMALL_ROWS] for p, s in series.items()},
                large={p: extrapolate_series(s, LARGE_ROWS) for p, s in series.items()},
                small_elements=measured[SMALL_ROWS].elements,
                large_elements=LARGE_ROWS * COLS,
                fused_kernels=largest.fused[mode].kernels,
                eager_kernels=largest.eager[mode].kernels,
            )
        )
    return rows_out


@dataclasses.dataclass
class OptimizerRow:
    """One optimizer and provider: traffic per step at the small and the large workload."""

    optimizer: str
    provider: str
    small: Traffic
    large: Traffic
    small_minimum: int
    large_minimum: int
    small_params: int
    large_params: int


def optimizer_rows(case: OptimizerCase) -> list[OptimizerRow]:
    """Every provider of ``case``: torch's counted at both sizes, fused_ops extrapolated like the ops."""
    rows_out = []
    for provider in OPTIMIZER_PROVIDERS:
        if provider == "fused_ops":
            measured = {r: measure_optimizer(case, provider, OPTIMIZER_TENSORS, r) for r in MEASURED_ROWS}
            large = extrapolate_series({r: m[0].traffic for r, m in measured.items()}, OPTIMIZER_LARGE_ROWS)
            small = measured[SMALL_ROWS]
        else:
            # multi_tensor_apply's launches grow in steps with size: count the large size itself.
            small = measure_optimizer(case, provider, OPTIMIZER_TENSORS, SMALL_ROWS)
            large = measure_optimizer(case, provider, OPTIMIZER_TENSORS, OPTIMIZER_LARGE_ROWS)[0].traffic
        large_params = OPTIMIZER_TENSORS * OPTIMIZER_LARGE_ROWS * COLS
        rows_out.append(
            OptimizerRow(
                optimizer=case.name,
                provider=provider,
                small=small[0].traffic,
                large=large,
                small_minimum=small[1],
                large_minimum=small[1] // small[2] * large_params,
                small_params=small[2],
                large_params=large_params,
            )
        )
    return rows_out


def ratio_text(numerator: float, denominator: float) -> str:
    """``numerator ÷ denominator`` as the report prints it, e.g. ``"1.40×"``."""
    return f"{numerator / denominator:.2f}×" if denominator else "–"


def _bytes(traffic: Traffic, elements: int) -> str:
    return f"{traffic.bytes / elements:.2f}" + ("" if traffic.exact else " ≈")


def _us(traffic: Traffic, gpu: Gpu) -> str:
    return f"{modeled_us(traffic.bytes, traffic.launches, gpu):,.1f}"


def render_markdown(op_rows_: list[OpRow], optimizer_rows_: list[OptimizerRow]) -> str:
    """The whole report as Markdown: traffic and modeled-time tables, then what each path runs."""
    large = f"{LARGE_ROWS} × {COLS}"
    small = f"{SMALL_ROWS} × {COLS}"
    gpus = " and ".join(f"{g.name} ({g.tb_per_s} TB/s)" for g in GPUS)
    cases = ", ".join(f"`{c.call}`" for c in OP_CASES if any(r.op == c.name for r in op_rows_))
    lines = [
        "# Memory traffic: fused_ops against eager PyTorch",
        "",
        "Generated by `make report` (`python benchmarks/traffic_report.py`); do not edit by hand.",
        "",
        "Bytes are counted, not timed: fused_ops from every Triton load and store under Triton's",
        "interpreter, eager torch from its aten ops as CUDA runs them (`fused_ops.profiling.TorchTrace`,",
        "whose docstring states each approximation), and the minimum as each input read once and",
        "each output written once. *full* is forward then backward (two separate ops in training,",
        "so its minimum is the sum). Bytes per element are at",
        f"{large}, extrapolated along the line through 1, 2 and 4 rows (`≈` marks a figure whose",
        "points were not on one line). A grid that stops growing past some size (MSE's reduction caps",
        "its partial sums at 1024) moves a little less than the line says: those figures are upper bounds.",
        "",
        f"**Modeled** times (µs) are not measurements: bytes ÷ bandwidth on an {gpus}, plus",
        f"{LAUNCH_US:g} µs per launch.",
        "",
        f"Cases, with x of shape rows × {COLS}: {cases}.",
        "",
    ]
    for dtype in dict.fromkeys(r.dtype for r in op_rows_):
        lines += [
            f"## Ops, {dtype}, at {large}",
            "",
            "| op | mode | fused_ops B/elem | eager B/elem | minimum B/elem | fused ÷ minimum | eager ÷ fused "
            "| launches fused / eager | " + " | ".join(f"{g.name} µs fused / eager (modeled)" for g in GPUS) + " |",
            "|---|---|--:|--:|--:|--:|--:|--:|" + "--:|" * len(GPUS),
        ]
        for row in (r for r in op_rows_ if r.dtype == dtype):
            fused, eager, minimum = row.large["fused_ops"], row.large["eager"], row.large["minimum"]
            lines.append(
                f"| {row.op} | {row.mode} | {_bytes(fused, row.large_elements)} | {_bytes(eager, row.large_elements)} "
                f"| {_bytes(minimum, row.large_elements)} | {ratio_text(fused.bytes, minimum.bytes)} "
                f"| {ratio_text(eager.bytes, fused.bytes)} | {fused.launches:g} / {eager.launches:g} | "
                + " | ".join(f"{_us(fused, g)} / {_us(eager, g)}" for g in GPUS)
                + " |"
            )
        lines.append("")
    full_rows = [r for r in op_rows_ if r.mode == "full"]
    if full_rows:
        lines += [
            f"## Small inputs ({small}, forward + backward): launches dominate",
            "",
            "| op | dtype | launches fused / eager | bytes fused / eager | "
            + " | ".join(f"{g.name} µs fused / eager (modeled)" for g in GPUS)
            + " |",
            "|---|---|--:|--:|" + "--:|" * len(GPUS),
        ]
        for row in full_rows:
            fused, eager = row.small["fused_ops"], row.small["eager"]
            lines.append(
                f"| {row.op} | {row.dtype} | {fused.launches:g} / {eager.launches:g} "
                f"| {fused.bytes:,.0f} / {eager.bytes:,.0f} | "
                + " | ".join(f"{_us(fused, g)} / {_us(eager, g)}" for g in GPUS)
                + " |"
            )
        lines.append("")
    if optimizer_rows_:
        large_params = optimizer_rows_[0].large_params
        lines += [
            f"## Optimizer step, float32, {OPTIMIZER_TENSORS} tensors, {large_params / 1e6:.1f}M parameters",
            "",
            "Bytes per parameter per step (after the first, once state exists). torch's for-loop and",
            "foreach implementations keep the step counters on the host, which costs no GPU traffic.",
            "",
            "| optimizer | provider | B/param | minimum B/param | ÷ minimum | launches | "
            + " | ".join(f"{g.name} µs (modeled)" for g in GPUS)
            + f" | launches at {optimizer_rows_[0].small_params:,} params |",
            "|---|---|--:|--:|--:|--:|" + "--:|" * len(GPUS) + "--:|",
        ]
        for row in optimizer_rows_:
            lines.append(
                f"| {row.optimizer} | {row.provider} | {_bytes(row.large, row.large_params)} "
                f"| {row.large_minimum / row.large_params:.2f} | {ratio_text(row.large.bytes, row.large_minimum)} "
                f"| {row.large.launches:g} | "
                + " | ".join(_us(row.large, g) for g in GPUS)
                + f" | {row.small.launches:g} |"
            )
        lines.append("")
    lines += [
        "## Above the minimum",
        "",
        f"fused_ops forward and backward passes that move more than the minimum at {large} (the traffic",
        "tests fail any above 5% at smaller sizes); the excess is what the kernels read or write",
        "beyond each input once and each output once (partial sums, saved statistics, a scalar re-read per",
        "program).",
        "",
    ]
    above = [r for r in op_rows_ if r.mode != "full" and r.large["fused_ops"].bytes > r.large["minimum"].bytes]
    for row in sorted(above, key=lambda r: r.large["minimum"].bytes / r.large["fused_ops"].bytes):
        fused, minimum = row.large["fused_ops"].bytes, row.large["minimum"].bytes
        lines.append(
            f"- {row.op} {row.mode} ({row.dtype}): {fused / minimum - 1:.2%} more, "
            f"{(fused - minimum) / row.large_elements:.3f} B per element."
        )
    if not above:
        lines.append("None: every fused forward and backward moves exactly the minimum.")
    lines.append("")
    reference_dtype = next(iter(dict.fromkeys(r.dtype for r in op_rows_)), None)
    if reference_dtype:
        lines += [
            f"## What runs ({reference_dtype}, {max(MEASURED_ROWS)} × {COLS}: kernel × launches, bytes per element)",
            "",
            "| op | mode | fused_ops | eager torch |",
            "|---|---|---|---|",
        ]
        for row in (r for r in op_rows_ if r.dtype == reference_dtype and r.mode != "full"):
            elements = max(MEASURED_ROWS) * COLS
            lines.append(
                f"| {row.op} | {row.mode} | {_kernel_list(row.fused_kernels, elements)} "
                f"| {_kernel_list(row.eager_kernels, elements)} |"
            )
        lines.append("")
    return "\n".join(lines)


def _kernel_list(kernels: dict[str, tuple[int, int]], elements: int) -> str:
    if not kernels:
        return "nothing"
    return "<br>".join(f"`{name}` × {count}, {moved / elements:.2f}" for name, (count, moved) in kernels.items())


def render_chart(op_rows_: list[OpRow], optimizer_rows_: list[OptimizerRow], path: Path) -> None:
    """A PNG: bytes per element of forward + backward per op and dtype, and bytes per parameter per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = list(dict.fromkeys(r.dtype for r in op_rows_))
    panels = len(dtypes) + (1 if optimizer_rows_ else 0)
    figure, axes = plt.subplots(1, max(panels, 1), figsize=(5.4 * max(panels, 1), 5.0), squeeze=False)
    colors = {
        "minimum": "#9e9e9e",
        "fused_ops": "#1f77b4",
        "eager": "#d62728",
        "torch for-loop": "#d62728",
        "torch foreach": "#ff7f0e",
        "torch fused": "#9467bd",
    }
    for axis, dtype in zip(axes[0], dtypes, strict=False):
        rows = [r for r in op_rows_ if r.dtype == dtype and r.mode == "full"]
        positions = range(len(rows))
        for offset, provider in zip((-0.27, 0, 0.27), ("minimum", "fused_ops", "eager"), strict=True):
            values = [r.per_element(provider) for r in rows]
            label = "eager torch" if provider == "eager" else provider
            axis.barh([p + offset for p in positions], values, height=0.26, color=colors[provider], label=label)
        axis.set_yticks(list(positions), [r.op for r in rows])
        axis.invert_yaxis()
        axis.set_xlabel("bytes per element, forward + backward")
        axis.set_title(f"ops, {dtype}, {LARGE_ROWS} × {COLS}")
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)
    if optimizer_rows_:
        axis = axes[0][-1]
        labels = [f"{r.optimizer}, {r.provider}" for r in optimizer_rows_]
        values = [r.large.bytes / r.large_params for r in optimizer_rows_]
        axis.barh(range(len(labels)), values, color=[colors[r.provider] for r in optimizer_rows_])
        minimums = [r.large_minimum / r.large_params for r in optimizer_rows_]
        axis.scatter(minimums, range(len(labels)), marker="|", s=150, color="black", label="minimum", zorder=3)
        axis.set_yticks(range(len(labels)), labels, fontsize=7)
        axis.invert_yaxis()
        axis.set_xlabel("bytes per parameter per step (float32)")
        axis.set_title(f"optimizer step, {optimizer_rows_[0].large_params / 1e6:.1f}M parameters")
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False)
    figure.suptitle("Memory traffic counted per element (fewer is faster on a memory-bound GPU)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    """Options of ``python benchmarks/traffic_report.py``."""
    parser = argparse.ArgumentParser(
        prog="python benchmarks/traffic_report.py",
        description="Count the memory traffic and launches of fused_ops and eager torch per op and optimizer step, "
        "and model H100/A100 time from them.",
    )
    parser.add_argument("--out-dir", default="docs", help="where traffic.md and traffic.png go (default: %(default)s)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=sorted(DTYPES))
    parser.add_argument("--ops", nargs="+", help="only these ops (default: every op case)")
    parser.add_argument("--no-optimizer", action="store_true", help="skip the optimizer step")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_report(args: argparse.Namespace) -> int:
    """Measure, print the Markdown report, and write it with its chart to ``args.out_dir``."""
    from tqdm import tqdm

    cases = [c for c in OP_CASES if args.ops is None or c.name in args.ops]
    optimizer_cases = [] if args.no_optimizer else list(OPTIMIZER_CASES)
    jobs = [(c, d) for c in cases for d in args.dtypes]
    jobs += [(c, None) for c in optimizer_cases]
    op_rows_: list[OpRow] = []
    optimizer_rows_: list[OptimizerRow] = []
    failures = []
    for case, dtype in tqdm(jobs, desc="counting traffic", unit="case", disable=args.no_progress, file=sys.stderr):
        try:
            if isinstance(case, OpCase):
                op_rows_ += op_rows(case, dtype)
            else:
                optimizer_rows_ += optimizer_rows(case)
        except Exception as error:  # one broken op must not hide the others' figures
            failures.append(f"{case.name} {dtype or ''}: {type(error).__name__}: {error}")
    # Rows grouped by dtype, in the registry's op order.
    op_rows_.sort(key=lambda r: (args.dtypes.index(r.dtype), [c.name for c in cases].index(r.op), MODES.index(r.mode)))
    markdown = render_markdown(op_rows_, optimizer_rows_)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "traffic.md").write_text(markdown)
    render_chart(op_rows_, optimizer_rows_, out_dir / "traffic.png")
    print(markdown)
    print(f"wrote {out_dir / 'traffic.md'} and {out_dir / 'traffic.png'}")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python benchmarks/traffic_report.py``; returns the exit status.

    Args:
        argv: the arguments (``sys.argv[1:]`` when None).

    Returns:
        0 when every case was measured, 1 when one failed, 2 without Triton.

    Traffic is counted under Triton's interpreter, so a process without
    ``TRITON_INTERPRET=1`` (for example on a GPU machine) re-runs the report in a child
    process that has it.

    Example:
        >>> main(["--dtypes", "float32", "--no-progress"])  # doctest: +SKIP
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if not _dispatch.TRITON_INTERPRETED:
        if not _dispatch.TRITON_AVAILABLE:
            print("traffic_report: Triton is not installed, so no kernel traffic can be counted", file=sys.stderr)
            return 2
        print("traffic_report: counting traffic under TRITON_INTERPRET=1 in a child process", file=sys.stderr)
        return interpreter.run_python([str(SCRIPT), *argv], interpret=True).returncode
    return run_report(args)


if __name__ == "__main__":
    sys.exit(main())
