"""Benchmark setup: Triton's interpreter without a GPU, bench_*.py collection, a plain timing note."""

import os

import torch

# Triton reads TRITON_INTERPRET when a kernel is decorated, so this must run before
# fused_ops is imported by any benchmark module (as in tests/conftest.py).
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import pytest


def pytest_collect_file(parent, file_path):
    """Collect ``bench_<family>.py`` files as test modules (pytest's default is test_*.py).

    A file named on the command line is already collected by pytest itself.
    """
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def _timing_note() -> list[str]:
    import harness

    lines = [f"fused_ops benchmarks: {harness.TIMING_NOTE}."]
    if not harness.ON_GPU:
        lines.append(
            "CPU timings of the fused path measure Triton's interpreter (or the eager fallback), "
            "not a GPU. GPU-relevant figures without a GPU: `make report` (bytes, launches, modeled time)."
        )
    return lines


def pytest_report_header(config):
    return _timing_note()


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_sep("=", "what these timings are")
    for line in _timing_note():
        terminalreporter.write_line(line)
