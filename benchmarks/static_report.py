"""Static GPU report: registers, spills, shared memory and vectorized accesses of every kernel.

Without a GPU, a kernel's register pressure and memory instructions can still be read
from its ahead-of-time compilation. This module records the launches that the op and
optimizer cases of the benchmark files make (:data:`traffic_report.OP_CASES`, under
Triton's interpreter, with the sizes and so the divisibility real calls have), compiles
each distinct one for sm_90 with :func:`aot.compile_launch`, and reads:

- registers per thread, local memory (where spills go) and the stack, from the cubin with
  the ``cuobjdump --dump-resource-usage`` shipped in the Triton wheel;
- spill stores and loads, from the ``ptxas -v`` log of that same compilation (its register
  count must agree with cuobjdump's);
- shared memory, from Triton's metadata (the dynamic allocation each launch requests);
- the global loads and stores in the PTX (``ld.global``/``st.global``), by width:
  ``.v4.b32`` is a 128-bit vector access, a bare ``.b32`` a scalar one.

Recording needs ``TRITON_INTERPRET=1`` and compiling needs it unset (the interpreter
patches ``triton.language`` for the rest of its process), so each runs in its own
process (:mod:`interpreter`); :func:`main` starts whichever it is not in.

    python benchmarks/static_report.py --out-dir docs      # writes docs/static.md; or: make report
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import aot
import interpreter
import torch
import traffic_report
from harness import COLS, DTYPES, make_parameters

from fused_ops import _dispatch
from fused_ops.profiling import KernelTrace

SCRIPT = Path(__file__).resolve()
ARCH = 90
# Shapes the kernels are recorded at: rows x cols of the report's cases. COLS columns
# make every element count a multiple of 16, so Triton specializes the sizes as
# divisible and can vectorize; COLS - 1 shows what an odd size gets.
DIVISIBLE_SHAPE = (4, COLS)
ODD_SHAPE = (3, COLS - 1)
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")
_GLOBAL_ACCESS = re.compile(r"\b(ld|st)\.global((?:\.[\w:]+)+)")


@dataclasses.dataclass
class KernelReport:
    """What the compiler made of one launch signature."""

    kernel: str
    used_by: list[str]
    ok: bool
    error: str = ""
    registers: int = 0
    local_bytes: int = 0
    stack_bytes: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    shared_bytes: int = 0
    num_warps: int = 0
    loads: dict[int, int] = dataclasses.field(default_factory=dict)  # access width in bits -> count
    stores: dict[int, int] = dataclasses.field(default_factory=dict)

    @property
    def spills(self) -> bool:
        return bool(self.local_bytes or self.spill_stores or self.spill_loads)

    @property
    def vectorized(self) -> str:
        """Whether the widest global load and store are vector accesses (64 bits or more).

        "yes" when both are, "loads only" or "stores only" when one is, "no" otherwise.
        """
        loads = max(self.loads, default=0) >= 64
        stores = max(self.stores, default=0) >= 64
        return {(True, True): "yes", (True, False): "loads only", (False, True): "stores only"}.get(
            (loads, stores), "no"
        )

    @staticmethod
    def describe_accesses(accesses: dict[int, int]) -> str:
        """``{128: 4}`` -> ``"128-bit ×4"``, widest first."""
        if not accesses:
            return "none"
        return ", ".join(f"{bits}-bit ×{count}" for bits, count in sorted(accesses.items(), reverse=True))


def global_accesses(ptx: str) -> tuple[dict[int, int], dict[int, int]]:
    """Count the global loads and stores in PTX by access width in bits.

    Args:
        ptx: PTX source.

    Returns:
        ``(loads, stores)``, each mapping a width in bits (vector length × element bits)
        to the number of such instructions.

    Example:
        >>> global_accesses("ld.global.v4.b32 {%r1, %r2, %r3, %r4}, [%rd1];")
        ({128: 1}, {})
    """
    loads: dict[int, int] = {}
    stores: dict[int, int] = {}
    for kind, suffix in _GLOBAL_ACCESS.findall(ptx):
        parts = suffix.strip(".").split(".")
        vector = next((int(p[1:]) for p in parts if re.fullmatch(r"v\d", p)), 1)
        element = next((int(p[1:]) for p in parts if re.fullmatch(r"[bfsu]\d+", p)), 0)
        counts = loads if kind == "ld" else stores
        counts[vector * element] = counts.get(vector * element, 0) + 1
    return loads, stores


def analyze(launch: dict, arch: int = ARCH) -> KernelReport:
    """Compile one recorded launch for sm_``arch`` and read its resources.

    Runs in a process without TRITON_INTERPRET, with ``TRITON_ALWAYS_COMPILE=1`` and
    ``TRITON_DUMP_PTXAS_LOG=1`` (see :func:`compile_all`), so that Triton's own ptxas
    run prints its ``-v`` log here instead of a cache hit skipping it.
    """
    result = KernelReport(kernel=launch["kernel"], used_by=launch.get("used_by", []), ok=True)
    ptxas_log = io.StringIO()
    with contextlib.redirect_stdout(ptxas_log):
        compiled = aot.compile_launch(launch, arch)
    result.shared_bytes = compiled.metadata.shared
    result.num_warps = compiled.metadata.num_warps
    result.loads, result.stores = global_accesses(compiled.asm["ptx"])
    result.registers, result.stack_bytes, _, result.local_bytes = aot.resource_usage(compiled)
    spills = _SPILLS.search(ptxas_log.getvalue())
    registers = _REGISTERS.search(ptxas_log.getvalue())
    if spills is None or registers is None:
        raise RuntimeError(f"no register or spill line in the ptxas -v log:\n{ptxas_log.getvalue()}")
    result.spill_stores, result.spill_loads = map(int, spills.groups())
    if int(registers.group(1)) != result.registers:  # the same compile: they must agree
        raise RuntimeError(f"cuobjdump says {result.registers} registers, ptxas -v says {registers.group(1)}")
    return result


def record(shapes: Sequence[tuple[int, int]] = (DIVISIBLE_SHAPE,), dtypes: Sequence[str] = ("float32", "bfloat16")):
    """The distinct launches of every case, forward and backward (needs TRITON_INTERPRET=1).

    Returns a list of launch records for :func:`aot.compile_launch`, each with a
    ``used_by`` list naming the cases (op, mode, dtype, shape) that made it.
    """
    if not _dispatch.TRITON_INTERPRETED:
        raise RuntimeError("recording launches needs TRITON_INTERPRET=1 before fused_ops is imported")
    distinct: dict[str, dict] = {}

    def keep(trace: KernelTrace, label: str) -> None:
        for launch in trace.launches:
            entry = aot.launch_record(launch)
            entry = distinct.setdefault(aot.launch_key(entry), {**entry, "used_by": []})
            if label not in entry["used_by"]:
                entry["used_by"].append(label)

    for rows, cols in shapes:
        for case in traffic_report.OP_CASES:
            for dtype in dtypes:
                inputs = case.inputs(rows, cols, DTYPES[dtype])
                with KernelTrace() as forward:
                    output = case.fused(*inputs)
                with KernelTrace() as backward:
                    output.backward(torch.ones_like(output))
                keep(forward, f"{case.name} forward {dtype} {rows}×{cols}")
                keep(backward, f"{case.name} backward {dtype} {rows}×{cols}")
        for case in traffic_report.OPTIMIZER_CASES:
            optimizer = case.build("fused_ops", make_parameters(2, rows, cols, torch.float32))
            with KernelTrace() as step:
                optimizer.step()
            keep(step, f"{case.name} step float32 2×{rows}×{cols}")
    return list(distinct.values())


def compile_all(launches: list[dict], arch: int = ARCH) -> list[KernelReport]:
    """:func:`analyze` every launch in a child process where TRITON_INTERPRET is unset."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch, "launches.json")
        path.write_text(json.dumps(launches))
        done = interpreter.run_python(
            [str(SCRIPT), "--compile", str(path), "--arch", str(arch)],
            interpret=False,
            # Compile for real (no cache hit) and let Triton print ptxas's -v log (see analyze).
            overrides={"TRITON_ALWAYS_COMPILE": "1", "TRITON_DUMP_PTXAS_LOG": "1"},
            capture_output=True,
            text=True,
        )
    reports = [KernelReport(**json.loads(line)) for line in done.stdout.splitlines() if line.startswith("{")]
    for report_ in reports:  # JSON keys are strings
        report_.loads = {int(k): v for k, v in report_.loads.items()}
        report_.stores = {int(k): v for k, v in report_.stores.items()}
    if len(reports) != len(launches):
        raise RuntimeError(f"the compiler process stopped after {len(reports)} of {len(launches)}:\n{done.stderr}")
    return reports


def _compile_main(path: str, arch: int) -> int:
    failures = 0
    for launch in json.loads(Path(path).read_text()):
        try:
            result = analyze(launch, arch)
        except Exception as error:  # report every kernel, not just the first failure
            failures += 1
            result = KernelReport(launch["kernel"], launch.get("used_by", []), ok=False, error=f"{error}"[-2000:])
        print(json.dumps(dataclasses.asdict(result)), flush=True)
    return 1 if failures else 0


def render_markdown(reports: list[KernelReport], arch: int = ARCH) -> str:
    """The static report as Markdown: one row per compiled kernel signature."""
    lines = [
        f"# Static GPU report (sm_{arch}, compiled ahead of time, no GPU needed)",
        "",
        "Generated by `make report` (`python benchmarks/static_report.py`); do not edit by hand.",
        "Each row is one kernel signature as the report's cases launch it. Registers, stack and local",
        "memory come from `cuobjdump --dump-resource-usage` on the cubin, spills from the same compile's",
        "`ptxas -v` log, shared memory from Triton (the dynamic allocation a launch requests). Global",
        "accesses are counted in the PTX by width: 128-bit means `ld.global.v4.b32`-style vector",
        "instructions, and *vectorized* says whether the widest load and store are vector accesses",
        "(64 bits or more). Shapes with 4096 columns make every size a multiple of 16, which Triton's",
        "specialization needs to vectorize masked accesses; the 4095-column rows show what other sizes get.",
        "",
        "| kernel | used by | regs/thread | spills (local, stores/loads) | shared B | warps | vectorized "
        "| global loads | global stores |",
        "|---|---|--:|---|--:|--:|---|---|---|",
    ]
    for r in reports:
        used_by = "<br>".join(r.used_by[:4]) + (f"<br>+{len(r.used_by) - 4} more" if len(r.used_by) > 4 else "")
        if not r.ok:
            lines.append(f"| `{r.kernel}` | {used_by} | compile failed: {r.error.splitlines()[-1][:200]} |||||||")
            continue
        spills = "none" if not r.spills else f"{r.local_bytes} B local, {r.spill_stores}/{r.spill_loads} B"
        lines.append(
            f"| `{r.kernel}` | {used_by} | {r.registers} | {spills} | {r.shared_bytes} | {r.num_warps} "
            f"| {r.vectorized} | {KernelReport.describe_accesses(r.loads)} "
            f"| {KernelReport.describe_accesses(r.stores)} |"
        )
    spilling = [r.kernel for r in reports if r.ok and r.spills]
    lines += ["", f"Kernels that spill: {', '.join(sorted(set(spilling))) if spilling else 'none'}.", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Options of ``python benchmarks/static_report.py``."""
    parser = argparse.ArgumentParser(
        prog="python benchmarks/static_report.py",
        description="Compile every kernel as the report's cases launch it for a GPU target and report registers, "
        "spills, shared memory and vectorized global accesses.",
    )
    parser.add_argument("--out-dir", default="docs", help="where static.md goes (default: %(default)s)")
    parser.add_argument("--arch", type=int, default=ARCH, help="compute capability (default: %(default)s)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=sorted(DTYPES))
    parser.add_argument("--no-odd-shape", action="store_true", help=f"skip the {ODD_SHAPE[0]}×{ODD_SHAPE[1]} launches")
    parser.add_argument("--record", metavar="PATH", help=argparse.SUPPRESS)  # child process: record to PATH
    parser.add_argument("--compile", metavar="PATH", help=argparse.SUPPRESS)  # child process: compile PATH
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Record, compile and report; returns 1 when a kernel fails to compile or spills.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when None).

    Returns:
        The exit status.

    Example:
        >>> main(["--out-dir", "docs"])  # doctest: +SKIP
    """
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.compile:
        return _compile_main(args.compile, args.arch)
    shapes = [DIVISIBLE_SHAPE] if args.no_odd_shape else [DIVISIBLE_SHAPE, ODD_SHAPE]
    if args.record:
        Path(args.record).write_text(json.dumps(record(shapes, args.dtypes)))
        return 0
    if _dispatch.TRITON_INTERPRETED:
        launches = record(shapes, args.dtypes)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch, "launches.json")
            child = [str(SCRIPT), "--record", str(path), "--dtypes", *args.dtypes]
            child += ["--no-odd-shape"] if args.no_odd_shape else []
            interpreter.run_python(child, interpret=True, check=True)
            launches = json.loads(path.read_text())
    reports = compile_all(launches, args.arch)
    markdown = render_markdown(reports, args.arch)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "static.md").write_text(markdown)
    print(markdown)
    print(f"wrote {out_dir / 'static.md'}")
    return 1 if any(not r.ok or r.spills for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
