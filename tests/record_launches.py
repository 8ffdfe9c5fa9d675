"""Run a test module's ``aot_workload()`` under the interpreter and save its distinct launches.

    python tests/record_launches.py tests/test_activations.py launches.json

Used by test_aot.py in a subprocess, so that the interpreter's patching of
``triton.language`` never reaches the process that compiles.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
# The AOT tool lives with the other instruments, outside the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from aot import launch_key, launch_record

from fused_ops.profiling import KernelTrace


def main(test_module: str, out_path: str) -> None:
    sys.path.insert(0, str(Path(test_module).parent))
    spec = importlib.util.spec_from_file_location(Path(test_module).stem, test_module)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with KernelTrace() as trace:
        module.aot_workload()
    distinct = {}
    for launch in trace.launches:
        record = launch_record(launch)
        distinct.setdefault(launch_key(record), record)
    Path(out_path).write_text(json.dumps(list(distinct.values()), indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
