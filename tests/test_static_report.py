"""The static GPU report: every kernel compiled for sm_90 as the report's cases launch it.

The launches are recorded once under the interpreter (this process), and compiled once
in a child process without TRITON_INTERPRET (module-scope fixture), so each kernel
signature is compiled a single time for all of these tests.
"""

import pytest

from fused_ops import static_report


@pytest.fixture(scope="module")
def reports():
    launches = static_report.record([static_report.DIVISIBLE_SHAPE], ["float32", "bfloat16"])
    return static_report.compile_all(launches)


def test_global_accesses_are_counted_by_width():
    ptx = """
        @%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
        ld.global.L1::evict_last.v2.b32 { %r5, %r6 }, [ %rd2 + 0 ];
        @%p2 ld.global.b16 { %rs1 }, [ %rd3 + 0 ];
        @%p1 st.global.v4.b32 [ %rd5 + 0 ], { %r17, %r18, %r19, %r20 };
        ld.shared.v4.b32 { %r7, %r8, %r9, %r10 }, [ %r11 ];
    """
    assert static_report.global_accesses(ptx) == ({128: 1, 64: 1, 16: 1}, {128: 1})


def test_every_kernel_of_the_report_compiles_for_sm90(reports):
    failed = [f"{r.kernel} ({', '.join(r.used_by)}): {r.error}" for r in reports if not r.ok]
    assert not failed, "\n".join(failed)
    assert reports, "no launch was recorded"


def test_resource_usage_is_read_from_the_cubin(reports):
    for r in (r for r in reports if r.ok):
        assert 0 < r.registers <= 255, r
        assert r.num_warps in (1, 2, 4, 8, 16, 32), r
        assert r.loads and r.stores, f"{r.kernel}: no global load or store found in its PTX"


def test_no_kernel_spills_registers_at_its_default_configuration(reports):
    spilling = [
        f"{r.kernel} ({r.used_by[0]}): {r.local_bytes} B local, {r.spill_stores}/{r.spill_loads} B spilled"
        for r in reports
        if r.ok and r.spills
    ]
    assert not spilling, "\n".join(spilling)


def test_elementwise_kernels_move_data_in_128_bit_vectors(reports):
    # Sizes that are multiples of 16 elements, as in every contiguous call with 4096 columns.
    elementwise = [r for r in reports if r.ok and r.kernel.split("_")[0] in ("sigmoid", "tanh", "relu")]
    assert elementwise
    for r in elementwise:
        assert set(r.loads) == {128} and set(r.stores) == {128}, (r.kernel, r.used_by[0], r.loads, r.stores)


def test_markdown_has_a_row_per_kernel_signature(reports):
    markdown = static_report.render_markdown(reports)
    rows = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert len(rows) == len(reports)
    assert "Kernels that spill:" in markdown
