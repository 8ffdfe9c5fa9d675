# Every target sets up .venv by itself on first use: torch==2.13.0 (the version tested;
# on a CPU-only machine pip takes the CPU build, so nothing downloads several GB), then
# this package in editable mode with its test and bench extras.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# The interpreter runs the real Triton kernels on CPU tensors when no GPU is present.
# Triton reads TRITON_INTERPRET at import, so it is set here, before Python starts.
INTERPRET = $(shell $(PYTHON) -c "import torch; print(0 if torch.cuda.is_available() else 1)")

.PHONY: demo test lint bench report gpu-check clean

$(INSTALLED): setup.py
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[test,bench]"
	touch $(INSTALLED)

demo: $(INSTALLED)
	TRITON_INTERPRET=$(INTERPRET) $(PYTHON) examples/demo.py

test: $(INSTALLED)
	$(PYTHON) -m pytest -n 2 --dist loadgroup

lint: $(INSTALLED)
	$(PYTHON) -m pip install --quiet ruff
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

# The pytest-benchmark suites, one benchmarks/bench_<family>.py per op family: wall-clock
# timings against eager torch and torch.compile (GPU timings only on a GPU).
bench: $(INSTALLED)
	$(PYTHON) benchmarks/host_time.py --out docs/host_time.md
	TRITON_INTERPRET=$(INTERPRET) $(PYTHON) -m pytest benchmarks --benchmark-only -p no:xdist

# On a machine with a GPU: the suite on CUDA, benchmarks with real timings, host time; one report.
gpu-check: $(INSTALLED)
	$(PYTHON) benchmarks/gpu_check.py --out gpu-check

# What can be counted without a GPU, from the same cases: bytes, launches and modeled time
# (docs/traffic.md, docs/traffic.png), then registers, spills and vector accesses of every
# kernel compiled for sm_90 (docs/static.md). Counting needs the interpreter, even on a GPU
# machine; static_report.py compiles in a child process without it.
report: $(INSTALLED)
	TRITON_INTERPRET=1 $(PYTHON) benchmarks/traffic_report.py --out-dir docs --no-progress
	TRITON_INTERPRET=1 $(PYTHON) benchmarks/static_report.py --out-dir docs

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks
