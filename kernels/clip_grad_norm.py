"""Gradient norms for clipping: one launch per (device, dtype) computes the total norm and the clip coefficient.

``grad_norm_kernel`` reads every gradient once (4 bytes per fp32 element). Each program
reduces one chunk of one gradient to a partial (sum of |g|^p, or max |g| for inf) and
stores it in fp64 in its slot of ``partials``; the program that arrives last (an int32
acq_rel counter, so deterministic) adds every slot in a fixed order, and writes the
total norm and ``clip_coef = min(max_norm / (total_norm + 1e-6), 1)``. Several launches
(one per dtype on a device) share one ``partials`` buffer and counter: the last program
of the last launch finishes.

``grad_scale_kernel`` is torch's ``clip_grad_norm_`` second half: each gradient times
the coefficient, in place (8 bytes per fp32 element).

Tables (int64): ``table`` [n_tensors, columns] holding each tensor's NUMEL and
FIRST_PROGRAM at the columns given as constexprs (so the optimizers' own tensor tables
serve as they are), ``grad_table`` [n_tensors] the gradient addresses, and the int32
``program_table`` [n_programs], the row of each program.
"""

import torch
import triton
import triton.language as tl

from ._config import CLIP_BLOCK_SIZE, CLIP_CHUNK_SIZE, CLIP_NUM_WARPS, CLIP_REDUCE_BLOCK_SIZE
from ._launch import BoundKernel
from ._optim_common import locate_chunk

# NORM constexpr values: which p-norm.
NORM_L1, NORM_L2, NORM_INF, NORM_P = 1, 2, 0, 3
# Columns of the table that clip_grad_norm_ builds for arbitrary gradients.
NUMEL, FIRST_PROGRAM = 0, 1
TABLE_COLUMNS = 2
_NUMEL: tl.constexpr = tl.constexpr(NUMEL)
_FIRST_PROGRAM: tl.constexpr = tl.constexpr(FIRST_PROGRAM)
_TABLE_COLUMNS: tl.constexpr = tl.constexpr(TABLE_COLUMNS)


@triton.jit
def grad_norm_kernel(
    table_ptr,
    grad_table_ptr,
    program_table_ptr,
    element_type_ptr,
    partials_ptr,
    arrivals_ptr,
    grad_scale_ptr,
    norm_ptr,
    clip_coef_ptr,
    program_offset,
    total_programs,
    max_norm,
    norm_type,
    chunk_size,
    COLUMNS: tl.constexpr,
    NUMEL_COLUMN: tl.constexpr,
    FIRST_PROGRAM_COLUMN: tl.constexpr,
    NORM: tl.constexpr,
    HAS_GRAD_SCALE: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    REDUCE_BLOCK_SIZE: tl.constexpr,
):
    """Partial norm of one chunk of one gradient; the last program overall writes the norm and coefficient.

    ``grad_scale_ptr`` (``HAS_GRAD_SCALE``): GradScaler's fp32 scale; the norm is that of
    the unscaled gradients. ``norm_ptr``: 0-d output in the norm's dtype. ``clip_coef_ptr``:
    fp32 0-d output.
    """
    pid = tl.program_id(0).to(tl.int64)
    tensor_index, _row, chunk_start, chunk_end, _n_chunks = locate_chunk(
        table_ptr, program_table_ptr, chunk_size, COLUMNS, NUMEL_COLUMN, FIRST_PROGRAM_COLUMN
    )
    grad_ptr = tl.load(grad_table_ptr + tensor_index).to(element_type_ptr.dtype, bitcast=True)
    IS_FP64: tl.constexpr = element_type_ptr.dtype.element_ty == tl.float64
    compute_type: tl.constexpr = tl.float64 if IS_FP64 else tl.float32
    p = tl.cast(norm_type, compute_type)
    acc = tl.zeros((BLOCK_SIZE,), dtype=compute_type)
    for start in range(chunk_start, chunk_end, BLOCK_SIZE):
        offsets = start + tl.arange(0, BLOCK_SIZE)
        g = tl.abs(tl.load(grad_ptr + offsets, mask=offsets < chunk_end, other=0.0).to(compute_type))
        if HAS_GRAD_SCALE:
            g = g / tl.load(grad_scale_ptr).to(compute_type)
        if NORM == 0:
            acc = tl.maximum(acc, g, propagate_nan=tl.PropagateNan.ALL)
        elif NORM == 1:
            acc += g
        elif NORM == 2:
            acc += g * g
        else:
            acc += tl.where(g == 0, 0.0, tl.exp2(p * tl.log2(g)))
    if NORM == 0:
        # tl.max does not promise to propagate NaN; torch's inf-norm of a NaN is NaN.
        has_nan = tl.max((acc != acc).to(tl.int32), axis=0) > 0
        partial = tl.where(has_nan, float("nan"), tl.max(acc, axis=0).to(tl.float64))
    else:
        partial = tl.sum(acc, axis=0).to(tl.float64)
    tl.store(partials_ptr + program_offset + pid, partial)

    arrived = tl.atomic_add(arrivals_ptr, 1, sem="acq_rel")
    if arrived == total_programs - 1:
        # Every partial is in memory (acq_rel): add them in slot order, deterministic.
        total = tl.zeros((REDUCE_BLOCK_SIZE,), dtype=tl.float64)
        for first_slot in range(0, total_programs, REDUCE_BLOCK_SIZE):
            slots = first_slot + tl.arange(0, REDUCE_BLOCK_SIZE)
            values = tl.load(partials_ptr + slots, mask=slots < total_programs, other=0.0)
            if NORM == 0:
                total = tl.maximum(total, values, propagate_nan=tl.PropagateNan.ALL)
            else:
                total += values
        if NORM == 0:
            has_nan = tl.max((total != total).to(tl.int32), axis=0) > 0
            norm = tl.where(has_nan, float("nan"), tl.max(total, axis=0))
        else:
            norm = tl.sum(total, axis=0)
            if NORM == 2:
                norm = tl.sqrt(norm)
            elif NORM == 3:
                norm = tl.exp2(tl.log2(norm) / tl.cast(norm_type, tl.float64))
        norm_out = norm.to(norm_ptr.dtype.element_ty)
        tl.store(norm_ptr, norm_out)
        # torch: max_norm / (total_norm + 1e-6), clamped to 1, from the norm in its dtype.
        coef = tl.cast(max_norm, tl.float32) / (norm_out.to(tl.float32) + 1e-6)
        tl.store(clip_coef_ptr, tl.minimum(coef, 1.0))
        tl.store(arrivals_ptr, 0)


@triton.jit
def grad_scale_kernel(
    table_ptr,
    grad_table_ptr,
    program_table_ptr,
    element_type_ptr,
    clip_coef_ptr,
    chunk_size,
    BLOCK_SIZE: tl.constexpr,
):
    """Multiply one chunk of one gradient by the fp32 clip coefficient, in place."""
    tensor_index, _row, chunk_start, chunk_end, _n_chunks = locate_chunk(
        table_ptr, program_table_ptr, chunk_size, _TABLE_COLUMNS, _NUMEL, _FIRST_PROGRAM
    )
    grad_ptr = tl.load(grad_table_ptr + tensor_index).to(element_type_ptr.dtype, bitcast=True)
    IS_FP64: tl.constexpr = element_type_ptr.dtype.element_ty == tl.float64
    compute_type: tl.constexpr = tl.float64 if IS_FP64 else tl.float32
    coef = tl.load(clip_coef_ptr).to(compute_type)
    for start in range(chunk_start, chunk_end, BLOCK_SIZE):
        offsets = start + tl.arange(0, BLOCK_SIZE)
        mask = offsets < chunk_end
        g = tl.load(grad_ptr + offsets, mask=mask).to(compute_type)
        tl.store(grad_ptr + offsets, (g * coef).to(element_type_ptr.dtype.element_ty), mask=mask)


def norm_code(norm_type: float) -> int:
    """The kernel's NORM constexpr for a norm type (1, 2, inf, or any other p > 0)."""
    if norm_type == float("inf"):
        return NORM_INF
    return {1.0: NORM_L1, 2.0: NORM_L2}.get(norm_type, NORM_P)


def grad_norm(
    table: torch.Tensor,
    grad_table: torch.Tensor,
    program_table: torch.Tensor,
    element_type: torch.Tensor,
    partials: torch.Tensor,
    arrivals: torch.Tensor,
    norm: torch.Tensor,
    clip_coef: torch.Tensor,
    *,
    program_offset: int,
    max_norm: float,
    norm_type: float,
    grad_scale: torch.Tensor | None = None,
    columns: tuple[int, int, int] = (TABLE_COLUMNS, NUMEL, FIRST_PROGRAM),
    chunk_size: int = CLIP_CHUNK_SIZE,
) -> None:
    """Launch the norm pass over the gradients listed in the tables (see the module docstring).

    Args:
        table, grad_table, program_table: as in the module docstring.
        element_type: any tensor of the gradients' dtype on their device.
        partials: fp64 [total programs of every launch sharing it]; arrivals: int32 [1] zero.
        norm: 0-d output in the norm's dtype; clip_coef: fp32 0-d output.
        program_offset: this launch's first slot in ``partials``.
        columns: (columns of ``table``, its NUMEL column, its FIRST_PROGRAM column).
    """
    _grad_norm_launch(
        (program_table.numel(),),
        table,
        grad_table,
        program_table,
        element_type,
        partials,
        arrivals,
        grad_scale,
        norm,
        clip_coef,
        program_offset,
        partials.numel(),
        float(max_norm),
        float(norm_type),
        chunk_size,
        COLUMNS=columns[0],
        NUMEL_COLUMN=columns[1],
        FIRST_PROGRAM_COLUMN=columns[2],
        NORM=norm_code(norm_type),
        HAS_GRAD_SCALE=grad_scale is not None,
        BLOCK_SIZE=CLIP_BLOCK_SIZE,
        REDUCE_BLOCK_SIZE=CLIP_REDUCE_BLOCK_SIZE,
        num_warps=CLIP_NUM_WARPS,
    )


def grad_scale(
    table: torch.Tensor,
    grad_table: torch.Tensor,
    program_table: torch.Tensor,
    element_type: torch.Tensor,
    clip_coef: torch.Tensor,
    chunk_size: int = CLIP_CHUNK_SIZE,
) -> None:
    """Launch the in-place scaling of the gradients in the tables by ``clip_coef`` (fp32 0-d)."""
    _grad_scale_launch(
        (program_table.numel(),),
        table,
        grad_table,
        program_table,
        element_type,
        clip_coef,
        chunk_size,
        BLOCK_SIZE=CLIP_BLOCK_SIZE,
        num_warps=CLIP_NUM_WARPS,
    )


# Launched through BoundKernel: the compiled kernel is looked up once per signature (kernels/_launch.py).
_grad_norm_launch = BoundKernel(grad_norm_kernel)
_grad_scale_launch = BoundKernel(grad_scale_kernel)
