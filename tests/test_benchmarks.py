"""The pytest-benchmark suites in benchmarks/ still run: once each, at tiny sizes.

`make bench` times them; here they run with --benchmark-disable and
FUSED_OPS_BENCH_SMOKE=1 (see benchmarks/harness.py), in a child pytest so that their
conftest and parametrization are exactly those of `make bench`.
"""

import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_every_benchmark_suite_runs_once_at_tiny_sizes():
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(BENCHMARKS), "--benchmark-disable", "-p", "no:xdist", "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, "FUSED_OPS_BENCH_SMOKE": "1"},
        cwd=BENCHMARKS.parent,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert {f"bench_{family}.py" for family in ("activations", "softmax", "mse", "cross_entropy", "adam")} <= {
        path.name for path in BENCHMARKS.glob("bench_*.py")
    }
    assert " passed" in output and " failed" not in output, output[-3000:]
    # CPU timings must say plainly what they measure.
    assert "not GPU timings" in output or "GPU: every round ends with torch.cuda.synchronize()" in output
