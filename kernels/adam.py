"""Adam and AdamW: one kernel launch updates every parameter of a (device, dtype), across param groups.

The kernel never receives the parameters as arguments. It reads their addresses from
tables of int64s that the host builds once and caches between steps:

    tensor table, int64 [n_tensors, TABLE_COLUMNS], one row per parameter:
        PARAM, EXP_AVG, EXP_AVG_SQ, MAX_EXP_AVG_SQ (0 without amsgrad), STEP, NUMEL,
        FIRST_PROGRAM, GROUP
    grad table, int64 [n_tensors]: each parameter's gradient address. It is apart from
        the tensor table because it is the one column that changes from step to step
        (``zero_grad(set_to_none=True)`` gives every step new gradient tensors).
    group table, int64 [n_groups, GROUP_COLUMNS], one row per param group (see
        :func:`group_row`): lr, betas, eps and weight decay as fp64 bit patterns, the
        addresses of tensor lr / betas (0 for floats), and the group's flags (amsgrad,
        maximize, decoupled weight decay). Different groups can differ in any of them,
        amsgrad included, and still share one launch.
    program table, int32 [n_programs]: the row that each program updates.

Each parameter is cut into chunks of ``chunk_size`` elements, one program per chunk (an
empty parameter still gets one program, because its ``step`` counts). A program walks its
chunk in blocks of ``BLOCK_SIZE``, so a step reads p, g, m, v and writes p, m, v exactly
once: 28 bytes per fp32 element, 36 with amsgrad, half that for fp16/bf16.

Hyperparameters are fp64 in the table and computed with in fp64 for fp64 parameters
(torch's opmath); for the other dtypes they are rounded to fp32 where torch rounds its
Python floats to the tensor's fp32 opmath, and the bias corrections and step size are
computed in fp64 as torch's for-loop computes them in Python floats.

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
PARAM, EXP_AVG, EXP_AVG_SQ, MAX_EXP_AVG_SQ, STEP, NUMEL, FIRST_PROGRAM, GROUP = range(8)
TABLE_COLUMNS = 8
# ... of the group table ...
(
    LR,
    LR_ADDRESS,
    BETA1,
    BETA1_ADDRESS,
    BETA2,
    BETA2_ADDRESS,
    ONE_MINUS_BETA1,
    ONE_MINUS_BETA2,
    LOG_BETA1,
    LOG_BETA2,
    EPS,
    WEIGHT_DECAY,
    FLAGS,
    SEED,
) = range(14)
GROUP_COLUMNS = 14
# ... and the bits of its FLAGS column. *_FP64: that tensor hyperparameter is fp64 (else fp32).
# STOCHASTIC_ROUNDING: bf16 parameters are rounded stochastically, from the SEED column.
AMSGRAD_FLAG, MAXIMIZE_FLAG, DECOUPLED_FLAG, LR_FP64_FLAG, BETAS_FP64_FLAG = 1, 2, 4, 8, 16
STOCHASTIC_ROUNDING_FLAG = 32

# The same numbers for the kernel.
_COLUMNS: tl.constexpr = tl.constexpr(TABLE_COLUMNS)
_PARAM: tl.constexpr = tl.constexpr(PARAM)
_EXP_AVG: tl.constexpr = tl.constexpr(EXP_AVG)
_EXP_AVG_SQ: tl.constexpr = tl.constexpr(EXP_AVG_SQ)
_MAX_EXP_AVG_SQ: tl.constexpr = tl.constexpr(MAX_EXP_AVG_SQ)
_STEP: tl.constexpr = tl.constexpr(STEP)
_NUMEL: tl.constexpr = tl.constexpr(NUMEL)
_FIRST_PROGRAM: tl.constexpr = tl.constexpr(FIRST_PROGRAM)
_GROUP: tl.constexpr = tl.constexpr(GROUP)
_GROUP_COLUMNS: tl.constexpr = tl.constexpr(GROUP_COLUMNS)
_LR: tl.constexpr = tl.constexpr(LR)
_LR_ADDRESS: tl.constexpr = tl.constexpr(LR_ADDRESS)
_BETA1: tl.constexpr = tl.constexpr(BETA1)
_BETA1_ADDRESS: tl.constexpr = tl.constexpr(BETA1_ADDRESS)
_BETA2: tl.constexpr = tl.constexpr(BETA2)
_BETA2_ADDRESS: tl.constexpr = tl.constexpr(BETA2_ADDRESS)
_ONE_MINUS_BETA1: tl.constexpr = tl.constexpr(ONE_MINUS_BETA1)
_ONE_MINUS_BETA2: tl.constexpr = tl.constexpr(ONE_MINUS_BETA2)
_LOG_BETA1: tl.constexpr = tl.constexpr(LOG_BETA1)
_LOG_BETA2: tl.constexpr = tl.constexpr(LOG_BETA2)
_EPS: tl.constexpr = tl.constexpr(EPS)
_WEIGHT_DECAY: tl.constexpr = tl.constexpr(WEIGHT_DECAY)
_FLAGS: tl.constexpr = tl.constexpr(FLAGS)
_SEED: tl.constexpr = tl.constexpr(SEED)
_STOCHASTIC_ROUNDING_FLAG: tl.constexpr = tl.constexpr(STOCHASTIC_ROUNDING_FLAG)
_AMSGRAD_FLAG: tl.constexpr = tl.constexpr(AMSGRAD_FLAG)
_MAXIMIZE_FLAG: tl.constexpr = tl.constexpr(MAXIMIZE_FLAG)
_DECOUPLED_FLAG: tl.constexpr = tl.constexpr(DECOUPLED_FLAG)
_LR_FP64_FLAG: tl.constexpr = tl.constexpr(LR_FP64_FLAG)
_BETAS_FP64_FLAG: tl.constexpr = tl.constexpr(BETAS_FP64_FLAG)


@triton.jit
def adam_hyperparameters(group, step, COMPUTE_TYPE: tl.constexpr, TENSOR_BETAS: tl.constexpr):
    """The group's hyperparameters for one step, as :func:`adam_moments` and :func:`adam_apply` take them.

    Args:
        group: pointer to the group's row of the group table (see :func:`group_row`).
        step: the parameter's new step count (fp32).
        COMPUTE_TYPE: the update's dtype: fp64 for fp64 parameters (torch's opmath), else fp32.
        TENSOR_BETAS: read tensor betas at their addresses where the row has them; False
            reads the float columns only (8-bit Adam refuses tensor betas).

    Returns:
        ``(flags, hyperparameters)``: the row's flag bits, and the tuple ``(weight_decay,
        decay, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps,
        step_size)`` in COMPUTE_TYPE that :func:`adam_moments` and :func:`adam_apply` take.
        They are computed in fp64, as torch's for-loop computes them in Python floats (near
        step 1, 1 - beta2**step is 1 - 0.999, which fp32 would keep to only ~4 digits), and
        rounded once, as torch rounds its Python floats to fp32 opmath.
    """
    flags = tl.load(group + _FLAGS)
    lr = load_hyperparameter(group, _LR, _LR_ADDRESS, flags, _LR_FP64_FLAG)
    beta2 = tl.load(group + _BETA2).to(tl.float64, bitcast=True)
    one_minus_beta1 = tl.load(group + _ONE_MINUS_BETA1).to(tl.float64, bitcast=True)
    one_minus_beta2 = tl.load(group + _ONE_MINUS_BETA2).to(tl.float64, bitcast=True)
    log_beta1 = tl.load(group + _LOG_BETA1).to(tl.float64, bitcast=True)
    log_beta2 = tl.load(group + _LOG_BETA2).to(tl.float64, bitcast=True)
    if TENSOR_BETAS:
        # Float betas need only the columns above; beta1's own column is still read
        # (the compiler drops the load), as tests/test_adam.py counts the table bytes.
        beta1 = tl.load(group + _BETA1).to(tl.float64, bitcast=True)
        beta1_address = tl.load(group + _BETA1_ADDRESS)
        if beta1_address != 0:
            beta2_address = tl.load(group + _BETA2_ADDRESS)
            if (flags & _BETAS_FP64_FLAG) != 0:
                beta1 = tl.load(beta1_address.to(tl.pointer_type(tl.float64), bitcast=True))
                beta2 = tl.load(beta2_address.to(tl.pointer_type(tl.float64), bitcast=True))
                one_minus_beta1 = 1.0 - beta1
                one_minus_beta2 = 1.0 - beta2
            else:
                beta1_32 = tl.load(beta1_address.to(tl.pointer_type(tl.float32), bitcast=True))
                beta2_32 = tl.load(beta2_address.to(tl.pointer_type(tl.float32), bitcast=True))
                # torch's tensor arithmetic on fp32 betas: 1 - beta in fp32, log in double.
                one_minus_beta1 = (1.0 - beta1_32).to(tl.float64)
                one_minus_beta2 = (1.0 - beta2_32).to(tl.float64)
                beta1 = beta1_32.to(tl.float64)
                beta2 = beta2_32.to(tl.float64)
            log_beta1 = tl.log(beta1)
            log_beta2 = tl.log(beta2)
    eps = tl.load(group + _EPS).to(tl.float64, bitcast=True)
    weight_decay = tl.load(group + _WEIGHT_DECAY).to(tl.float64, bitcast=True)
    step64 = step.to(tl.float64)
    bias_correction1 = 1.0 - tl.exp(step64 * log_beta1)
    bias_correction2_sqrt = tl.sqrt(1.0 - tl.exp(step64 * log_beta2))
    step_size = lr / bias_correction1
    decay = 1.0 - lr * weight_decay
    hyperparameters = (
        weight_decay.to(COMPUTE_TYPE),
        decay.to(COMPUTE_TYPE),
        one_minus_beta1.to(COMPUTE_TYPE),
        beta2.to(COMPUTE_TYPE),
        one_minus_beta2.to(COMPUTE_TYPE),
        bias_correction2_sqrt.to(COMPUTE_TYPE),
        eps.to(COMPUTE_TYPE),
        step_size.to(COMPUTE_TYPE),
    )
    return flags, hyperparameters


@triton.jit
def adam_moments(param, grad, exp_avg, exp_avg_sq, decoupled, hyperparameters):
    """Weight decay and the moments' update: ``(param, exp_avg, exp_avg_sq)`` after them.

    Elementwise, in the compute dtype of the arguments (the gradient already through
    :func:`unscale_and_clip`); ``decoupled``: AdamW's decay of the parameter, else Adam's
    L2 term added to the gradient. ``hyperparameters``: from :func:`adam_hyperparameters`.
    """
    weight_decay, decay, one_minus_beta1, beta2, one_minus_beta2, _, _, _ = hyperparameters
    if decoupled:
        param = param * decay
    else:
        # A select, not grad + 0 * param, so an inf parameter with weight_decay=0
        # leaves the gradient alone, as torch's `if weight_decay != 0` does.
        grad = tl.where(weight_decay != 0, grad + weight_decay * param, grad)
    # torch's exp_avg.lerp_(grad, 1 - beta1), with its second formula for weights >= 0.5.
    exp_avg = tl.where(
        one_minus_beta1 < 0.5,
        exp_avg + one_minus_beta1 * (grad - exp_avg),
        grad - (grad - exp_avg) * (1.0 - one_minus_beta1),
    )
    exp_avg_sq = exp_avg_sq * beta2 + one_minus_beta2 * grad * grad
    return param, exp_avg, exp_avg_sq


@triton.jit
def adam_apply(param, exp_avg, exp_avg_sq, hyperparameters):
    """The updated parameter: ``param - step_size * exp_avg / (sqrt(exp_avg_sq) / bias_correction2_sqrt + eps)``.

    ``hyperparameters``: from :func:`adam_hyperparameters`. fp16/bf16 parameters use the
    fp32 moments directly, as torch's fused kernels do.
    """
    _, _, _, _, _, bias_correction2_sqrt, eps, step_size = hyperparameters
    if param.dtype == tl.float64:
        denom = tl.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
        return param - step_size * exp_avg / denom
    else:
        # Correctly rounded sqrt and division, as torch's (fp32's plain ones are approximate).
        denom = tl.div_rn(tl.sqrt_rn(exp_avg_sq), bias_correction2_sqrt) + eps
        return param - tl.div_rn(step_size * exp_avg, denom)


@triton.jit
def _update_block(
    offsets,
    mask,
    pointers,
    scalars,
    switches,
    ANY_AMSGRAD: tl.constexpr,
    HAS_GRAD_SCALE: tl.constexpr,
    HAS_CLIP: tl.constexpr,
    ANY_STOCHASTIC: tl.constexpr,
):
    """Adam(W) on one block of elements: read p, g, m, v (and max_exp_avg_sq) once, write each once.

    What the chunk's blocks share arrives as three tuples, so that the full blocks' and
    the tail's call sites stay one line each: ``pointers`` (param, grad, exp_avg,
    exp_avg_sq, max_exp_avg_sq), ``scalars`` (GradScaler's fp32 ``grad_scale``, a
    divisor, the fp32 ``clip_coef``, the stochastic-rounding seed and the
    ``hyperparameters`` of :func:`adam_hyperparameters`, in the compute dtype: fp64 for
    fp64 parameters, else fp32) and the program's uniform ``switches`` (amsgrad,
    maximize, decoupled, stochastic).
    """
    param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, max_exp_avg_sq_ptr = pointers
    grad_scale, clip_coef, seed, hyperparameters = scalars
    amsgrad, maximize, decoupled, stochastic = switches
    out_type: tl.constexpr = param_ptr.dtype.element_ty
    compute_type: tl.constexpr = tl.float64 if out_type == tl.float64 else tl.float32
    param = tl.load(param_ptr + offsets, mask=mask).to(compute_type)
    grad = tl.load(grad_ptr + offsets, mask=mask).to(compute_type)
    exp_avg = tl.load(exp_avg_ptr + offsets, mask=mask).to(compute_type)
    exp_avg_sq = tl.load(exp_avg_sq_ptr + offsets, mask=mask).to(compute_type)
    grad = unscale_and_clip(grad, grad_scale, clip_coef, maximize, HAS_GRAD_SCALE, HAS_CLIP)
    param, exp_avg, exp_avg_sq = adam_moments(param, grad, exp_avg, exp_avg_sq, decoupled, hyperparameters)
    # The moments in their own dtype: the parameter's, or bf16 (state_dtype=torch.bfloat16).
    state_type: tl.constexpr = exp_avg_ptr.dtype.element_ty
    tl.store(exp_avg_ptr + offsets, exp_avg.to(state_type), mask=mask)
    tl.store(exp_avg_sq_ptr + offsets, exp_avg_sq.to(state_type), mask=mask)
    if ANY_AMSGRAD:
        # A uniform branch per program: groups with and without amsgrad share the launch.
        if amsgrad:
            max_exp_avg_sq = tl.load(max_exp_avg_sq_ptr + offsets, mask=mask).to(compute_type)
            # NaN propagates, as in torch.maximum.
            exp_avg_sq = tl.maximum(max_exp_avg_sq, exp_avg_sq, propagate_nan=tl.PropagateNan.ALL)
            tl.store(max_exp_avg_sq_ptr + offsets, exp_avg_sq.to(state_type), mask=mask)
    param = adam_apply(param, exp_avg, exp_avg_sq, hyperparameters)
    if ANY_STOCHASTIC:
        # Stochastic rounding to bf16 (torchao's _fp32_to_bf16_sr, the same idea): add
        # 16 random bits below bf16's mantissa, then truncate. A value between two bf16
        # neighbours rounds up with probability proportional to its distance from the
        # lower one, so updates under half an ulp still move the parameter in expectation.
        # Philox from (seed, element offset): reproducible, independent of the launch.
        if stochastic:
            bits = param.to(tl.uint32, bitcast=True)
            noise = (tl.randint(seed, offsets.to(tl.int32)) & 0xFFFF).to(tl.uint32)
            rounded = ((bits + noise) & 0xFFFF0000).to(tl.float32, bitcast=True)
            param = tl.where(param == param, rounded, param)  # NaN stays NaN
    tl.store(param_ptr + offsets, param.to(out_type), mask=mask)


@triton.jit
def adam_kernel(
    tensor_table_ptr,
    grad_table_ptr,
    group_table_ptr,
    program_table_ptr,
    arrivals_ptr,
    element_type_ptr,
    state_type_ptr,
    grad_scale_ptr,
    found_inf_ptr,
    skipped_ptr,
    clip_coef_ptr,
    chunk_size,
    ANY_AMSGRAD: tl.constexpr,
    HAS_GRAD_SCALE: tl.constexpr,
    HAS_FOUND_INF: tl.constexpr,
    WRITE_SKIPPED: tl.constexpr,
    HAS_CLIP: tl.constexpr,
    ALIGNED: tl.constexpr,
    ANY_STOCHASTIC: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    """One Adam(W) step for the chunk of one parameter that this program owns.

    ``element_type_ptr`` is any tensor of the parameters' dtype: its pointer type is the
    type the table's p and g addresses are cast to; ``state_type_ptr`` likewise for the
    moments (the same tensor, or a bf16 one for bf16 moments). ``grad_scale_ptr`` and ``found_inf_ptr`` are
    GradScaler's fp32 0-d tensors: gradients are divided by the scale, and a non-zero
    found_inf leaves p, m, v, max_exp_avg_sq and step untouched; with ``WRITE_SKIPPED``
    program 0 also stores ``found_inf != 0`` in the 0-d bool ``skipped_ptr``, so the
    optimizer's skip flag costs no launch of its own. ``clip_coef_ptr`` (``HAS_CLIP``)
    is the fp32 clip coefficient that a norm pass left on the device: gradients are
    multiplied by it as they are read. ``ANY_AMSGRAD``: some group of the launch has
    amsgrad (the others skip it at run time). ``ALIGNED``: every p, g, m, v
    (, max_exp_avg_sq) address in the tables is a multiple of 16 bytes.
    ``ANY_STOCHASTIC``: some group rounds its bf16 parameters stochastically
    (the group row's flag and seed say which).
    """
    tensor_index, row, chunk_start, chunk_end, n_chunks = locate_chunk(
        tensor_table_ptr, program_table_ptr, chunk_size, _COLUMNS, _NUMEL, _FIRST_PROGRAM
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

    IS_FP64: tl.constexpr = element_type_ptr.dtype.element_ty == tl.float64
    compute_type: tl.constexpr = tl.float64 if IS_FP64 else tl.float32
    group = group_table_ptr + tl.load(row + _GROUP) * _GROUP_COLUMNS
    flags, hyperparameters = adam_hyperparameters(group, step, compute_type, True)
    amsgrad = (flags & _AMSGRAD_FLAG) != 0
    maximize = (flags & _MAXIMIZE_FLAG) != 0
    decoupled = (flags & _DECOUPLED_FLAG) != 0
    stochastic = (flags & _STOCHASTIC_ROUNDING_FLAG) != 0
    seed = 0
    if ANY_STOCHASTIC:
        if stochastic:
            # A new random stream per step and per parameter, from the group's seed.
            seed = ((tl.load(group + _SEED) + step.to(tl.int64) * 1000003 + tensor_index * 7919) & 0x7FFFFFFF).to(
                tl.int32
            )

    param_ptr = tl.load(row + _PARAM).to(element_type_ptr.dtype, bitcast=True)
    grad_ptr = tl.load(grad_table_ptr + tensor_index).to(element_type_ptr.dtype, bitcast=True)
    exp_avg_ptr = tl.load(row + _EXP_AVG).to(state_type_ptr.dtype, bitcast=True)
    exp_avg_sq_ptr = tl.load(row + _EXP_AVG_SQ).to(state_type_ptr.dtype, bitcast=True)
    max_exp_avg_sq_ptr = exp_avg_sq_ptr  # a placeholder, never read without amsgrad
    if ANY_AMSGRAD:
        if amsgrad:
            max_exp_avg_sq_ptr = tl.load(row + _MAX_EXP_AVG_SQ).to(state_type_ptr.dtype, bitcast=True)
    if ALIGNED:
        # Addresses read from memory carry no alignment facts; the host checked them.
        param_ptr = tl.multiple_of(param_ptr, 16)
        grad_ptr = tl.multiple_of(grad_ptr, 16)
        exp_avg_ptr = tl.multiple_of(exp_avg_ptr, 16)
        exp_avg_sq_ptr = tl.multiple_of(exp_avg_sq_ptr, 16)
        max_exp_avg_sq_ptr = tl.multiple_of(max_exp_avg_sq_ptr, 16)

    pointers = (param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, max_exp_avg_sq_ptr)
    scalars = (grad_scale, clip_coef, seed, hyperparameters)
    switches = (amsgrad, maximize, decoupled, stochastic)
    # Full blocks load and store unmasked (mask=None is a compile-time constant), which
    # (with 16-byte aligned addresses) lets the compiler use 128-bit accesses; only a
    # chunk's last, partial block is masked. A skipped step walks no blocks at all:
    # nothing moves but the scalars above.
    n_full_blocks = tl.where(proceed, (chunk_end - chunk_start) // BLOCK_SIZE, 0)
    for block in range(0, n_full_blocks):
        offsets = chunk_start + block * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        _update_block(offsets, None, pointers, scalars, switches, ANY_AMSGRAD, HAS_GRAD_SCALE, HAS_CLIP, ANY_STOCHASTIC)
    tail_start = chunk_start + n_full_blocks * BLOCK_SIZE
    if (tail_start < chunk_end) & proceed:
        offsets = tail_start + tl.arange(0, BLOCK_SIZE)
        mask = offsets < chunk_end
        _update_block(offsets, mask, pointers, scalars, switches, ANY_AMSGRAD, HAS_GRAD_SCALE, HAS_CLIP, ANY_STOCHASTIC)

    # The last program of this parameter to get here writes the new step: every other
    # program of the parameter has already read the old one.
    if last_to_arrive(arrivals_ptr, tensor_index, n_chunks, proceed):
        tl.store(step_ptr, step)


def table_row(param, exp_avg, exp_avg_sq, max_exp_avg_sq, step, first_program: int, group: int) -> list[int]:
    """One row of the tensor table (see the module docstring), for dense tensors of one layout."""
    return [
        param.data_ptr(),
        exp_avg.data_ptr(),
        exp_avg_sq.data_ptr(),
        0 if max_exp_avg_sq is None else max_exp_avg_sq.data_ptr(),
        step.data_ptr(),
        param.numel(),
        first_program,
        group,
    ]


ALIGNED_COLUMNS = (PARAM, EXP_AVG, EXP_AVG_SQ, MAX_EXP_AVG_SQ)
TABLE_LAYOUT = TableLayout(TABLE_COLUMNS, NUMEL, FIRST_PROGRAM, ALIGNED_COLUMNS)


def group_row(
    *,
    lr: float,
    lr_address: int,
    lr_fp64: bool,
    beta1: float,
    beta2: float,
    betas_address: tuple[int, int],
    betas_fp64: bool,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    stochastic_rounding_seed: int | None = None,
) -> list[int]:
    """One row of the group table. Float hyperparameters as given; tensor ones by address.

    ``lr``/``beta*`` are ignored (pass 0.0) where an address is given. For float betas,
    1 - beta and log(beta) are computed here in double: 1 - 0.999 in fp32 is 1.3e-5 off.
    """
    flags = (
        AMSGRAD_FLAG * amsgrad
        + MAXIMIZE_FLAG * maximize
        + DECOUPLED_FLAG * decoupled_weight_decay
        + LR_FP64_FLAG * lr_fp64
        + BETAS_FP64_FLAG * betas_fp64
        + STOCHASTIC_ROUNDING_FLAG * (stochastic_rounding_seed is not None)
    )
    floats = [lr, 0.0, beta1, 0.0, beta2, 0.0, 1.0 - beta1, 1.0 - beta2, _log(beta1), _log(beta2), eps, weight_decay]
    row = [float_bits(float(x)) for x in floats]
    row[LR_ADDRESS] = lr_address
    row[BETA1_ADDRESS], row[BETA2_ADDRESS] = betas_address
    return [*row, flags, stochastic_rounding_seed or 0]


def adam_step(
    tensor_table: torch.Tensor,
    grad_table: torch.Tensor,
    group_table: torch.Tensor,
    program_table: torch.Tensor,
    arrivals: torch.Tensor,
    element_type: torch.Tensor,
    *,
    any_amsgrad: bool,
    state_type: torch.Tensor | None = None,
    any_stochastic_rounding: bool = False,
    grad_scale: torch.Tensor | None = None,
    found_inf: torch.Tensor | None = None,
    skipped: torch.Tensor | None = None,
    clip_coef: torch.Tensor | None = None,
    chunk_size: int = ADAM_CHUNK_SIZE,
    aligned: bool = False,
) -> None:
    """Launch one Adam(W) step over every parameter listed in the tables.

    Args:
        tensor_table: int64 [n_tensors, TABLE_COLUMNS] built from :func:`table_row`.
        grad_table: int64 [n_tensors], the gradient addresses.
        group_table: int64 [n_groups, GROUP_COLUMNS] built from :func:`group_row`.
        program_table: int32 [n_programs], the row each program updates.
        arrivals: int32 [n_tensors] of zeros (the kernel leaves them zero).
        element_type: any tensor of the parameters' (real) dtype, on their device.
        any_amsgrad: some row's group has amsgrad.
        state_type: any tensor of the moments' dtype on the device (None: the parameters'
            dtype); bf16 moments halve the state's memory and traffic.
        any_stochastic_rounding: some group rounds its (bf16) parameters stochastically.
        grad_scale, found_inf: GradScaler's fp32 0-d tensors on the parameters' device.
        skipped: a 0-d bool tensor on the parameters' device, set to ``found_inf != 0``
            (requires found_inf).
        clip_coef: fp32 0-d clip coefficient on the device, applied to every gradient.
        chunk_size: elements per program, the one used to build the tables.
        aligned: every tensor address in the tables is a multiple of 16 bytes, so full
            blocks can use 128-bit loads and stores.

    Example:
        See :class:`fused_ops.optim.Adam`, which builds the tables and calls this.
    """
    check_step_arguments(skipped, found_inf, chunk_size, ADAM_BLOCK_SIZE)
    grid = (program_table.numel(),)
    _adam_launch(
        grid,
        tensor_table,
        grad_table,
        group_table,
        program_table,
        arrivals,
        element_type,
        element_type if state_type is None else state_type,
        grad_scale,
        found_inf,
        skipped,
        clip_coef,
        chunk_size,
        ANY_AMSGRAD=any_amsgrad,
        HAS_GRAD_SCALE=grad_scale is not None,
        HAS_FOUND_INF=found_inf is not None,
        WRITE_SKIPPED=skipped is not None,
        HAS_CLIP=clip_coef is not None,
        ALIGNED=aligned,
        ANY_STOCHASTIC=any_stochastic_rounding,
        BLOCK_SIZE=ADAM_BLOCK_SIZE,
        num_warps=ADAM_NUM_WARPS,
    )


def _log(beta: float) -> float:
    # beta = 0 is valid (no averaging): 0**step = 0, which exp(-inf) gives exactly.
    return math.log(beta) if beta > 0 else -math.inf


# Launched through BoundKernel: the compiled kernel is looked up once per signature (kernels/_launch.py).
_adam_launch = BoundKernel(adam_kernel)
