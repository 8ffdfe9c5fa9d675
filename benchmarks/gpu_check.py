"""``make gpu-check``: on a machine with a GPU, everything that only a GPU can tell, in one report.

    python benchmarks/gpu_check.py [--out gpu-check]    # writes gpu-check/report.md

1. The whole test suite on CUDA tensors, through compiled Triton kernels (the suite picks
   the GPU by itself; interpreter-only tests run in a CPU subprocess).
2. The pytest-benchmark suites with real timings: every round synchronized, GB/s of the
   fused ops against eager torch and ``torch.compile``.
3. The host-time benchmark (``benchmarks/host_time.py``) on the real driver.

The report (``report.md``) holds: the GPU's name, the versions (torch, Triton, CUDA,
driver), the suite's pass/fail/skip counts and failing tests, a table of each fused
benchmark's measured median time and GB/s next to the modeled time (minimum bytes ÷ the
GPU's peak bandwidth, where that GPU's bandwidth is known) and next to eager torch and
``torch.compile`` on the same case, and the host-time table. Raw outputs sit beside it
(``tests.xml``, ``bench.json``, ``host_time.md``, ``*.log``).

Without a GPU it says so and exits with status 2: nothing here can be measured on a CPU
(``make bench`` and ``make report`` are the CPU-side instruments).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NO_GPU_MESSAGE = (
    "gpu-check needs a CUDA GPU, and torch.cuda.is_available() is False on this machine. "
    "Without a GPU: `make test` (interpreter), `make bench`, `make report`."
)
# Peak DRAM bandwidth in TB/s of the GPUs the modeled figures know, matched by name.
PEAK_BANDWIDTH_TBPS = {
    "H100 SXM": 3.35,
    "H100 80GB HBM3": 3.35,
    "H100 PCIe": 2.0,
    "H200": 4.8,
    "A100-SXM4-80GB": 2.039,
    "A100 80GB PCIe": 1.935,
    "A100-SXM4-40GB": 1.555,
    "A100-PCIE-40GB": 1.555,
    "L4": 0.3,
    "A10G": 0.6,
}
PROVIDERS = ("fused_ops", "torch", "torch.compile")


def peak_bandwidth(gpu_name: str) -> float | None:
    """TB/s of the first known GPU whose name appears in ``gpu_name``, else None."""
    return next((tbps for name, tbps in PEAK_BANDWIDTH_TBPS.items() if name in gpu_name), None)


def suite_counts(junit_xml: Path) -> tuple[dict[str, int], list[str]]:
    """(counts of passed/failed/errors/skipped, failing test ids) from pytest's JUnit XML."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failing = []
    for case in ElementTree.parse(junit_xml).iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None:
            counts["failed"] += 1
            failing.append(test_id)
        elif case.find("error") is not None:
            counts["errors"] += 1
            failing.append(test_id)
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts, failing


def benchmark_rows(bench_json: dict, bandwidth_tbps: float | None) -> list[str]:
    """Markdown rows: per (case, mode, size, dtype) group, fused median and GB/s, modeled, eager, compile."""
    groups: dict[str, dict[str, dict]] = {}
    for bench in bench_json.get("benchmarks", []):
        test_id = bench["name"].partition("[")[2].rstrip("]")
        provider = next((p for p in test_id.split("-") if p.startswith(PROVIDERS)), None)
        if provider is None:
            continue
        groups.setdefault(bench["group"], {})[provider.split("(")[0]] = bench
    rows = []
    for group, by_provider in sorted(groups.items()):
        fused = by_provider.get("fused_ops")
        if fused is None:
            continue
        median_us = fused["stats"]["median"] * 1e6
        minimum_bytes = fused["extra_info"].get("minimum_bytes")
        gbps = fused["extra_info"].get("gbps")
        modeled = f"{minimum_bytes / (bandwidth_tbps * 1e12) * 1e6:.1f}" if bandwidth_tbps and minimum_bytes else "n/a"
        others = []
        for provider in ("torch", "torch.compile"):
            other = by_provider.get(provider)
            others.append(f"{other['stats']['median'] * 1e6:.1f}" if other else "n/a")
        gbps_text = f"{gbps:.0f}" if gbps is not None else "n/a"
        rows.append(f"| {group} | {median_us:.1f} | {gbps_text} | {modeled} | {others[0]} | {others[1]} |")
    return rows


def render_report(
    environment: dict[str, str],
    counts: dict[str, int],
    failing: list[str],
    bench_json: dict,
    host_time_markdown: str,
) -> str:
    """The gpu-check report in Markdown (format documented in the README)."""
    bandwidth = peak_bandwidth(environment["gpu"])
    lines = ["# fused_ops gpu-check", ""]
    lines += [f"- {key}: {value}" for key, value in environment.items()]
    lines += ["", "## Test suite on CUDA", ""]
    lines.append(", ".join(f"{count} {name}" for name, count in counts.items()))
    lines += [f"- FAILED {test_id}" for test_id in failing]
    lines += ["", "## Benchmarks: measured against modeled", ""]
    lines.append(
        "Median of synchronized rounds. Modeled: minimum bytes ÷ peak bandwidth "
        f"({f'{bandwidth} TB/s' if bandwidth else 'unknown for this GPU'}), without launch overhead."
    )
    lines += [
        "",
        "| case | fused µs | fused GB/s | modeled µs | eager torch µs | torch.compile µs |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    lines += benchmark_rows(bench_json, bandwidth)
    lines += ["", "## Host time per call", "", host_time_markdown.strip(), ""]
    return "\n".join(lines)


def _environment() -> dict[str, str]:
    import torch
    import triton

    driver = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
    )
    return {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "CUDA (torch build)": str(torch.version.cuda),
        "driver": driver.stdout.strip() or "unknown",
        "python": platform.python_version(),
    }


def _run(command: list[str], log: Path) -> int:
    print("$", " ".join(command), flush=True)
    with log.open("w") as out:
        return subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite, the benchmarks and the host-time benchmark on the GPU; write the report.

    Returns:
        0 when every test passed, 1 when some failed, 2 without a GPU.
    """
    parser = argparse.ArgumentParser(description="Run the suite and benchmarks on a GPU and write one report.")
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-check", help="output folder (default: gpu-check/)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(NO_GPU_MESSAGE, file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    os.environ.clear()
    os.environ.update(env)
    python = sys.executable
    tests_xml, bench_path, host_path = args.out / "tests.xml", args.out / "bench.json", args.out / "host_time.md"
    # Several workers share the GPU; their real use is compiling kernels on the CPU cores in parallel.
    _run(
        [python, "-m", "pytest", "tests", "-n", "4", "--dist", "loadgroup", f"--junitxml={tests_xml}"],
        args.out / "tests.log",
    )
    _run(
        [python, "-m", "pytest", "benchmarks", "--benchmark-only", "-p", "no:xdist", f"--benchmark-json={bench_path}"],
        args.out / "bench.log",
    )
    _run([python, str(ROOT / "benchmarks" / "host_time.py"), "--out", str(host_path)], args.out / "host_time.log")
    counts, failing = suite_counts(tests_xml)
    bench_json = json.loads(bench_path.read_text()) if bench_path.exists() else {}
    host_time = host_path.read_text() if host_path.exists() else "(host-time benchmark failed: see host_time.log)"
    report = render_report(_environment(), counts, failing, bench_json, host_time)
    (args.out / "report.md").write_text(report)
    print(report)
    return 0 if counts["failed"] == counts["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
