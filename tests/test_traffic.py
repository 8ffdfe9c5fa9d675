"""Traffic accounting, and performance that cannot regress: bytes counted, never wall clock.

- TorchTrace's model of eager PyTorch, rule by rule (views, in-place, out=, broadcasts,
  the op-specific models, host tensors, custom ops).
- Every fused forward and backward moves at most 1.05x the minimum bytes on contiguous
  fp32 and bf16 inputs of several blocks.
- The fused Adam step moves 28 bytes per fp32 parameter (36 with amsgrad).
- Fused losses that replace several eager kernels move fewer bytes than eager torch, by
  exactly the factor that docs/traffic.md states.
"""

import importlib
import inspect
import re
import sys
from pathlib import Path

import harness
import interpreter
import pytest
import torch
import torch.nn.functional as F
import traffic_report

import fused_ops
import fused_ops.optim
from fused_ops.profiling import KernelTrace, TorchTrace, minimum_bytes, tensor_bytes

# Bytes are counted by instrumenting Triton's interpreter; on a GPU machine these run in a CPU subprocess.
pytestmark = pytest.mark.interpreter_only

DOCS_TABLE = Path(__file__).parent.parent / "docs" / "traffic.md"
# Several blocks of every kernel: 4 rows of 2048 (8 elementwise blocks of 1024, 4 softmax
# rows, 4 cross-entropy rows of 2048 classes).
ROWS, COLS = 4, 2048
# Fused ops that replace several eager kernels: these must move fewer bytes than eager.
MULTI_KERNEL_OPS = ("mse_loss", "cross_entropy")


@pytest.fixture(autouse=True)
def _nan_filled_allocations():
    """Overrides conftest's NaN fill of torch.empty: its fill kernels would count as traffic here."""


def _eager(fn):
    with TorchTrace() as trace:
        result = fn()
    return trace, result


def test_tensor_bytes_counts_broadcast_elements_once():
    assert tensor_bytes(torch.ones(4, 1).expand(4, 1000)) == 16
    assert tensor_bytes(torch.ones(3, 5, dtype=torch.bfloat16).t()) == 30
    assert tensor_bytes(torch.ones(0, 7)) == 0


def test_minimum_bytes_reads_inputs_and_writes_outputs_once():
    x = torch.randn(100)
    assert minimum_bytes([x, None], [x.to(torch.float16)]) == 400 + 200


def test_elementwise_op_is_one_kernel_reading_and_writing_once():
    x = torch.randn(64, 32)
    trace, _ = _eager(lambda: torch.sigmoid(x))
    assert (trace.kernel_count(), trace.bytes_read, trace.bytes_written) == (1, x.nbytes, x.nbytes)


def test_views_metadata_and_allocations_count_nothing():
    x = torch.randn(8, 16)
    trace, _ = _eager(lambda: (x.view(16, 8), x.t(), x[:, 1:], x.detach(), torch.empty_like(x), x.expand(2, 8, 16)))
    assert trace.ops == []


def test_in_place_reads_and_writes_its_target_and_out_is_written_only():
    a, b, out = torch.randn(50), torch.randn(50), torch.empty(50)
    trace, _ = _eager(lambda: a.add_(b))
    assert (trace.bytes_read, trace.bytes_written) == (400, 200)
    trace, _ = _eager(lambda: torch.add(a, b, out=out))
    assert (trace.bytes_read, trace.bytes_written) == (400, 200)
    trace, _ = _eager(lambda: out.copy_(a))
    assert (trace.bytes_read, trace.bytes_written) == (200, 200)


def test_broadcast_input_is_read_once():
    x, bias = torch.randn(100, 10), torch.randn(10)
    trace, _ = _eager(lambda: x + bias)
    assert trace.bytes_read == x.nbytes + bias.nbytes


def test_zero_fill_is_a_kernel_that_only_writes():
    trace, _ = _eager(lambda: torch.zeros(256))
    assert (trace.kernel_count(), trace.bytes_read, trace.bytes_written) == (1, 0, 1024)


def test_mse_loss_with_reduction_is_two_kernels_through_a_temporary():
    x, y = torch.randn(64, 8), torch.randn(64, 8)
    trace, _ = _eager(lambda: F.mse_loss(x, y))
    n = x.nbytes
    assert trace.kernel_count() == 2
    assert (trace.bytes_read, trace.bytes_written) == (3 * n, n + 4)
    trace, _ = _eager(lambda: F.mse_loss(x, y, reduction="none"))
    assert (trace.kernel_count(), trace.bytes_read, trace.bytes_written) == (1, 2 * n, n)


def test_nll_loss_gathers_forward_and_zero_fills_then_scatters_backward():
    logits = torch.randn(16, 100, requires_grad=True)
    target = torch.randint(0, 100, (16,))
    log_probs = logits.log_softmax(-1)
    trace, loss = _eager(lambda: F.nll_loss(log_probs, target))
    # One gathered log-probability per row and the int64 targets; loss and total weight.
    assert (trace.kernel_count(), trace.bytes_read, trace.bytes_written) == (1, 16 * 4 + 16 * 8, 8)
    trace, _ = _eager(lambda: torch.autograd.grad(loss, log_probs))
    nll_backward = trace.by_op()["aten.nll_loss_backward.default"]
    assert nll_backward.kernels == 2
    assert nll_backward.bytes_written == 16 * 100 * 4 + 16 * 4


def test_foreach_launches_follow_multi_tensor_apply_limits():
    many_small = [torch.randn(10) for _ in range(200)]
    trace, _ = _eager(lambda: torch._foreach_mul_(many_small, 2.0))
    assert trace.kernel_count() == 2  # at most 110 tensors per launch with one list
    few_large = [torch.randn(65536 * 321)]
    trace, _ = _eager(lambda: torch._foreach_mul_(few_large, 2.0))
    assert trace.kernel_count() == 2  # at most 320 chunks of 65536 elements per launch


def test_host_tensors_and_python_scalars_cost_nothing():
    step = torch.tensor(3.0)
    with TorchTrace(host_tensors=[step]) as trace:
        step += 1
        torch._foreach_add_([step], torch.tensor(1.0))
        step.item()
    assert trace.ops == []


def test_item_of_a_device_tensor_is_one_launch():
    x = torch.randn(())
    trace, _ = _eager(x.item)
    assert (trace.kernel_count(), trace.bytes_read) == (1, 4)


def test_fused_op_counts_only_its_triton_launches_not_the_interpreter_staging():
    x = torch.randn(4096)
    with KernelTrace() as triton, TorchTrace() as eager:
        fused_ops.sigmoid(x)
    assert eager.ops == []  # its empty_like allocates; the interpreter's copies are excluded
    assert (triton.launch_count(), triton.bytes_moved) == (1, 2 * x.nbytes)


def test_torch_adam_step_matches_its_documented_traffic():
    params = harness.make_parameters(2, 3, 1000, torch.float32)
    optimizer = torch.optim.Adam(params, foreach=False)
    optimizer.step()
    with TorchTrace(host_step_tensors("torch for-loop", optimizer)) as trace:
        optimizer.step()
    # lerp_ 12, mul_ 8, addcmul_ 16, sqrt 8, div 8, add_ 8, addcdiv_ 16 bytes per parameter.
    assert trace.bytes_moved == 76 * 6000
    assert trace.kernel_count() == 7 * 2


def host_step_tensors(provider, optimizer):
    return traffic_report.host_step_tensors(provider, optimizer)


def test_extrapolation_is_exact_on_a_line_and_flags_anything_else():
    line = traffic_report.extrapolate({1: 10, 2: 18, 4: 34}, {1: 2, 2: 2, 4: 2}, 100)
    assert (line.bytes, line.launches, line.exact) == (802, 2, True)
    assert not traffic_report.extrapolate({1: 10, 2: 18, 4: 40}, {1: 2, 2: 2, 4: 2}, 100).exact
    assert not traffic_report.extrapolate({1: 10, 2: 18, 4: 34}, {1: 2, 2: 3, 4: 2}, 100).exact


def test_modeled_time_is_bytes_over_bandwidth_plus_launches():
    h100 = traffic_report.GPUS[0]
    assert traffic_report.modeled_us(3.35e6, 2, h100) == pytest.approx(1.0 + 2 * traffic_report.LAUNCH_US)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", traffic_report.OP_CASES, ids=lambda c: c.name)
def test_fused_forward_and_backward_move_at_most_5_percent_over_the_minimum(case, dtype):
    traffic = traffic_report.measure_op(case, dtype, ROWS, COLS)
    # A one-pass loss writes its gradient in the forward: only forward + backward together
    # can be held to a minimum (each input read once, each gradient written once).
    for mode in ("full",) if case.one_pass else ("forward", "backward"):
        fused, minimum = traffic.fused[mode].traffic.bytes, traffic.minimum[mode]
        assert traffic.fused[mode].traffic.launches > 0, f"{case.name} {mode}: no Triton kernel ran"
        assert fused <= 1.05 * minimum, (
            f"{case.name} {mode} {dtype}: {fused} bytes, {fused / minimum:.3f}x the minimum {minimum}; "
            f"kernels: {traffic.fused[mode].kernels}"
        )


@pytest.mark.parametrize("case", traffic_report.OPTIMIZER_CASES, ids=lambda c: c.name)
def test_fused_optimizer_step_moves_the_minimum_bytes_per_parameter(case):
    # Per fp32 parameter: Adam(W) 28, amsgrad 36, bf16 moments 20, SGD with momentum 20, plain SGD 12, and
    # 4 more when the step is clipped (one read of each gradient for the norm).
    traced, minimum, params = traffic_report.measure_optimizer(case, "fused_ops", tensors=3, rows=2, cols=4096)
    expected = {"Adam": 28, "AdamW": 28, "Adam (amsgrad)": 36, "SGD (momentum)": 20, "SGD": 12}
    expected.update({"AdamW + clip": 32, "SGD (momentum) + clip": 24, "AdamW (bf16 moments)": 20})
    expected.update({"AdamW8bit": 16, "Adam8bit": 16})  # + 2 fp32 scales per 256 elements (0.0625)
    assert minimum / params == expected[case.name]
    assert traced.traffic.launches <= (2 if case.clip_max_norm is not None else 1)
    # Beyond the minimum only a few bytes per program: step counters and address tables.
    assert minimum <= traced.traffic.bytes <= minimum * 1.01, traced.kernels


def _stated_factors() -> dict[tuple[str, str, str], str]:
    """(op, dtype, mode) -> the "eager ÷ fused" cell of docs/traffic.md's per-dtype op tables."""
    factors, dtype = {}, None
    for line in DOCS_TABLE.read_text().splitlines():
        if line.startswith("## "):
            heading = re.match(r"## Ops, (\w+), at", line)
            dtype = heading.group(1) if heading else None
        elif dtype and line.startswith("| ") and not line.startswith("| op "):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            factors[(cells[0], dtype, cells[1])] = cells[6]
    return factors


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(
    "case", [c for c in traffic_report.OP_CASES if c.name in MULTI_KERNEL_OPS], ids=lambda c: c.name
)
def test_fused_losses_beat_eager_by_the_factor_the_report_states(case, dtype):
    name = case.name
    rows = {row.mode: row for row in traffic_report.op_rows(case, dtype)}
    # A one-pass loss's forward also writes the gradient, so only forward + backward
    # together compare with eager torch's separate passes.
    for mode in ("full",) if case.one_pass else ("forward", "full"):
        fused, eager = rows[mode].large["fused_ops"].bytes, rows[mode].large["eager"].bytes
        assert fused < eager, f"{name} {mode}: fused {fused} bytes, eager {eager}"
    stated = _stated_factors()
    for mode, row in rows.items():
        measured = traffic_report.ratio_text(row.large["eager"].bytes, row.large["fused_ops"].bytes)
        assert stated.get((name, dtype, mode)) == measured, (
            f"docs/traffic.md states {stated.get((name, dtype, mode))} for {name} {mode} {dtype}, "
            f"the kernels now give {measured}: regenerate it with `make report`"
        )


def test_report_writes_markdown_and_chart(tmp_path):
    options = ["--ops", "sigmoid", "--dtypes", "float32", "--no-optimizer", "--no-progress"]
    args = traffic_report.build_parser().parse_args(["--out-dir", str(tmp_path), *options])
    assert traffic_report.run_report(args) == 0
    markdown = (tmp_path / "traffic.md").read_text()
    assert "| sigmoid | forward | 8.00 | 8.00 | 8.00 | 1.00× | 1.00× | 1 / 1 |" in markdown
    assert "**Modeled**" in markdown
    assert (tmp_path / "traffic.png").read_bytes().startswith(b"\x89PNG")


def test_report_reruns_itself_under_the_interpreter_when_kernels_are_compiled(monkeypatch):
    calls = []
    monkeypatch.setattr(traffic_report._dispatch, "TRITON_INTERPRETED", False)
    monkeypatch.setattr(
        interpreter.subprocess, "run", lambda argv, env, check, **kwargs: calls.append((argv, env)) or Done()
    )
    assert traffic_report.main(["--ops", "sigmoid"]) == 0
    ((argv, env),) = calls
    assert argv[1:] == [str(Path(traffic_report.__file__).resolve()), "--ops", "sigmoid"]
    assert env["TRITON_INTERPRET"] == "1"


class Done:
    returncode = 0


# Families whose traffic the report cannot extrapolate from a few rows, with where it is measured instead.
OUTSIDE_THE_REPORT = {"linear_cross_entropy": "benchmarks/linear_cross_entropy_memory.py"}


def test_every_public_op_and_optimizer_has_a_case():
    # patch() routes torch calls to the ops; it is not one itself.
    ops = {name for name in fused_ops.__all__ if inspect.isfunction(getattr(fused_ops, name))} - {"patch"}
    ops -= set(OUTSIDE_THE_REPORT)
    assert ops <= {case.name for case in traffic_report.OP_CASES}, (
        "add a case for the op to benchmarks/bench_<family>.py"
    )
    optimizers = {name for name in fused_ops.optim.__all__ if inspect.isclass(getattr(fused_ops.optim, name))}
    assert optimizers <= {case.class_name for case in traffic_report.OPTIMIZER_CASES}


def test_every_benchmark_file_defines_the_cases_of_its_family():
    for family in traffic_report.families():
        cases = importlib.import_module(f"bench_{family}").CASES
        if family in OUTSIDE_THE_REPORT:
            assert cases == (), f"{family}: measured by {OUTSIDE_THE_REPORT[family]}"
            continue
        assert cases and all(isinstance(c, harness.OpCase | harness.OptimizerCase) for c in cases), family
    collected = [*traffic_report.OP_CASES, *traffic_report.OPTIMIZER_CASES]
    assert len({c.name for c in collected}) == len(collected), "two cases share a name"


def test_a_new_family_needs_only_its_benchmark_file(tmp_path, monkeypatch):
    # Known families keep the report's reading order; new ones follow, alphabetically.
    for family in ("zeta_ops", "softmax", "alpha_ops", "activations"):
        (tmp_path / f"bench_{family}.py").write_text(
            f"import harness\nimport torch\n\nCASES = (harness.OpCase('{family}_neg', 'neg(x)', harness.one_input, "
            "torch.neg, torch.neg, harness.saved_output),)\n"
        )
    monkeypatch.setattr(traffic_report, "BENCHMARKS_DIR", tmp_path)
    monkeypatch.syspath_prepend(tmp_path)
    for family in ("zeta_ops", "softmax", "alpha_ops", "activations"):  # import these, not the real ones
        monkeypatch.delitem(sys.modules, f"bench_{family}", raising=False)
    assert traffic_report.families() == ["activations", "softmax", "alpha_ops", "zeta_ops"]
    op_cases, optimizer_cases = traffic_report.collect_cases()
    assert [c.name for c in op_cases] == ["activations_neg", "softmax_neg", "alpha_ops_neg", "zeta_ops_neg"]
    assert optimizer_cases == ()
