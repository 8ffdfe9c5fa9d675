"""``make gpu-check`` (benchmarks/gpu_check.py): refuses cleanly without a GPU, and its report's format."""

import subprocess
import sys
from pathlib import Path

import gpu_check
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_softmax" name="test_a"/>
<testcase classname="tests.test_softmax" name="test_b"><failure message="x"/></testcase>
<testcase classname="tests.test_mse" name="test_c"><skipped message="y"/></testcase>
</testsuite></testsuites>"""


def _bench(name, group, median, **extra):
    return {"name": name, "group": group, "stats": {"median": median}, "extra_info": extra}


BENCH = {
    "benchmarks": [
        _bench(
            "test_softmax[softmax-fused_ops-full-64x4096-float32]",
            "softmax full 64x4096 float32",
            10e-6,
            minimum_bytes=5 * 64 * 4096 * 4,
            gbps=524.3,
        ),
        _bench("test_softmax[softmax-torch-full-64x4096-float32]", "softmax full 64x4096 float32", 20e-6),
        _bench("test_softmax[softmax-torch.compile-full-64x4096-float32]", "softmax full 64x4096 float32", 15e-6),
    ]
}


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, gpu-check would run the whole suite again")
def test_without_a_gpu_it_says_so_and_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert gpu_check.NO_GPU_MESSAGE in result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing is written without a GPU"


def test_report_holds_versions_counts_failures_measured_and_modeled(tmp_path):
    junit = tmp_path / "tests.xml"
    junit.write_text(JUNIT)
    counts, failing = gpu_check.suite_counts(junit)
    assert counts == {"passed": 1, "failed": 1, "errors": 0, "skipped": 1}
    assert failing == ["tests.test_softmax::test_b"]
    environment = {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.13.0", "triton": "3.9.0"}
    report = gpu_check.render_report(environment, counts, failing, BENCH, "| op | µs |")
    assert "- gpu: NVIDIA H100 80GB HBM3" in report and "- triton: 3.9.0" in report
    assert "1 passed, 1 failed, 0 errors, 1 skipped" in report
    assert "- FAILED tests.test_softmax::test_b" in report
    # 5 MiB at 3.35 TB/s is 1.6 µs modeled; measured 10 µs, eager 20, compile 15.
    assert "| softmax full 64x4096 float32 | 10.0 | 524 | 1.6 | 20.0 | 15.0 |" in report
    assert "| op | µs |" in report


def test_unknown_gpus_get_no_modeled_time():
    assert gpu_check.peak_bandwidth("NVIDIA H100 80GB HBM3") == 3.35
    assert gpu_check.peak_bandwidth("Some Future GPU") is None
    rows = gpu_check.benchmark_rows(BENCH, None)
    assert rows == ["| softmax full 64x4096 float32 | 10.0 | 524 | n/a | 20.0 | 15.0 |"]
