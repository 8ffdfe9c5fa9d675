"""Adam and AdamW: one kernel launch updates every parameter of a (device, dtype) group.

The kernel never receives the parameters as arguments. It reads their addresses from a
table of int64s that the host builds once and caches between steps:

    tensor table, int64 [n_tensors, TABLE_COLUMNS], one row per parameter:
        PARAM, GRAD, EXP_AVG, EXP_AVG_SQ, MAX_EXP_AVG_SQ (0 without amsgrad), STEP,
        NUMEL, FIRST_PROGRAM
    program table, int32 [n_programs]: the row that each program updates.

Each parameter is cut into chunks of ``chunk_size`` elements, one program per chunk (an
empty parameter still gets one program, because its ``step`` counts). A program walks its
chunk in blocks of ``BLOCK_SIZE``, so a step reads p, g, m, v and writes p, m, v exactly
once: 28 bytes per fp32 element, 36 with amsgrad, half that for fp16/bf16.

Every tensor that a row points to is dense and shares the parameter's layout, so flat
offsets address matching elements; complex parameters arrive as their real view.

``step`` is each parameter's own 0-d float32 tensor, as in torch. Every program of a
parameter needs the old value, so the program that finishes reading it last writes
step + 1: programs count themselves in an int32 ``arrivals`` slot with an acq_rel atomic
(integer, so deterministic), and the one that sees all the others arrive stores the new
step and resets the slot to 0 for the next launch.
"""

import math

import torch
import triton
import triton.language as tl

from ._config import ADAM_BLOCK_SIZE, ADAM_CHUNK_SIZE, ADAM_NUM_WARPS

# Columns of the tensor table (Python side) ...
PARAM, GRAD, EXP_AVG, EXP_AVG_SQ, MAX_EXP_AVG_SQ, STEP, NUMEL, FIRST_PROGRAM = range(8)
TABLE_COLUMNS = 8
# ... and the same numbers for the kernel.
_COLUMNS: tl.constexpr = tl.constexpr(TABLE_COLUMNS)
_PARAM: tl.constexpr = tl.constexpr(PARAM)
_GRAD: tl.constexpr = tl.constexpr(GRAD)
_EXP_AVG: tl.constexpr = tl.constexpr(EXP_AVG)
_EXP_AVG_SQ: tl.constexpr = tl.constexpr(EXP_AVG_SQ)
_MAX_EXP_AVG_SQ: tl.constexpr = tl.constexpr(MAX_EXP_AVG_SQ)
_STEP: tl.constexpr = tl.constexpr(STEP)
_NUMEL: tl.constexpr = tl.constexpr(NUMEL)
_FIRST_PROGRAM: tl.constexpr = tl.constexpr(FIRST_PROGRAM)


@triton.jit
def _update_block(
    offsets,
    mask,
    param_ptr,
    grad_ptr,
    exp_avg_ptr,
    exp_avg_sq_ptr,
    max_exp_avg_sq_ptr,
    grad_scale,
    weight_decay,
    decay,
    one_minus_beta1,
    beta2,
    one_minus_beta2,
    bias_correction2_sqrt,
    eps,
    step_size,
    AMSGRAD: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    DECOUPLED_WEIGHT_DECAY: tl.constexpr,
    HAS_GRAD_SCALE: tl.constexpr,
):
    """Adam(W) on one block of elements: read p, g, m, v (and max_exp_avg_sq) once, write each once."""
    out_type: tl.constexpr = param_ptr.dtype.element_ty
    IS_FP64: tl.constexpr = out_type == tl.float64
    # _common.upcast's rule (fp64 stays fp64, the rest computes in fp32), resolved once:
    # under the interpreter every nested @jit call costs milliseconds, and there are 5.
    compute_type: tl.constexpr = tl.float64 if IS_FP64 else tl.float32
    param = tl.load(param_ptr + offsets, mask=mask).to(compute_type)
    grad = tl.load(grad_ptr + offsets, mask=mask).to(compute_type)
    exp_avg = tl.load(exp_avg_ptr + offsets, mask=mask).to(compute_type)
    exp_avg_sq = tl.load(exp_avg_sq_ptr + offsets, mask=mask).to(compute_type)
    if HAS_GRAD_SCALE:
        if IS_FP64:
            grad = grad / tl.cast(grad_scale, compute_type)
        else:
            grad = tl.div_rn(grad, tl.cast(grad_scale, compute_type))
    if MAXIMIZE:
        grad = -grad
    if DECOUPLED_WEIGHT_DECAY:
        param = param * tl.cast(decay, compute_type)
    else:
        # A select, not grad + 0 * param, so an inf parameter with weight_decay=0
        # leaves the gradient alone, as torch's `if weight_decay != 0` does.
        grad = tl.where(weight_decay != 0, grad + tl.cast(weight_decay, compute_type) * param, grad)
    # torch's exp_avg.lerp_(grad, 1 - beta1), with its second formula for weights >= 0.5.
    lerp_weight = tl.cast(one_minus_beta1, compute_type)
    exp_avg = tl.where(
        lerp_weight < 0.5,
        exp_avg + lerp_weight * (grad - exp_avg),
        grad - (grad - exp_avg) * (1.0 - lerp_weight),
    )
    exp_avg_sq = exp_avg_sq * tl.cast(beta2, compute_type) + tl.cast(one_minus_beta2, compute_type) * grad * grad
    tl.store(exp_avg_ptr + offsets, exp_avg.to(out_type), mask=mask)
    tl.store(exp_avg_sq_ptr + offsets, exp_avg_sq.to(out_type), mask=mask)
    if AMSGRAD:
        max_exp_avg_sq = tl.load(max_exp_avg_sq_ptr + offsets, mask=mask).to(compute_type)
        # NaN propagates, as in torch.maximum.
        exp_avg_sq = tl.maximum(max_exp_avg_sq, exp_avg_sq, propagate_nan=tl.PropagateNan.ALL)
        tl.store(max_exp_avg_sq_ptr + offsets, exp_avg_sq.to(out_type), mask=mask)
    # fp16/bf16 use the fp32 moments directly, as torch's fused kernels do.
    # Correctly rounded sqrt and division, as torch's (fp32's plain ones are approximate).
    if IS_FP64:
        denom = tl.sqrt(exp_avg_sq) / tl.cast(bias_correction2_sqrt, compute_type) + tl.cast(eps, compute_type)
        param = param - tl.cast(step_size, compute_type) * exp_avg / denom
    else:
        denom = tl.div_rn(tl.sqrt_rn(exp_avg_sq), tl.cast(bias_correction2_sqrt, compute_type))
        denom = denom + tl.cast(eps, compute_type)
        param = param - tl.div_rn(tl.cast(step_size, compute_type) * exp_avg, denom)
    tl.store(param_ptr + offsets, param.to(out_type), mask=mask)


@triton.jit
def adam_kernel(
    tensor_table_ptr,
    program_table_ptr,
    arrivals_ptr,
    element_type_ptr,
    lr_ptr,
    beta1_ptr,
    beta2_ptr,
    grad_scale_ptr,
    found_inf_ptr,
    skipped_ptr,
    lr,
    beta2,
    one_minus_beta1,
    one_minus_beta2,
    log_beta1,
    log_beta2,
    eps,
    weight_decay,
    chunk_size,
    AMSGRAD: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    DECOUPLED_WEIGHT_DECAY: tl.constexpr,
    LR_IN_MEMORY: tl.constexpr,
    BETAS_IN_MEMORY: tl.constexpr,
    HAS_GRAD_SCALE: tl.constexpr,
    HAS_FOUND_INF: tl.constexpr,
    WRITE_SKIPPED: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    """One Adam(W) step for the chunk of one parameter that this program owns.

    ``element_type_ptr`` is any tensor of the parameters' dtype: its pointer type is the
    type the table's addresses are cast to. With ``LR_IN_MEMORY`` (a tensor lr) lr is
    read from the fp32 ``lr_ptr``; with ``BETAS_IN_MEMORY`` (tensor betas) the betas from
    the fp32 ``beta1_ptr`` and ``beta2_ptr``, and 1 - beta and log(beta) are derived here,
    instead of taking them all as arguments: changing them never needs a host sync, nor
    a kernel of its own. ``grad_scale_ptr`` and ``found_inf_ptr`` are
    GradScaler's fp32 0-d tensors: gradients are divided by the scale, and a non-zero
    found_inf leaves p, m, v, max_exp_avg_sq and step untouched; with ``WRITE_SKIPPED``
    program 0 also stores ``found_inf != 0`` in the 0-d bool ``skipped_ptr``, so the
    optimizer's skip flag costs no launch of its own. ``ALIGNED``: every
    p, g, m, v (, max_exp_avg_sq) address in the table is a multiple of 16 bytes.
    """
    pid = tl.program_id(0).to(tl.int64)
    tensor_index = tl.load(program_table_ptr + pid)
    row = tensor_table_ptr + tensor_index.to(tl.int64) * _COLUMNS
    numel = tl.load(row + _NUMEL)
    chunk_start = (pid - tl.load(row + _FIRST_PROGRAM)) * chunk_size
    chunk_end = tl.minimum(chunk_start + chunk_size, numel)
    # cdiv spelled out: tl.cdiv is a nested @jit call, slow under the interpreter.
    n_chunks = tl.maximum((numel + chunk_size - 1) // chunk_size, 1)
    step_ptr = tl.load(row + _STEP).to(tl.pointer_type(tl.float32), bitcast=True)
    step = tl.load(step_ptr) + 1.0

    proceed = True
    if HAS_FOUND_INF:
        found_inf = tl.load(found_inf_ptr)
        proceed = found_inf == 0
        if WRITE_SKIPPED:
            tl.store(skipped_ptr, found_inf != 0, mask=pid == 0)

    if LR_IN_MEMORY:
        lr = tl.load(lr_ptr)
    if BETAS_IN_MEMORY:
        beta1 = tl.load(beta1_ptr)
        beta2 = tl.load(beta2_ptr)
        # torch's tensor arithmetic on fp32 betas: 1 - beta in fp32, log in double.
        one_minus_beta1 = 1.0 - beta1
        one_minus_beta2 = 1.0 - beta2
        log_beta1 = tl.log(beta1.to(tl.float64)).to(tl.float32)
        log_beta2 = tl.log(beta2.to(tl.float64)).to(tl.float32)
    # Per-program scalars in double precision, as torch's for-loop computes them: near
    # step 1, 1 - beta2**step is 1 - 0.999, which fp32 would keep to only ~4 digits.
    lr = tl.cast(lr, tl.float64)
    weight_decay = tl.cast(weight_decay, tl.float32)
    step64 = tl.cast(step, tl.float64)
    bias_correction1 = 1.0 - tl.exp(step64 * tl.cast(log_beta1, tl.float64))
    bias_correction2_sqrt = tl.sqrt(1.0 - tl.exp(step64 * tl.cast(log_beta2, tl.float64)))
    step_size = lr / bias_correction1
    decay = 1.0 - lr * tl.cast(weight_decay, tl.float64)
    grad_scale = 1.0
    if HAS_GRAD_SCALE:
        grad_scale = tl.load(grad_scale_ptr)

    param_ptr = tl.load(row + _PARAM).to(element_type_ptr.dtype, bitcast=True)
    grad_ptr = tl.load(row + _GRAD).to(element_type_ptr.dtype, bitcast=True)
    exp_avg_ptr = tl.load(row + _EXP_AVG).to(element_type_ptr.dtype, bitcast=True)
    exp_avg_sq_ptr = tl.load(row + _EXP_AVG_SQ).to(element_type_ptr.dtype, bitcast=True)
    max_exp_avg_sq_ptr = param_ptr  # a placeholder, never read without amsgrad
    if AMSGRAD:
        max_exp_avg_sq_ptr = tl.load(row + _MAX_EXP_AVG_SQ).to(element_type_ptr.dtype, bitcast=True)
    if ALIGNED:
        # Addresses read from memory carry no alignment facts; the host checked them.
        param_ptr = tl.multiple_of(param_ptr, 16)
        grad_ptr = tl.multiple_of(grad_ptr, 16)
        exp_avg_ptr = tl.multiple_of(exp_avg_ptr, 16)
        exp_avg_sq_ptr = tl.multiple_of(exp_avg_sq_ptr, 16)
        max_exp_avg_sq_ptr = tl.multiple_of(max_exp_avg_sq_ptr, 16)
    # Full blocks load and store unmasked, which (with 16-byte aligned addresses) lets
    # the compiler use 128-bit accesses; only a chunk's last, partial block is masked.
    # A skipped step walks no blocks at all: nothing moves but the scalars above.
    n_full_blocks = tl.where(proceed, (chunk_end - chunk_start) // BLOCK_SIZE, 0)
    for block in range(0, n_full_blocks):
        offsets = chunk_start + block * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        _update_block(
            offsets,
            None,
            param_ptr,
            grad_ptr,
            exp_avg_ptr,
            exp_avg_sq_ptr,
            max_exp_avg_sq_ptr,
            grad_scale,
            weight_decay,
            decay,
            one_minus_beta1,
            beta2,
            one_minus_beta2,
            bias_correction2_sqrt,
            eps,
            step_size,
            AMSGRAD,
            MAXIMIZE,
            DECOUPLED_WEIGHT_DECAY,
            HAS_GRAD_SCALE,
        )
    tail_start = chunk_start + n_full_blocks * BLOCK_SIZE
    if (tail_start < chunk_end) & proceed:
        offsets = tail_start + tl.arange(0, BLOCK_SIZE)
        _update_block(
            offsets,
            offsets < chunk_end,
            param_ptr,
            grad_ptr,
            exp_avg_ptr,
            exp_avg_sq_ptr,
            max_exp_avg_sq_ptr,
            grad_scale,
            weight_decay,
            decay,
            one_minus_beta1,
            beta2,
            one_minus_beta2,
            bias_correction2_sqrt,
            eps,
            step_size,
            AMSGRAD,
            MAXIMIZE,
            DECOUPLED_WEIGHT_DECAY,
            HAS_GRAD_SCALE,
        )

    # The last program of this parameter to get here writes the new step: every other
    # program of the parameter has already read the old one (acq_rel orders that read
    # before its increment). A parameter with a single chunk needs no atomic.
    arrived = tl.atomic_add(arrivals_ptr + tensor_index, 1, mask=(n_chunks > 1) & proceed, sem="acq_rel")
    if ((n_chunks == 1) | (arrived == n_chunks - 1)) & proceed:
        tl.store(step_ptr, step)
        if n_chunks > 1:
            tl.store(arrivals_ptr + tensor_index, 0)


def table_row(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, first_program: int) -> list[int]:
    """One row of the tensor table (see the module docstring), for dense tensors of one layout."""
    return [
        param.data_ptr(),
        grad.data_ptr(),
        exp_avg.data_ptr(),
        exp_avg_sq.data_ptr(),
        0 if max_exp_avg_sq is None else max_exp_avg_sq.data_ptr(),
        step.data_ptr(),
        param.numel(),
        first_program,
    ]


def aligned(rows: list[int]) -> bool:
    """True when every tensor address in these table rows is a multiple of 16 bytes."""
    columns = (PARAM, GRAD, EXP_AVG, EXP_AVG_SQ, MAX_EXP_AVG_SQ)
    return all(rows[start + column] % 16 == 0 for start in range(0, len(rows), TABLE_COLUMNS) for column in columns)


def programs_for(numel: int, chunk_size: int = ADAM_CHUNK_SIZE) -> int:
    """Programs that update one parameter of ``numel`` elements (at least one, for its step)."""
    return max(1, triton.cdiv(numel, chunk_size))


def adam_step(
    tensor_table: torch.Tensor,
    program_table: torch.Tensor,
    arrivals: torch.Tensor,
    element_type: torch.Tensor,
    *,
    lr: float | torch.Tensor,
    beta1: float | torch.Tensor,
    beta2: float | torch.Tensor,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    grad_scale: torch.Tensor | None = None,
    found_inf: torch.Tensor | None = None,
    skipped: torch.Tensor | None = None,
    chunk_size: int = ADAM_CHUNK_SIZE,
    aligned: bool = False,
) -> None:
    """Launch one Adam(W) step over every parameter listed in the tables.

    Args:
        tensor_table: int64 [n_tensors, TABLE_COLUMNS] built from :func:`table_row`.
        program_table: int32 [n_programs], the row each program updates.
        arrivals: int32 [n_tensors] of zeros (the kernel leaves them zero).
        element_type: any tensor of the parameters' (real) dtype, on their device.
        lr, beta1, beta2: floats, or 1-element tensors (read on the device: no sync).
        grad_scale, found_inf: GradScaler's fp32 0-d tensors on the parameters' device.
        skipped: a 0-d bool tensor on the parameters' device, set to ``found_inf != 0``
            (requires found_inf).
        chunk_size: elements per program, the one used to build the tables.
        aligned: every tensor address in the table is a multiple of 16 bytes
            (:func:`aligned`), so full blocks can use 128-bit loads and stores.
    """
    if chunk_size % ADAM_BLOCK_SIZE != 0:
        raise ValueError(f"chunk_size must be a multiple of {ADAM_BLOCK_SIZE}, got {chunk_size}")
    if skipped is not None and found_inf is None:
        raise ValueError("skipped is written from found_inf, which is None")
    device = element_type.device
    # Tensors are read by the kernel; floats are passed (their 0.0 placeholders unused).
    lr_tensor = _fp32_on(lr, device) if isinstance(lr, torch.Tensor) else None
    betas_in_memory = isinstance(beta1, torch.Tensor) or isinstance(beta2, torch.Tensor)
    if betas_in_memory:
        beta_tensors = [_fp32_on(beta, device) for beta in (beta1, beta2)]
        derived = [0.0] * 5
    else:
        # 1 - beta and log(beta) in double on the host: 1 - 0.999 in fp32 is 1.3e-5 off.
        beta_tensors = [None, None]
        derived = [beta2, 1.0 - beta1, 1.0 - beta2, _log(beta1), _log(beta2)]
    scalars = [0.0 if lr_tensor is not None else lr, *derived]
    grid = (program_table.numel(),)
    adam_kernel[grid](
        tensor_table,
        program_table,
        arrivals,
        element_type,
        lr_tensor,
        *beta_tensors,
        grad_scale,
        found_inf,
        skipped,
        *(float(x) for x in scalars),
        float(eps),
        float(weight_decay),
        chunk_size,
        AMSGRAD=amsgrad,
        MAXIMIZE=maximize,
        DECOUPLED_WEIGHT_DECAY=decoupled_weight_decay,
        LR_IN_MEMORY=lr_tensor is not None,
        BETAS_IN_MEMORY=betas_in_memory,
        HAS_GRAD_SCALE=grad_scale is not None,
        HAS_FOUND_INF=found_inf is not None,
        WRITE_SKIPPED=skipped is not None,
        ALIGNED=aligned,
        BLOCK_SIZE=ADAM_BLOCK_SIZE,
        num_warps=ADAM_NUM_WARPS,
    )


def _fp32_on(value: float | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A hyperparameter as an fp32 tensor on ``device``, without a host sync.

    A tensor that is already fp32 there is used as it is: no copy, no kernel.
    """
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.float32, non_blocking=True)
    return host_to_device(torch.tensor(value, dtype=torch.float32), device)


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small host tensor to ``device`` without waiting for the GPU.

    A blocking copy (``.to(device)``) synchronizes with the stream; from pinned memory a
    non-blocking copy does not, and torch's pinned-memory allocator keeps the source
    alive until the copy has run.
    """
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def _log(beta: float) -> float:
    # beta = 0 is valid (no averaging): 0**step = 0, which exp(-inf) gives exactly.
    return math.log(beta) if beta > 0 else -math.inf
