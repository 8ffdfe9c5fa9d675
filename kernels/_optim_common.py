"""What the table-driven optimizer kernels (adam.py, adam8bit.py, sgd.py, clip_grad_norm.py) share.

Every optimizer launch updates all parameters of a (device, dtype): each program reads,
from int64 launch tables, which parameter it updates and where its chunk lies (see
kernels/adam.py for the tables). The ``@triton.jit`` helpers here are the parts of that
protocol that do not depend on the optimizer: finding the program's chunk, GradScaler's
``found_inf`` and ``grad_scale`` and the clip coefficient, a hyperparameter given as a
float or as a tensor's address, the gradient as the update sees it, and the
per-parameter "last program to arrive" counter. (The Adam update that the dense and
8-bit kernels share is in kernels/adam.py.) They are inlined when compiled: the kernels
built from them compile to the same loads and stores as when each wrote them out
(registers within 2 on sm_90, no spills). The host helpers beside them encode the
tables (:func:`float_bits`, :func:`programs_for`) and check launcher arguments.
"""

import struct
from typing import NamedTuple

import triton
import triton.language as tl

_FLOAT64, _INT64 = struct.Struct("<d"), struct.Struct("<q")


class TableLayout(NamedTuple):
    """How a family's tensor table is laid out, for the host code that builds it and the clip's norm pass.

    Attributes:
        columns: int64s per row (one row per parameter).
        numel, first_program: the columns of a row's element count and first program id.
        aligned_columns: address columns the kernel may assume 16-byte aligned when every
            row's are (empty: the kernel takes no alignment hint).
    """

    columns: int
    numel: int
    first_program: int
    aligned_columns: tuple[int, ...] = ()


def float_bits(value: float) -> int:
    """The int64 whose bits are the fp64 ``value`` (group tables hold floats this way)."""
    return _INT64.unpack(_FLOAT64.pack(value))[0]


def check_step_arguments(skipped, found_inf, chunk_size: int = 0, block_size: int = 1) -> None:
    """Refuse launcher arguments the optimizer kernels cannot use.

    Raises:
        ValueError: ``chunk_size`` is not a whole number of ``block_size`` blocks, or a
            ``skipped`` flag is to be written without the ``found_inf`` it comes from.
    """
    if chunk_size % block_size != 0:
        raise ValueError(f"chunk_size must be a multiple of {block_size}, got {chunk_size}")
    if skipped is not None and found_inf is None:
        raise ValueError("skipped is written from found_inf, which is None")


def programs_for(numel: int, chunk_size: int) -> int:
    """Programs that update one parameter of ``numel`` elements, ``chunk_size`` each (at least one, for its step)."""
    return max(1, -(-numel // chunk_size))


@triton.jit
def locate_chunk(
    tensor_table_ptr,
    program_table_ptr,
    chunk_size,
    COLUMNS: tl.constexpr,
    NUMEL: tl.constexpr,
    FIRST_PROGRAM: tl.constexpr,
):
    """The chunk of one parameter that this program updates.

    Args:
        tensor_table_ptr: int64 [n_tensors, COLUMNS], one row per parameter, whose
            ``NUMEL`` and ``FIRST_PROGRAM`` columns hold its element count and the id of
            its first program.
        program_table_ptr: int32 [n_programs], the row each program updates.
        chunk_size: elements per program (a runtime int or a constexpr).

    Returns:
        ``(tensor_index, row, chunk_start, chunk_end, n_chunks)``: the int64 row index, a
        pointer to the row, the chunk's element range ``[chunk_start, chunk_end)`` (empty
        for an empty parameter) and the parameter's program count (at least 1: an empty
        parameter still gets one program, for its step).
    """
    pid = tl.program_id(0).to(tl.int64)
    tensor_index = tl.load(program_table_ptr + pid).to(tl.int64)
    row = tensor_table_ptr + tensor_index * COLUMNS
    numel = tl.load(row + NUMEL)
    chunk_start = (pid - tl.load(row + FIRST_PROGRAM)) * chunk_size
    chunk_end = tl.minimum(chunk_start + chunk_size, numel)
    # cdiv spelled out: tl.cdiv is a nested @jit call, slow under the interpreter.
    n_chunks = tl.maximum((numel + chunk_size - 1) // chunk_size, 1)
    return tensor_index, row, chunk_start, chunk_end, n_chunks


@triton.jit
def load_amp_scalars(
    found_inf_ptr,
    skipped_ptr,
    grad_scale_ptr,
    clip_coef_ptr,
    HAS_FOUND_INF: tl.constexpr,
    WRITE_SKIPPED: tl.constexpr,
    HAS_GRAD_SCALE: tl.constexpr,
    HAS_CLIP: tl.constexpr,
):
    """GradScaler's ``found_inf`` and ``grad_scale`` and the clip coefficient, read once per program.

    Args:
        found_inf_ptr, grad_scale_ptr: GradScaler's fp32 0-d tensors (``HAS_FOUND_INF``,
            ``HAS_GRAD_SCALE``).
        skipped_ptr: 0-d bool tensor where program 0 stores ``found_inf != 0``
            (``WRITE_SKIPPED``), so the optimizer's skip flag costs no launch of its own.
        clip_coef_ptr: fp32 0-d clip coefficient that a norm pass left on the device (``HAS_CLIP``).

    Returns:
        ``(proceed, grad_scale, clip_coef)``: False when the step is skipped (an inf or
        NaN gradient was found), and the two fp32 scalars (1.0 when absent; then never
        applied, see :func:`unscale_and_clip`).
    """
    proceed = True
    if HAS_FOUND_INF:
        found_inf = tl.load(found_inf_ptr)
        proceed = found_inf == 0
        if WRITE_SKIPPED:
            tl.store(skipped_ptr, found_inf != 0, mask=tl.program_id(0) == 0)
    grad_scale = 1.0
    if HAS_GRAD_SCALE:
        grad_scale = tl.load(grad_scale_ptr)
    clip_coef = 1.0
    if HAS_CLIP:
        clip_coef = tl.load(clip_coef_ptr)
    return proceed, grad_scale, clip_coef


@triton.jit
def load_hyperparameter(group, VALUE: tl.constexpr, ADDRESS: tl.constexpr, flags, FP64_FLAG: tl.constexpr):
    """A group-table hyperparameter in fp64: a float's bit pattern, or read from a tensor's address.

    Args:
        group: pointer to the group's row of the int64 group table.
        VALUE: column of the float's fp64 bit pattern (ignored when an address is given).
        ADDRESS: column of the tensor's address, 0 for a float hyperparameter. Reading the
            tensor on the device lets a scheduler change it in place without a host sync.
        flags: the row's flag bits; ``FP64_FLAG`` set: the tensor is fp64, else fp32.
    """
    value = tl.load(group + VALUE).to(tl.float64, bitcast=True)
    address = tl.load(group + ADDRESS)
    if address != 0:
        if (flags & FP64_FLAG) != 0:
            value = tl.load(address.to(tl.pointer_type(tl.float64), bitcast=True))
        else:
            value = tl.load(address.to(tl.pointer_type(tl.float32), bitcast=True)).to(tl.float64)
    return value


@triton.jit
def unscale_and_clip(grad, grad_scale, clip_coef, maximize, HAS_GRAD_SCALE: tl.constexpr, HAS_CLIP: tl.constexpr):
    """The gradient the update uses: GradScaler's unscale, the clip coefficient, then maximize's sign.

    ``grad`` is in its compute dtype (fp64 for fp64 parameters, else fp32); the fp32
    ``grad_scale`` and ``clip_coef`` are cast to it. torch's recipe order: unscale, then
    clip, and the optimizer negates for ``maximize``.
    """
    compute_type: tl.constexpr = grad.dtype
    if HAS_GRAD_SCALE:
        if compute_type == tl.float64:
            grad = grad / tl.cast(grad_scale, compute_type)
        else:
            # Correctly rounded, as torch's (fp32's plain division is approximate).
            grad = tl.div_rn(grad, tl.cast(grad_scale, compute_type))
    if HAS_CLIP:
        grad = grad * tl.cast(clip_coef, compute_type)
    if maximize:
        grad = -grad
    return grad


@triton.jit
def last_to_arrive(arrivals_ptr, tensor_index, n_chunks, active):
    """True in exactly one program of the parameter, the last of its ``n_chunks`` to get here (if ``active``).

    A per-parameter value that every program reads (Adam's ``step``, SGD's first-step
    flag) may only be rewritten once all of them have read it: the programs count
    themselves in the parameter's int32 ``arrivals`` slot with an acq_rel atomic (integer,
    so deterministic; acq_rel orders each program's earlier reads before its increment),
    and the last one resets the slot to 0 for the next launch. A parameter with a single
    chunk needs no atomic. ``active`` is uniform over the parameter's programs (False: a
    skipped step, where none of them counts).
    """
    arrived = tl.atomic_add(arrivals_ptr + tensor_index, 1, mask=(n_chunks > 1) & active, sem="acq_rel")
    last = ((n_chunks == 1) | (arrived == n_chunks - 1)) & active
    if last & (n_chunks > 1):
        tl.store(arrivals_ptr + tensor_index, 0)
    return last
