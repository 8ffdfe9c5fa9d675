"""SGD (momentum, dampening, Nesterov, weight decay): one launch for every parameter of a (device, dtype).

Table-driven like kernels/adam.py: the kernel reads the parameters' addresses from
tables that the host caches between steps:

    tensor table, int64 [n_tensors, TABLE_COLUMNS], one row per parameter:
        PARAM, MOMENTUM_BUFFER (0 when the group has no momentum), FIRST_FLAG (the
        address of an int32 that is 1 while the buffer has never been written, else 0),
        NUMEL, FIRST_PROGRAM, GROUP
    grad table, int64 [n_tensors]: gradient addresses (the column that changes per step).
    group table, int64 [n_groups, GROUP_COLUMNS] (see :func:`group_row`): lr, momentum,
        dampening and weight decay as fp64 bit patterns, the addresses of a tensor lr or
        weight decay, and the flags (nesterov, maximize).
    program table, int32 [n_programs]: the row each program updates.

torch's first-step rule: the momentum buffer starts as the gradient itself (no
dampening), and every later step is ``buf = momentum * buf + (1 - dampening) * g``. The
host cannot know, without a sync, whether a step that GradScaler may skip initialized a
new buffer, so the buffer's "never written" flag lives on the device: the step that
writes the buffer clears it (the last program of the parameter to arrive, as Adam's
step counter), and a skipped step leaves it set.

Traffic per fp32 parameter: read p, g (, buf), write p (, buf): 12 bytes without
momentum, 20 with, 16 on a buffer's first step.
"""

import torch
import triton
import triton.language as tl

from ._config import SGD_BLOCK_SIZE, SGD_CHUNK_SIZE, SGD_NUM_WARPS
from ._launch import BoundKernel
from ._optim_common import (
    TableLayout,
    check_step_arguments,
    float_bits,
    last_to_arrive,
    load_amp_scalars,
    load_hyperparameter,
    locate_chunk,
    unscale_and_clip,
)

# Columns of the tensor table (Python side) ...
PARAM, MOMENTUM_BUFFER, FIRST_FLAG, NUMEL, FIRST_PROGRAM, GROUP = range(6)
TABLE_COLUMNS = 6
# ... of the group table ...
LR, LR_ADDRESS, MOMENTUM, DAMPENING, WEIGHT_DECAY, WEIGHT_DECAY_ADDRESS, FLAGS = range(7)
GROUP_COLUMNS = 7
# ... and the bits of its FLAGS column. *_FP64: that tensor hyperparameter is fp64 (else fp32).
NESTEROV_FLAG, MAXIMIZE_FLAG, LR_FP64_FLAG, WEIGHT_DECAY_FP64_FLAG = 1, 2, 4, 8

_COLUMNS: tl.constexpr = tl.constexpr(TABLE_COLUMNS)
_PARAM: tl.constexpr = tl.constexpr(PARAM)
_MOMENTUM_BUFFER: tl.constexpr = tl.constexpr(MOMENTUM_BUFFER)
_FIRST_FLAG: tl.constexpr = tl.constexpr(FIRST_FLAG)
_NUMEL: tl.constexpr = tl.constexpr(NUMEL)
_FIRST_PROGRAM: tl.constexpr = tl.constexpr(FIRST_PROGRAM)
_GROUP: tl.constexpr = tl.constexpr(GROUP)
_GROUP_COLUMNS: tl.constexpr = tl.constexpr(GROUP_COLUMNS)
_LR: tl.constexpr = tl.constexpr(LR)
_LR_ADDRESS: tl.constexpr = tl.constexpr(LR_ADDRESS)
_MOMENTUM: tl.constexpr = tl.constexpr(MOMENTUM)
_DAMPENING: tl.constexpr = tl.constexpr(DAMPENING)
_WEIGHT_DECAY: tl.constexpr = tl.constexpr(WEIGHT_DECAY)
_WEIGHT_DECAY_ADDRESS: tl.constexpr = tl.constexpr(WEIGHT_DECAY_ADDRESS)
_FLAGS: tl.constexpr = tl.constexpr(FLAGS)
_NESTEROV_FLAG: tl.constexpr = tl.constexpr(NESTEROV_FLAG)
_MAXIMIZE_FLAG: tl.constexpr = tl.constexpr(MAXIMIZE_FLAG)
_LR_FP64_FLAG: tl.constexpr = tl.constexpr(LR_FP64_FLAG)
_WEIGHT_DECAY_FP64_FLAG: tl.constexpr = tl.constexpr(WEIGHT_DECAY_FP64_FLAG)


@triton.jit
def _update_block(
    offsets,
    mask,
    pointers,
    scalars,
    switches,
    ANY_MOMENTUM: tl.constexpr,
    HAS_GRAD_SCALE: tl.constexpr,
    HAS_CLIP: tl.constexpr,
):
    """SGD on one block: read p, g (and the buffer) once, write p (and the buffer) once.

    What the chunk's blocks share arrives as three tuples, so that the full blocks' and
    the tail's call sites stay one line each: ``pointers`` (param, grad, buffer),
    ``scalars`` (grad_scale, clip_coef, lr, momentum, one_minus_dampening, weight_decay)
    and the program's uniform ``switches`` (has_buffer, first, nesterov, maximize).
    Scalars arrive in the compute dtype (fp64 for fp64 parameters, else fp32), except
    GradScaler's fp32 ``grad_scale`` (a divisor) and the fp32 ``clip_coef``.
    """
    param_ptr, grad_ptr, buffer_ptr = pointers
    grad_scale, clip_coef, lr, momentum, one_minus_dampening, weight_decay = scalars
    has_buffer, first, nesterov, maximize = switches
    out_type: tl.constexpr = param_ptr.dtype.element_ty
    compute_type: tl.constexpr = tl.float64 if out_type == tl.float64 else tl.float32
    param = tl.load(param_ptr + offsets, mask=mask).to(compute_type)
    grad = tl.load(grad_ptr + offsets, mask=mask).to(compute_type)
    grad = unscale_and_clip(grad, grad_scale, clip_coef, maximize, HAS_GRAD_SCALE, HAS_CLIP)
    # A select, so an inf parameter with weight_decay=0 leaves the gradient alone (torch's `if`).
    grad = tl.where(weight_decay != 0, grad + weight_decay * param, grad)
    if ANY_MOMENTUM:
        # Uniform per program: groups with and without momentum share the launch.
        if has_buffer:
            if first:
                buffer = grad  # torch's first step: the buffer is a copy of the gradient
            else:
                buffer = tl.load(buffer_ptr + offsets, mask=mask).to(compute_type)
                buffer = buffer * momentum + one_minus_dampening * grad
            tl.store(buffer_ptr + offsets, buffer.to(out_type), mask=mask)
            if nesterov:
                grad = grad + momentum * buffer
            else:
                grad = buffer
    param = param - lr * grad
    tl.store(param_ptr + offsets, param.to(out_type), mask=mask)


@triton.jit
def sgd_kernel(
    tensor_table_ptr,
    grad_table_ptr,
    group_table_ptr,
    program_table_ptr,
    arrivals_ptr,
    element_type_ptr,
    grad_scale_ptr,
    found_inf_ptr,
    skipped_ptr,
    clip_coef_ptr,
    chunk_size,
    ANY_MOMENTUM: tl.constexpr,
    HAS_GRAD_SCALE: tl.constexpr,
    HAS_FOUND_INF: tl.constexpr,
    WRITE_SKIPPED: tl.constexpr,
    HAS_CLIP: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    """One SGD step for the chunk of one parameter that this program owns.

    The arguments are those of kernels/adam.py's ``adam_kernel``; ``ANY_MOMENTUM``: some
    group of the launch has momentum != 0.
    """
    tensor_index, row, chunk_start, chunk_end, n_chunks = locate_chunk(
        tensor_table_ptr, program_table_ptr, chunk_size, _COLUMNS, _NUMEL, _FIRST_PROGRAM
    )
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

    group = group_table_ptr + tl.load(row + _GROUP) * _GROUP_COLUMNS
    flags = tl.load(group + _FLAGS)
    lr = load_hyperparameter(group, _LR, _LR_ADDRESS, flags, _LR_FP64_FLAG)
    weight_decay = load_hyperparameter(group, _WEIGHT_DECAY, _WEIGHT_DECAY_ADDRESS, flags, _WEIGHT_DECAY_FP64_FLAG)
    momentum = tl.load(group + _MOMENTUM).to(tl.float64, bitcast=True)
    dampening = tl.load(group + _DAMPENING).to(tl.float64, bitcast=True)
    nesterov = (flags & _NESTEROV_FLAG) != 0
    maximize = (flags & _MAXIMIZE_FLAG) != 0

    param_ptr = tl.load(row + _PARAM).to(element_type_ptr.dtype, bitcast=True)
    grad_ptr = tl.load(grad_table_ptr + tensor_index).to(element_type_ptr.dtype, bitcast=True)
    buffer_ptr = param_ptr  # a placeholder, never read without a buffer
    has_buffer = False
    first = False
    if ANY_MOMENTUM:
        buffer_address = tl.load(row + _MOMENTUM_BUFFER)
        has_buffer = buffer_address != 0
        buffer_ptr = tl.where(has_buffer, buffer_address, tl.load(row + _PARAM)).to(
            element_type_ptr.dtype, bitcast=True
        )
        first_address = tl.load(row + _FIRST_FLAG)
        first_ptr = first_address.to(tl.pointer_type(tl.int32), bitcast=True)
        first = tl.load(first_ptr, mask=first_address != 0, other=0) != 0
    if ALIGNED:
        # Addresses read from memory carry no alignment facts; the host checked them.
        param_ptr = tl.multiple_of(param_ptr, 16)
        grad_ptr = tl.multiple_of(grad_ptr, 16)
        buffer_ptr = tl.multiple_of(buffer_ptr, 16)

    IS_FP64: tl.constexpr = element_type_ptr.dtype.element_ty == tl.float64
    compute_type: tl.constexpr = tl.float64 if IS_FP64 else tl.float32
    lr_c = lr.to(compute_type)
    momentum_c = momentum.to(compute_type)
    # 1 - dampening in double, as torch computes alpha=1 - dampening in Python.
    one_minus_dampening_c = (1.0 - dampening).to(compute_type)
    weight_decay_c = weight_decay.to(compute_type)

    pointers = (param_ptr, grad_ptr, buffer_ptr)
    scalars = (grad_scale, clip_coef, lr_c, momentum_c, one_minus_dampening_c, weight_decay_c)
    switches = (has_buffer, first, nesterov, maximize)
    # Full blocks load and store unmasked (mask=None is a compile-time constant, so the
    # compiler can use 128-bit accesses); only a chunk's last, partial block is masked.
    n_full_blocks = tl.where(proceed, (chunk_end - chunk_start) // BLOCK_SIZE, 0)
    for block in range(0, n_full_blocks):
        offsets = chunk_start + block * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        _update_block(offsets, None, pointers, scalars, switches, ANY_MOMENTUM, HAS_GRAD_SCALE, HAS_CLIP)
    tail_start = chunk_start + n_full_blocks * BLOCK_SIZE
    if (tail_start < chunk_end) & proceed:
        offsets = tail_start + tl.arange(0, BLOCK_SIZE)
        _update_block(offsets, offsets < chunk_end, pointers, scalars, switches, ANY_MOMENTUM, HAS_GRAD_SCALE, HAS_CLIP)

    if ANY_MOMENTUM:
        # The buffer has been written: clear its first-step flag once every program of
        # the parameter has read it (the last to arrive clears it, acq_rel as Adam's step).
        if last_to_arrive(arrivals_ptr, tensor_index, n_chunks, first & proceed):
            tl.store(first_ptr, 0)


ALIGNED_COLUMNS = (PARAM, MOMENTUM_BUFFER)
TABLE_LAYOUT = TableLayout(TABLE_COLUMNS, NUMEL, FIRST_PROGRAM, ALIGNED_COLUMNS)


def table_row(param, momentum_buffer, first_flag_address: int, first_program: int, group: int) -> list[int]:
    """One row of the tensor table (see the module docstring)."""
    return [
        param.data_ptr(),
        0 if momentum_buffer is None else momentum_buffer.data_ptr(),
        first_flag_address,
        param.numel(),
        first_program,
        group,
    ]


def group_row(
    *,
    lr: float,
    lr_address: int,
    lr_fp64: bool,
    momentum: float,
    dampening: float,
    weight_decay: float,
    weight_decay_address: int,
    weight_decay_fp64: bool,
    nesterov: bool,
    maximize: bool,
) -> list[int]:
    """One row of the group table; a tensor lr or weight decay is passed by address (its float is ignored)."""
    flags = (
        NESTEROV_FLAG * nesterov
        + MAXIMIZE_FLAG * maximize
        + LR_FP64_FLAG * lr_fp64
        + WEIGHT_DECAY_FP64_FLAG * weight_decay_fp64
    )
    return [
        float_bits(float(lr)),
        lr_address,
        float_bits(float(momentum)),
        float_bits(float(dampening)),
        float_bits(float(weight_decay)),
        weight_decay_address,
        flags,
    ]


def sgd_step(
    tensor_table: torch.Tensor,
    grad_table: torch.Tensor,
    group_table: torch.Tensor,
    program_table: torch.Tensor,
    arrivals: torch.Tensor,
    element_type: torch.Tensor,
    *,
    any_momentum: bool,
    grad_scale: torch.Tensor | None = None,
    found_inf: torch.Tensor | None = None,
    skipped: torch.Tensor | None = None,
    clip_coef: torch.Tensor | None = None,
    chunk_size: int = SGD_CHUNK_SIZE,
    aligned: bool = False,
) -> None:
    """Launch one SGD step over every parameter listed in the tables.

    Args:
        tensor_table: int64 [n_tensors, TABLE_COLUMNS] built from :func:`table_row`.
        grad_table: int64 [n_tensors], the gradient addresses.
        group_table: int64 [n_groups, GROUP_COLUMNS] built from :func:`group_row`.
        program_table: int32 [n_programs], the row each program updates.
        arrivals: int32 [n_tensors] of zeros (the kernel leaves them zero).
        element_type: any tensor of the parameters' (real) dtype, on their device.
        any_momentum: some row has a momentum buffer.
        grad_scale, found_inf, skipped, clip_coef: as in :func:`fused_ops.kernels.adam.adam_step`.
        chunk_size: elements per program, the one used to build the tables.
        aligned: every p, g, buffer address is a multiple of 16 bytes.

    Example:
        See :class:`fused_ops.optim.SGD`, which builds the tables and calls this.
    """
    check_step_arguments(skipped, found_inf, chunk_size, SGD_BLOCK_SIZE)
    _sgd_launch(
        (program_table.numel(),),
        tensor_table,
        grad_table,
        group_table,
        program_table,
        arrivals,
        element_type,
        grad_scale,
        found_inf,
        skipped,
        clip_coef,
        chunk_size,
        ANY_MOMENTUM=any_momentum,
        HAS_GRAD_SCALE=grad_scale is not None,
        HAS_FOUND_INF=found_inf is not None,
        WRITE_SKIPPED=skipped is not None,
        HAS_CLIP=clip_coef is not None,
        ALIGNED=aligned,
        BLOCK_SIZE=SGD_BLOCK_SIZE,
        num_warps=SGD_NUM_WARPS,
    )


# Launched through BoundKernel: the compiled kernel is looked up once per signature (kernels/_launch.py).
_sgd_launch = BoundKernel(sgd_kernel)
