"""The static GPU report: every kernel compiled for sm_90 as the report's cases launch it.

The launches are recorded under the interpreter (this process) and compiled once, in a
child process without TRITON_INTERPRET. One test checks every property of that single
compilation, so no scheduling of tests across workers compiles the kernels twice.
"""

import pytest
import static_report

# Launches are recorded under the interpreter in this process; on a GPU machine these run in a CPU subprocess.
pytestmark = pytest.mark.interpreter_only


def test_global_accesses_are_counted_by_width():
    ptx = """
        @%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
        ld.global.L1::evict_last.v2.b32 { %r5, %r6 }, [ %rd2 + 0 ];
        @%p2 ld.global.b16 { %rs1 }, [ %rd3 + 0 ];
        @%p1 st.global.v4.b32 [ %rd5 + 0 ], { %r17, %r18, %r19, %r20 };
        ld.shared.v4.b32 { %r7, %r8, %r9, %r10 }, [ %r11 ];
    """
    assert static_report.global_accesses(ptx) == ({128: 1, 64: 1, 16: 1}, {128: 1})


def test_every_kernel_compiles_for_sm90_without_spills_and_elementwise_kernels_vectorize():
    reports = static_report.compile_all(static_report.record([static_report.DIVISIBLE_SHAPE], ["float32", "bfloat16"]))
    assert reports, "no launch was recorded"

    failed = [f"{r.kernel} ({', '.join(r.used_by)}): {r.error}" for r in reports if not r.ok]
    assert not failed, "do not compile for sm_90:\n" + "\n".join(failed)

    for r in reports:  # the figures were really read from the cubin and the PTX
        assert 0 < r.registers <= 255 and r.num_warps in (1, 2, 4, 8, 16, 32), r
        assert r.loads and r.stores, f"{r.kernel}: no global load or store found in its PTX"

    spilling = [f"{r.kernel} ({r.used_by[0]}): {r.local_bytes} B local, {r.spill_stores} B spilled" for r in reports]
    spilling = [line for line, r in zip(spilling, reports, strict=True) if r.spills]
    assert not spilling, "spill registers at their default configuration:\n" + "\n".join(spilling)

    # Sizes that are multiples of 16 elements, as every contiguous call with 4096 columns.
    elementwise = [r for r in reports if r.kernel.split("_")[0] in ("sigmoid", "tanh", "relu")]
    assert elementwise
    for r in elementwise:
        assert set(r.loads) == {128} and set(r.stores) == {128}, (r.kernel, r.used_by[0], r.loads, r.stores)

    markdown = static_report.render_markdown(reports)
    assert len([line for line in markdown.splitlines() if line.startswith("| `")]) == len(reports)
    assert "Kernels that spill: none." in markdown
