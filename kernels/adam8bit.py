"""Adam and AdamW with 8-bit blockwise moments: one kernel launch updates every parameter of a (device, dtype).

The tables follow kernels/adam.py (same group table, grad table, program table and step
protocol); the tensor table has one row per parameter:

    PARAM, EXP_AVG, EXP_AVG_SQ, EXP_AVG_SCALES, EXP_AVG_SQ_SCALES, STEP, NUMEL,
    FIRST_PROGRAM, GROUP, QUANTIZED

A quantized row (QUANTIZED = 1) holds each moment as uint8 codes, one per element, and
one fp32 scale per block of 256 elements (bitsandbytes and torchao use 256 too): a
moment's value is ``code_value[code] * scale``, and after the update each block's scale
is its new absolute maximum and each code the nearest code value to ``moment / scale``.
A row with QUANTIZED = 0 (tensors under ``MIN_8BIT_NUMEL`` elements, whose scales would
cost more than they save; bitsandbytes and torchao keep tensors under 4,096 elements in
32-bit too) holds fp32 moments at EXP_AVG/EXP_AVG_SQ, and shares the launch.

The code map is bitsandbytes' dynamic (tree) map, ``create_dynamic_map`` in
bitsandbytes/functional.py (Dettmers 2015, "8-bit approximations for parallelism in deep
learning"; torchao's AdamW8bit uses the same maps): signed for exp_avg, unsigned for
exp_avg_sq. Its values are decimal-exponent groups with linear fractions, so it keeps
relative precision over 7 decades. A block of squared gradients spans many decades, and
a linear map would round its small entries to 0, making ``m / (sqrt(v) + eps)`` blow
up. Here the map is computed, not looked up: the code's group and fraction follow from
its index in closed form, so decoding and encoding are arithmetic on registers, with no
gathers from a table (which would move more bytes than the codes themselves).

Signed map (exp_avg), in increasing order: 127 negative values, 0 (code 127), 127
positive values, 1.0 (code 255). Positive value number ``p`` (0..126, code 128 + p;
negative: code 126 - p) lies in group ``i = floor(log2(p + 1))`` (0..6), fraction
``k = p + 1 - 2**i``: ``10**(i - 6) * (0.1 + (k + 0.5) * 0.9 / 2**i)``.
Unsigned map (exp_avg_sq): 0 (code 0), 254 positive values, 1.0 (code 255). Value
number ``p`` (0..253, code 1 + p) lies in group ``i = floor(log2(p + 2)) - 1``, fraction
``k = p + 2 - 2**(i + 1)``: ``10**(i - 6) * (0.1 + (k + 0.5) * 0.9 / 2**(i + 1))``.

exp_avg_sq is never rounded to 0: a positive value below half the unsigned map's
smallest value (3.25e-7 of its block's absmax) stores as that smallest value, not as 0.
This departs from bitsandbytes and torchao, which round to the nearest code, 0 included,
and so blow the update up: an element whose gradient is under ~4e-4 of its block's
largest has a squared gradient under 1.6e-7 of the block's absmax, exp_avg_sq stores as
0 while exp_avg (0 only under 2.75e-7 of its scale) does not, and the next update
divides exp_avg by sqrt((1 - beta2) g^2) or, for g = 0, by eps alone. Measured on the
digits MLP (benchmarks/lowmem_accuracy.py; docs/lowmem.md): ~900 such elements per step,
updates up to 281 lr where fp32 AdamW's stay under 1.6 lr, a held-out loss 25% above
fp32 AdamW's; with the floor, within seed noise. (Open: in 1000-step language-model runs
one floored seed in four lagged fp32 AdamW by 17%, within the scatter fp32's own seeds
show at that length; docs/lowmem.md.) A floored exp_avg_sq is too large, so
the update errs small, the safe side. This is the "zero-point problem" of Li et al.,
"Memory Efficient Optimizers with 4-bit States" (arXiv 2309.01507), whose answer is a
second-moment map without 0; torchao's 4-bit AdamW follows it (subclass_4bit.py,
``get_qmap_unsigned``: "no zero"), its 8-bit one does not. (bitsandbytes keeps exp_avg's
sign in a similar way: a negative exp_avg never stores as 0.)

Traffic per fp32 parameter: p read and written (8), g read (4), two codes read and
written (4), two scales per 256 elements read and written (0.0625): 16.06 B; with bf16
parameters and gradients 10.06 B.
"""

import torch
import triton
import triton.language as tl

from . import _optim_common
from ._launch import BoundKernel
from ._optim_common import (
    TableLayout,
    check_step_arguments,
    last_to_arrive,
    load_amp_scalars,
    locate_chunk,
    unscale_and_clip,
)
from .adam import _DECOUPLED_FLAG, _GROUP_COLUMNS, _MAXIMIZE_FLAG, adam_apply, adam_hyperparameters, adam_moments

# Columns of the tensor table.
PARAM, EXP_AVG, EXP_AVG_SQ, EXP_AVG_SCALES, EXP_AVG_SQ_SCALES, STEP, NUMEL, FIRST_PROGRAM, GROUP, QUANTIZED = range(10)
TABLE_COLUMNS = 10
# Elements per scale, and per program (16 quantization blocks, two [8, 256] tiles).
QUANT_BLOCK = 256
CHUNK_SIZE = 16 * QUANT_BLOCK
# A [8, 256] tile over 8 warps, 8 values per thread: one [16, 256] tile spilled 8 B on
# sm_90 at both 8 and 16 warps (tests/test_static_report.py); two programs of 2,048 instead
# of one of 4,096 would double the per-program table reads (16.15 B per parameter).
TILE_BLOCKS = 8
ADAM8BIT_NUM_WARPS = 8
# Tensors with fewer elements keep fp32 moments (bitsandbytes' and torchao's threshold).
MIN_8BIT_NUMEL = 4096
# The codes of 0 in the signed and unsigned maps (what a new state holds).
SIGNED_ZERO, UNSIGNED_ZERO = 127, 0

_COLUMNS: tl.constexpr = tl.constexpr(TABLE_COLUMNS)
_PARAM: tl.constexpr = tl.constexpr(PARAM)
_EXP_AVG: tl.constexpr = tl.constexpr(EXP_AVG)
_EXP_AVG_SQ: tl.constexpr = tl.constexpr(EXP_AVG_SQ)
_EXP_AVG_SCALES: tl.constexpr = tl.constexpr(EXP_AVG_SCALES)
_EXP_AVG_SQ_SCALES: tl.constexpr = tl.constexpr(EXP_AVG_SQ_SCALES)
_STEP: tl.constexpr = tl.constexpr(STEP)
_NUMEL: tl.constexpr = tl.constexpr(NUMEL)
_FIRST_PROGRAM: tl.constexpr = tl.constexpr(FIRST_PROGRAM)
_GROUP: tl.constexpr = tl.constexpr(GROUP)
_QUANTIZED: tl.constexpr = tl.constexpr(QUANTIZED)
_QUANT_BLOCK: tl.constexpr = tl.constexpr(QUANT_BLOCK)
_TILE_BLOCKS: tl.constexpr = tl.constexpr(TILE_BLOCKS)


@triton.jit
def _pow10(i):
    """10**(i - 6) for the integer group i in 0..6, exact in fp32's rounding of each literal."""
    return tl.where(
        i <= 0,
        1e-6,
        tl.where(
            i == 1,
            1e-5,
            tl.where(i == 2, 1e-4, tl.where(i == 3, 1e-3, tl.where(i == 4, 1e-2, tl.where(i == 5, 1e-1, 1.0)))),
        ),
    )


@triton.jit
def _floor_log2(q):
    """floor(log2(q)) for integers 1 <= q <= 255, by comparisons (exact, no float log)."""
    return (
        (q >= 2).to(tl.int32)
        + (q >= 4).to(tl.int32)
        + (q >= 8).to(tl.int32)
        + (q >= 16).to(tl.int32)
        + (q >= 32).to(tl.int32)
        + (q >= 64).to(tl.int32)
        + (q >= 128).to(tl.int32)
    )


@triton.jit
def _decode(code, SIGNED: tl.constexpr):
    """The dynamic map's value of each int32 code (0..255), in fp32."""
    if SIGNED:
        p = tl.where(code >= 128, code - 128, 126 - code)
        i = _floor_log2(p + 1)
        count = (1 << i).to(tl.float32)
        k = (p + 1 - (1 << i)).to(tl.float32)
        sign = tl.where(code >= 128, 1.0, -1.0)
        zero_code = 127
    else:
        p = code - 1
        i = _floor_log2(tl.maximum(p + 2, 2)) - 1
        count = (2 << i).to(tl.float32)
        k = (p + 2 - (2 << i)).to(tl.float32)
        sign = 1.0
        zero_code = 0
    value = sign * (_pow10(i) * (0.1 + (k + 0.5) * 0.9 / count))
    return tl.where(code == 255, 1.0, tl.where(code == zero_code, 0.0, value))


@triton.jit
def _encode(x, SIGNED: tl.constexpr):
    """The code of the dynamic map's value nearest to each x (|x| <= 1), lowest code on ties.

    The value's decimal group and the linear bin within it give a candidate; its two
    neighbours cover the group boundaries and the special codes 0 and 1.0.
    """
    a = tl.abs(x)
    i = (
        (a >= 1e-6).to(tl.int32)
        + (a >= 1e-5).to(tl.int32)
        + (a >= 1e-4).to(tl.int32)
        + (a >= 1e-3).to(tl.int32)
        + (a >= 1e-2).to(tl.int32)
        + (a >= 1e-1).to(tl.int32)
    )
    if SIGNED:
        count = 1 << i
    else:
        count = 2 << i
    k = tl.floor((a / _pow10(i) - 0.1) / (0.9 / count.to(tl.float32))).to(tl.int32)
    k = tl.minimum(tl.maximum(k, 0), count - 1)
    if SIGNED:
        p = count - 1 + k
        code = tl.where(x < 0, 126 - p, 128 + p)
    else:
        code = count - 1 + k
    best = code
    best_error = tl.abs(_decode(code, SIGNED) - x)
    below = tl.maximum(code - 1, 0)
    below_error = tl.abs(_decode(below, SIGNED) - x)
    best = tl.where(below_error <= best_error, below, best)
    best_error = tl.minimum(below_error, best_error)
    above = tl.minimum(code + 1, 255)
    above_error = tl.abs(_decode(above, SIGNED) - x)
    best = tl.where(above_error < best_error, above, best)
    if not SIGNED:
        # A positive exp_avg_sq never stores as 0 (the map's smallest value instead): see
        # the module docstring, "exp_avg_sq is never rounded to 0".
        best = tl.where(x > 0, tl.maximum(best, 1), best)
    return best


@triton.jit
def adam8bit_kernel(
    tensor_table_ptr,
    grad_table_ptr,
    group_table_ptr,
    program_table_ptr,
    arrivals_ptr,
    element_type_ptr,
    codes_type_ptr,
    grad_scale_ptr,
    found_inf_ptr,
    skipped_ptr,
    clip_coef_ptr,
    HAS_GRAD_SCALE: tl.constexpr,
    HAS_FOUND_INF: tl.constexpr,
    WRITE_SKIPPED: tl.constexpr,
    HAS_CLIP: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """One Adam(W) step with 8-bit blockwise moments for the chunk of one parameter this program owns.

    ``element_type_ptr``: any tensor of the parameters' dtype; ``codes_type_ptr``: any
    uint8 tensor (the codes' pointer type). A program owns ``CHUNK`` elements (whole
    quantization blocks, so each block's absmax is its own program's). GradScaler,
    found_inf/skipped and the clip coefficient work as in kernels/adam.py.
    """
    tensor_index, row, chunk_start, chunk_end, n_chunks = locate_chunk(
        tensor_table_ptr, program_table_ptr, CHUNK, _COLUMNS, _NUMEL, _FIRST_PROGRAM
    )
    step_ptr = tl.load(row + _STEP).to(tl.pointer_type(tl.float32), bitcast=True)
    step = tl.load(step_ptr) + 1.0
    proceed, grad_scale, clip_coef = load_amp_scalars(
        found_inf_ptr,
        skipped_ptr,
        grad_scale_ptr,
        clip_coef_ptr,
        HAS_FOUND_INF,
        WRITE_SKIPPED,
        HAS_GRAD_SCALE,
        HAS_CLIP,
    )
    # The update runs in fp32 for every parameter dtype. Float betas only: the optimizer
    # refuses tensor betas for 8-bit states.
    group = group_table_ptr + tl.load(row + _GROUP) * _GROUP_COLUMNS
    flags, hyperparameters = adam_hyperparameters(group, step, tl.float32, False)
    maximize = (flags & _MAXIMIZE_FLAG) != 0
    decoupled = (flags & _DECOUPLED_FLAG) != 0

    param_ptr = tl.load(row + _PARAM).to(element_type_ptr.dtype, bitcast=True)
    grad_ptr = tl.load(grad_table_ptr + tensor_index).to(element_type_ptr.dtype, bitcast=True)
    out_type: tl.constexpr = element_type_ptr.dtype.element_ty
    quantized = tl.load(row + _QUANTIZED) != 0
    # The chunk as [TILE, 256] tiles, a row per quantization block: each row's absmax is one
    # reduction along axis 1, with no loop over blocks (the interpreter runs 256x fewer
    # operations than with a loop over elements).
    TILE: tl.constexpr = _TILE_BLOCKS
    block_ids = tl.arange(0, TILE)
    if HAS_FOUND_INF:
        # A skipped step reads and writes nothing: an empty chunk.
        chunk_end = tl.where(proceed, chunk_end, chunk_start)
    # The moments' addresses, cast to pointers in each branch (codes and scales, or fp32):
    # names bound inside a runtime `if` do not reach the next one in compiled Triton.
    m_address = tl.load(row + _EXP_AVG)
    v_address = tl.load(row + _EXP_AVG_SQ)
    m_scales_address = tl.load(row + _EXP_AVG_SCALES)
    v_scales_address = tl.load(row + _EXP_AVG_SQ_SCALES)
    for tile_start in tl.range(chunk_start, chunk_start + CHUNK, TILE * _QUANT_BLOCK):
        block_starts = tile_start + block_ids * _QUANT_BLOCK
        offsets = block_starts[:, None] + tl.arange(0, _QUANT_BLOCK)[None, :]
        mask = offsets < chunk_end
        block_mask = block_starts < chunk_end
        param = tl.load(param_ptr + offsets, mask=mask).to(tl.float32)
        grad = tl.load(grad_ptr + offsets, mask=mask).to(tl.float32)
        scale_index = block_starts // _QUANT_BLOCK
        if quantized:
            m_codes = m_address.to(codes_type_ptr.dtype, bitcast=True)
            v_codes = v_address.to(codes_type_ptr.dtype, bitcast=True)
            m_scales = m_scales_address.to(tl.pointer_type(tl.float32), bitcast=True)
            v_scales = v_scales_address.to(tl.pointer_type(tl.float32), bitcast=True)
            m_scale = tl.load(m_scales + scale_index, mask=block_mask)
            v_scale = tl.load(v_scales + scale_index, mask=block_mask)
            exp_avg = _decode(tl.load(m_codes + offsets, mask=mask).to(tl.int32), True) * m_scale[:, None]
            exp_avg_sq = _decode(tl.load(v_codes + offsets, mask=mask).to(tl.int32), False) * v_scale[:, None]
        else:
            m_ptr = m_address.to(tl.pointer_type(tl.float32), bitcast=True)
            v_ptr = v_address.to(tl.pointer_type(tl.float32), bitcast=True)
            exp_avg = tl.load(m_ptr + offsets, mask=mask)
            exp_avg_sq = tl.load(v_ptr + offsets, mask=mask)
        # The update uses the fresh fp32 moments; only what is stored is quantized
        # (bitsandbytes' kOptimizerStatic8bit2StateBlockwise and torchao's AdamW8bit do the same).
        grad = unscale_and_clip(grad, grad_scale, clip_coef, maximize, HAS_GRAD_SCALE, HAS_CLIP)
        param, exp_avg, exp_avg_sq = adam_moments(param, grad, exp_avg, exp_avg_sq, decoupled, hyperparameters)
        param = adam_apply(param, exp_avg, exp_avg_sq, hyperparameters)
        tl.store(param_ptr + offsets, param.to(out_type), mask=mask)
        if quantized:
            m_codes = m_address.to(codes_type_ptr.dtype, bitcast=True)
            v_codes = v_address.to(codes_type_ptr.dtype, bitcast=True)
            m_scales = m_scales_address.to(tl.pointer_type(tl.float32), bitcast=True)
            v_scales = v_scales_address.to(tl.pointer_type(tl.float32), bitcast=True)
            # Each block's new scales: its absolute maxima (masked lanes count as 0).
            m_absmax = tl.max(tl.where(mask, tl.abs(exp_avg), 0.0), axis=1)
            v_absmax = tl.max(tl.where(mask, exp_avg_sq, 0.0), axis=1)
            m_divisor = tl.where(m_absmax > 0, m_absmax, 1.0)[:, None]
            v_divisor = tl.where(v_absmax > 0, v_absmax, 1.0)[:, None]
            m_normal = tl.where(m_absmax[:, None] > 0, exp_avg / m_divisor, 0.0)
            v_normal = tl.where(v_absmax[:, None] > 0, exp_avg_sq / v_divisor, 0.0)
            tl.store(m_codes + offsets, _encode(m_normal, True).to(tl.uint8), mask=mask)
            tl.store(v_codes + offsets, _encode(v_normal, False).to(tl.uint8), mask=mask)
            tl.store(m_scales + scale_index, m_absmax, mask=block_mask)
            tl.store(v_scales + scale_index, v_absmax, mask=block_mask)
        else:
            m_ptr = m_address.to(tl.pointer_type(tl.float32), bitcast=True)
            v_ptr = v_address.to(tl.pointer_type(tl.float32), bitcast=True)
            tl.store(m_ptr + offsets, exp_avg, mask=mask)
            tl.store(v_ptr + offsets, exp_avg_sq, mask=mask)

    # The step counter: as in kernels/adam.py, the last program of the parameter writes it.
    if last_to_arrive(arrivals_ptr, tensor_index, n_chunks, proceed):
        tl.store(step_ptr, step)


# No aligned columns: the kernel takes no alignment hint.
TABLE_LAYOUT = TableLayout(TABLE_COLUMNS, NUMEL, FIRST_PROGRAM)


def table_row(param, exp_avg, exp_avg_sq, exp_avg_scales, exp_avg_sq_scales, step, first_program, group) -> list[int]:
    """One tensor-table row: codes and scales (quantized), or fp32 moments and no scales."""
    quantized = exp_avg_scales is not None
    return [
        param.data_ptr(),
        exp_avg.data_ptr(),
        exp_avg_sq.data_ptr(),
        exp_avg_scales.data_ptr() if quantized else 0,
        exp_avg_sq_scales.data_ptr() if quantized else 0,
        step.data_ptr(),
        param.numel(),
        first_program,
        group,
        int(quantized),
    ]


def programs_for(numel: int) -> int:
    """Programs that update one parameter (at least one, for its step)."""
    return _optim_common.programs_for(numel, CHUNK_SIZE)


def adam8bit_step(
    tensor_table: torch.Tensor,
    grad_table: torch.Tensor,
    group_table: torch.Tensor,
    program_table: torch.Tensor,
    arrivals: torch.Tensor,
    element_type: torch.Tensor,
    codes_type: torch.Tensor,
    *,
    grad_scale: torch.Tensor | None = None,
    found_inf: torch.Tensor | None = None,
    skipped: torch.Tensor | None = None,
    clip_coef: torch.Tensor | None = None,
) -> None:
    """Launch one 8-bit Adam(W) step over every parameter listed in the tables.

    Args:
        tensor_table: int64 [n_tensors, TABLE_COLUMNS] built from :func:`table_row`.
        grad_table: int64 [n_tensors], the gradient addresses.
        group_table: int64 [n_groups, GROUP_COLUMNS] from :func:`fused_ops.kernels.adam.group_row`
            (float betas; amsgrad off).
        program_table: int32 [n_programs], the row each program updates
            (:func:`programs_for` per row).
        arrivals: int32 [n_tensors] of zeros (the kernel leaves them zero).
        element_type: any tensor of the parameters' dtype on their device.
        codes_type: any uint8 tensor on the device.
        grad_scale, found_inf, skipped, clip_coef: as :func:`fused_ops.kernels.adam.adam_step`.

    Example:
        See :class:`fused_ops.optim.AdamW8bit`, which builds the tables and calls this.
    """
    check_step_arguments(skipped, found_inf)
    _adam8bit_launch(
        (program_table.numel(),),
        tensor_table,
        grad_table,
        group_table,
        program_table,
        arrivals,
        element_type,
        codes_type,
        grad_scale,
        found_inf,
        skipped,
        clip_coef,
        HAS_GRAD_SCALE=grad_scale is not None,
        HAS_FOUND_INF=found_inf is not None,
        WRITE_SKIPPED=skipped is not None,
        HAS_CLIP=clip_coef is not None,
        CHUNK=CHUNK_SIZE,
        num_warps=ADAM8BIT_NUM_WARPS,
    )


# Launched through BoundKernel: the compiled kernel is looked up once per signature (kernels/_launch.py).
_adam8bit_launch = BoundKernel(adam8bit_kernel)
