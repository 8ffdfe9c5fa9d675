"""The host-time benchmark (benchmarks/host_time.py) and its stand-in CUDA driver.

The benchmark needs compiled Triton kernels, so it runs in a subprocess without
``TRITON_INTERPRET``: under the stand-in driver without a GPU, for real on a GPU. This
process (the interpreter, without a GPU) launches the same calls and checks that the
stand-in launched exactly the kernels that the interpreter runs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fused_ops
from fused_ops._dispatch import TRITON_INTERPRETED, Backend, force_backend
from fused_ops.profiling import KernelTrace

BENCHMARKS_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS_DIR))

import host_time  # noqa: E402  (benchmarks/ is not a package)
import standin_driver  # noqa: E402

OPS = ("sigmoid", "tanh", "relu", "softmax", "log_softmax", "mse_loss", "cross_entropy")


def _compiled_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    return env


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``host_time.py --quick`` run: its JSON results and its Markdown table."""
    out = tmp_path_factory.mktemp("host_time")
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS_DIR / "host_time.py"),
            "--quick",
            "--out",
            str(out / "host_time.md"),
            "--json",
            str(out / "host_time.json"),
        ],
        capture_output=True,
        text=True,
        env=_compiled_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((out / "host_time.json").read_text()), (out / "host_time.md").read_text()


def _launched_kernels(call) -> list[str]:
    """Names of the kernels ``call`` launches, in order, in this process (interpreted or compiled)."""
    with KernelTrace() as trace:
        call()
    return [launch.kernel for launch in trace.launches]


def test_quick_run_has_every_op_and_optimizer_row(quick_run):
    results, markdown = quick_run
    names = [op["name"] for op in results["ops"]]
    assert set(OPS) <= set(names)
    for name in names:
        assert f"| {name} |" in markdown
    for op in results["ops"]:
        for key in ("fwd_us", "fwd_eager_us", "fwd_bwd_us", "fwd_bwd_eager_us"):
            assert 0 < op[key] < 1e6, (op["name"], key, op[key])
    rows = {(s["optimizer"], s["grads"], s["n_params"]) for s in results["steps"]}
    expected = {(o, g, n) for o in host_time.OPTIMIZERS for g in ("new", "same") for n in host_time.OPTIMIZER_SIZES}
    assert rows == expected
    for optimizer, grads, n in expected:
        assert f"| {optimizer} | {grads} | {n} |" in markdown
    assert {(f["optimizer"], f["grads"]) for f in results["fits"]} == {(o, g) for o, g, _ in expected}
    assert "fwd+bwd <= 1.5x" in markdown and "slope <= 1 µs" in markdown


def test_quick_run_launches_the_kernels_each_op_needs(quick_run, device):
    # The stand-in's no-op launches, counted through Triton's launch_enter_hook, are the
    # kernels that the same calls launch here: compiled kernels really went through
    # JITFunction.run, once per kernel the op needs.
    results, _ = quick_run
    measured = {op["name"]: op for op in results["ops"]}
    for case in host_time._op_cases(device):
        inputs = case.make_inputs()
        with torch.no_grad():
            forward = _launched_kernels(lambda: case.fused(*inputs))  # noqa: B023  (called at once)
        leaves = host_time._grad_leaves(inputs, case.n_leaves)
        for leaf in leaves:
            leaf.requires_grad_(True)
        output = case.eager(*inputs)
        grad = None if output.dim() == 0 else torch.randn_like(output)
        forward_backward = _launched_kernels(host_time._fwd_bwd_call(case.fused, inputs, leaves, grad))
        assert forward, f"{case.name}: no kernel ran in this process"
        assert measured[case.name]["fwd_launches"] == forward, case.name
        assert measured[case.name]["fwd_bwd_launches"] == forward_backward, case.name
    for name in ("sigmoid", "tanh", "relu"):
        assert measured[name]["fwd_bwd_launches"] == [f"{name}_forward_kernel", f"{name}_backward_kernel"]


def test_quick_run_counts_one_optimizer_launch_per_step(quick_run, kernel_launches):
    results, _ = quick_run
    params = [torch.randn(8, requires_grad=True) for _ in range(4)]
    for param in params:
        param.grad = torch.randn(8)
    fused_ops.optim.AdamW(params, lr=1e-3).step()
    here = [launch.kernel for launch in kernel_launches.launches] if TRITON_INTERPRETED else None
    for step in results["steps"]:
        if step["optimizer"] == "fused_ops AdamW":
            assert len(step["launches"]) == 1, step
            if here is not None:
                assert step["launches"] == here
    sgd = [step for step in results["steps"] if step["optimizer"] == "fused_ops SGD"]
    assert len(sgd) == 2 * len(host_time.OPTIMIZER_SIZES)
    for step in sgd:
        assert step["launches"] == ["sgd_kernel"], step


def test_standin_driver_compiles_for_sm90_and_calls_both_launch_hooks():
    script = """
import sys, torch, triton
from triton import knobs
import fused_ops
from fused_ops.kernels.activations import sigmoid_forward_kernel
from standin_driver import STANDIN_DEVICE, standin_cuda_driver

driver_config = sys.modules["triton.runtime.driver"].driver
events = []
enter = lambda metadata: events.append(("enter", metadata.get()["name"]))
exit_ = lambda metadata: events.append(("exit", metadata.get()["name"]))
knobs.runtime.launch_enter_hook.add(enter)
knobs.runtime.launch_exit_hook.add(exit_)
with standin_cuda_driver():
    assert triton.runtime.driver.active.get_current_target().arch == 90
    fused_ops.sigmoid(torch.randn(4, 8))
assert driver_config._active is None, "the stand-in stayed active"
assert events == [("enter", "sigmoid_forward_kernel"), ("exit", "sigmoid_forward_kernel")], events
(kernel,) = sigmoid_forward_kernel.device_caches[STANDIN_DEVICE][0].values()
assert kernel.metadata.target.arch == 90 and len(kernel.asm["cubin"]) > 0
# Outside the block, CPU tensors are back on the eager reference: no launch.
fused_ops.sigmoid(torch.randn(4, 8))
assert len(events) == 2, events
print("ok")
"""
    env = _compiled_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCHMARKS_DIR), env.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("ok")


def test_standin_driver_refuses_an_unknown_triton(monkeypatch):
    assert standin_driver.check_triton() == __import__("triton").__version__
    with pytest.raises(standin_driver.UnsupportedTritonError, match=r"knows Triton 3\.9, not Triton 3\.10\.0"):
        standin_driver.check_triton("3.10.0")
    with pytest.raises(standin_driver.UnsupportedTritonError, match=r"not Triton 3\.90\.1"):
        standin_driver.check_triton("3.90.1")
    monkeypatch.setattr("triton.__version__", "4.0.0")
    before = sys.modules["triton.runtime.driver"].driver._active
    with pytest.raises(standin_driver.UnsupportedTritonError, match=r"not Triton 4\.0\.0"):
        with standin_driver.standin_cuda_driver():
            pass
    assert sys.modules["triton.runtime.driver"].driver._active is before


def test_standin_driver_refuses_to_run_under_the_interpreter():
    script = """
from standin_driver import standin_cuda_driver
try:
    with standin_cuda_driver():
        pass
except RuntimeError as error:
    print(error)
"""
    env = dict(_compiled_env(), TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCHMARKS_DIR), env.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "run it in a process where TRITON_INTERPRET is unset" in result.stdout


def test_force_backend(device):
    # The Triton backend this process runs (the interpreter without a GPU), forced on
    # the test device; the other one cannot be forced; the reference launches nothing.
    runnable, other = (
        (Backend.INTERPRETER, Backend.TRITON) if TRITON_INTERPRETED else (Backend.TRITON, Backend.INTERPRETER)
    )
    x = torch.randn(6)
    with force_backend(runnable):
        assert _launched_kernels(lambda: fused_ops.sigmoid(x)) == ["sigmoid_forward_kernel"]
    with force_backend(Backend.REFERENCE):
        assert _launched_kernels(lambda: fused_ops.sigmoid(x)) == []
        torch.testing.assert_close(fused_ops.sigmoid(x), torch.sigmoid(x))
    with pytest.raises(RuntimeError, match=f"cannot force the {other.value} backend"):
        with force_backend(other):
            pass
