"""Cross-entropy kernels: one pass over the logits with an online logsumexp, no softmax in memory.

Every kernel sees the logits as a strided 3-D view ``(outer, C, inner)`` and reduces over
the class dim ``C``; a row is one ``(o, i)`` pair, and per-row buffers (``lse``, ``coef``,
row losses and weights) are contiguous ``(outer, inner)``, i.e. in the natural order of
the target's elements (``(N, C)`` logits come as ``(1, C, N)``). Each program owns
``BLOCK_I`` consecutive rows of one ``o`` and walks the classes in tiles of
``(BLOCK_C, BLOCK_I)``, long along whichever dim is contiguous (see ``_blocks``): a long
run of one row's classes for row-major ``(N, C)`` (several rows when C is small), a run of
adjacent rows for ``(N, C, d1, ...)`` or column-major logits. Loads coalesce either way,
without transposing the logits. When the gradient's forward needs the class weights class
by class (weights with label smoothing or probability targets) and a row fits one tile, a
program takes several such blocks of rows in turn and loads the weights once for all of
them (``_one_pass_plan``).

Maths, in natural units, for one row with logits ``x``, ``lse = logsumexp(x)``,
``p = softmax(x)``, class weights ``w`` (all ones without a weight), smoothing ``eps``:

- class-index target ``y``: ``loss = (1 - eps) w_y (lse - x_y) + eps / C * sum_c w_c (lse - x_c)``
  and ``dloss/dx = coef * p - (1 - eps) w_y onehot(y) - eps / C * w`` with
  ``coef = (1 - eps) w_y + eps / C * sum_c w_c``; rows whose target is ``ignore_index``
  have loss, coef and gradient 0;
- class probabilities ``t``: with ``a = w * ((1 - eps) t + eps / C)``,
  ``loss = sum_c a_c (lse - x_c)`` and ``dloss/dx = coef * p - a``, ``coef = sum_c a_c``.

The forward saves ``lse`` and ``coef`` per row, so the backward is a single pass too. When
the logits require grad ('mean' or 'sum'), the forward also writes ``dloss/dx`` for a
``grad_output`` of 1, from the same registers when a row fits in one tile (up to 8192
classes), after a prepass over the index targets that sums the mean's denominator; its
backward (``cross_entropy_scale_grad_kernel``) then reads ``grad_output`` and ends when it
is 1, or scales the gradient in place.
Sums ``sum_c a_c x_c`` are accumulated relative to the running max, as the logsumexp is,
so a loss that is a small difference of large logits keeps its precision.

The forward also validates class-index targets as it loads them, at no extra read: each
program writes one int8 flag, 1 when every target of its rows is in ``[0, C)`` or
``ignore_index``, and the reduce kernel folds those flags into one, which the host hands
to a single ``torch._assert_async``: no eager pass over the targets.
Rows with a bad target compute as ignored rows, so no weight is read out of bounds.
"""

import functools
import struct
from collections.abc import Callable

import torch
import triton
import triton.language as tl

from ._common import LN2, LOG2E, REDUCTION_MEAN, REDUCTION_NONE, upcast
from ._config import (
    CROSS_ENTROPY_MAX_BLOCK_C,
    CROSS_ENTROPY_MAX_BLOCK_I,
    CROSS_ENTROPY_NUM_WARPS,
    CROSS_ENTROPY_ONE_PASS_MAX_C,
    CROSS_ENTROPY_ONE_PASS_NUM_WARPS,
    CROSS_ENTROPY_REDUCE_BLOCK_SIZE,
    CROSS_ENTROPY_TILE_SIZE,
)
from ._launch import BoundKernel, next_power_of_2


@triton.jit
def _class_coefficients(
    target_ptr,
    w,
    offs_t,
    mask,
    eps,
    C,
    HAS_WEIGHT: tl.constexpr,
    PROB_TARGET: tl.constexpr,
    SMOOTHING: tl.constexpr,
    acc_like,
):
    """The per-class coefficients ``a`` of one tile, in ``acc_like``'s dtype, 0 where masked.

    Probability targets: ``w * ((1 - eps) t + eps / C)``. Class-index targets (only
    called with smoothing): ``w``, which the caller scales by ``eps / C``. ``w`` is the
    tile's ``(BLOCK_C,)`` class weights in the compute dtype, loaded by the caller (the
    one-tile forward loads them once for all the rows of a program); unused without
    ``HAS_WEIGHT``.
    """
    if PROB_TARGET:
        a = tl.load(target_ptr + offs_t, mask=mask, other=0).to(acc_like.dtype)
        if SMOOTHING:
            a = a * (1 - eps) + eps / C
    else:
        a = tl.zeros(mask.shape, acc_like.dtype) + 1
    if HAS_WEIGHT:
        a = a * w[:, None]
    return tl.where(mask, a, 0)


@triton.jit
def _grad_tile(
    x,
    c,
    mask,
    lse,
    coef,
    y,
    w_y,
    valid,
    scale,
    target_ptr,
    weight_ptr,
    offs_t,
    eps,
    C,
    HAS_WEIGHT: tl.constexpr,
    PROB_TARGET: tl.constexpr,
    SMOOTHING: tl.constexpr,
):
    """``scale * dloss/dx`` of one ``(BLOCK_C, BLOCK_I)`` tile: ``scale * (coef * p - a)`` (module doc).

    Ignored rows get 0 after the scaling, so that a mean over only ignored targets (scale
    g / 0 = inf) still gives them a 0 gradient, as torch does.
    """
    p = tl.exp2((x - lse[None, :]) * tl.full([], LOG2E, x.dtype))
    grad = p * coef[None, :]
    if HAS_WEIGHT and (PROB_TARGET or SMOOTHING):
        w = tl.load(weight_ptr + c, mask=c < C, other=0).to(x.dtype)
    else:
        w = x  # unused
    if PROB_TARGET:
        grad = grad - _class_coefficients(target_ptr, w, offs_t, mask, eps, C, HAS_WEIGHT, PROB_TARGET, SMOOTHING, x)
    elif SMOOTHING:
        grad = grad - (1 - eps) * tl.where(c[:, None] == y[None, :], w_y[None, :], 0)
        a = _class_coefficients(target_ptr, w, offs_t, mask, eps, C, HAS_WEIGHT, PROB_TARGET, SMOOTHING, x)
        grad = grad - eps / C * a
    else:
        grad = grad - tl.where(c[:, None] == y[None, :], w_y[None, :], 0)
    return tl.where(valid[None, :], grad * scale[None, :], 0)


@triton.jit
def _row_scale(
    grad_output_ptr,
    total_weight_ptr,
    o,
    i,
    row_mask,
    grad_output_outer_stride,
    grad_output_inner_stride,
    acc_like,
    REDUCTION: tl.constexpr,
):
    """The factor each row's gradient is scaled by: grad_output per row, or g / total_weight.

    ``grad_output`` is read here, on the device, so a 0-d grad_output never syncs.
    """
    if REDUCTION == REDUCTION_NONE:
        g = tl.load(
            grad_output_ptr + o * grad_output_outer_stride + i * grad_output_inner_stride, mask=row_mask, other=0
        )
        scale = g.to(acc_like.dtype)
    else:
        g = tl.load(grad_output_ptr).to(acc_like.dtype)
        if REDUCTION == REDUCTION_MEAN:
            g = g / tl.load(total_weight_ptr).to(acc_like.dtype)
        scale = tl.zeros(row_mask.shape, acc_like.dtype) + g
    return scale


# Under Triton's interpreter every call of a nested @triton.jit function costs ~5 ms
# (it re-patches triton.language), so the kernels call `upcast` once, on a zero of the
# storage dtype, and cast loads to that compute dtype directly: the same conversion.


@triton.jit
def _forward_block(
    block,
    w,
    zero,
    eps,
    scale,
    blocks_per_outer,
    pointers,
    sizes,
    HAS_WEIGHT: tl.constexpr,
    PROB_TARGET: tl.constexpr,
    SMOOTHING: tl.constexpr,
    GRAD: tl.constexpr,
    ONE_TILE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_I: tl.constexpr,
    W_GIVEN: tl.constexpr,
    STORE_LOSS: tl.constexpr,
    STORE_ROW_WEIGHT: tl.constexpr,
    STORE_STATS: tl.constexpr,
    grad_ok,
):
    """One block of ``BLOCK_I`` rows of :func:`cross_entropy_forward_kernel`; returns, per row, 1 for a bad target.

    ``w``: with ``W_GIVEN`` (``ONE_TILE``, class weights needed class by class), the whole
    row's ``(BLOCK_C,)`` weights, loaded by the caller; otherwise unused. ``scale``: the
    gradient's factor per row (with ``GRAD``). ``STORE_LOSS``, ``STORE_ROW_WEIGHT``: write
    the row losses and ``w_y`` (a single-program forward sums them instead). ``grad_ok``:
    1, or 0 to write no gradient (a single-program forward that found a bad target leaves
    the gradient buffer, maybe the logits, untouched).
    ``pointers``: the kernel's logits, target, weight, loss, lse, coef, row_weight and grad
    pointers; ``sizes``: its C, inner, the three strides of each of logits, target and grad,
    and ignore_index (tuples, so that the two call sites stay short).
    Returns ``(n_bad, loss, w_y)`` per row.
    """
    logits_ptr, target_ptr, weight_ptr, loss_ptr, lse_ptr, coef_ptr, row_weight_ptr, grad_ptr = pointers
    (
        C,
        inner,
        logits_outer_stride,
        logits_class_stride,
        logits_inner_stride,
        target_outer_stride,
        target_class_stride,
        target_inner_stride,
        grad_outer_stride,
        grad_class_stride,
        grad_inner_stride,
        ignore_index,
    ) = sizes
    log2e = tl.full([], LOG2E, zero.dtype)
    o = block // blocks_per_outer
    i = (block % blocks_per_outer) * BLOCK_I + tl.arange(0, BLOCK_I)
    rows = o * inner + i
    row_mask = i < inner
    offs_x_row = o * logits_outer_stride + i * logits_inner_stride
    offs_t_row = o * target_outer_stride + i * target_inner_stride

    if PROB_TARGET:
        y = tl.zeros([BLOCK_I], tl.int64)
        valid = row_mask
        n_bad = tl.zeros([BLOCK_I], tl.int32)
    else:
        y = tl.load(target_ptr + offs_t_row, mask=row_mask, other=0).to(tl.int64)
        valid = row_mask & (y != ignore_index)
        in_bounds = (y >= 0) & (y < C)
        n_bad = (valid & ~in_bounds).to(tl.int32)
        valid = valid & in_bounds

    # The max stays in natural units so that x - m is exact for close values (as torch's
    # x - max): a loss that is a tiny difference of huge logits keeps its precision.
    m = zero - float("inf")  # running max of x
    m_shift = zero  # m, or 0 while m is -inf, so that -inf - -inf never makes a NaN
    s = zero  # running sum of exp(x - m_shift), computed as 2^((x - m_shift) log2 e)
    a_sum = zero  # sum of the class coefficients a seen so far
    a_dot = zero  # sum of a * (x - m_shift) so far
    x_y = zero  # the target's logit, picked up as its tile goes by
    if ONE_TILE:
        # The whole row in one tile, kept for the gradient below: the same sums without
        # the running rescale.
        c = tl.arange(0, BLOCK_C).to(tl.int64)
        mask = (c < C)[:, None] & row_mask[None, :]
        x = tl.load(logits_ptr + offs_x_row[None, :] + c[:, None] * logits_class_stride, mask=mask, other=float("-inf"))
        x = x.to(zero.dtype)
        if HAS_WEIGHT and (PROB_TARGET or SMOOTHING) and not W_GIVEN:
            w = tl.load(weight_ptr + c, mask=c < C, other=0).to(zero.dtype)
        m = tl.max(x, axis=0)
        m_shift = tl.where(m == float("-inf"), 0, m)
        s = tl.sum(tl.exp2((x - m_shift[None, :]) * log2e), axis=0)
        if PROB_TARGET or SMOOTHING:
            offs_t = offs_t_row[None, :] + c[:, None] * target_class_stride
            a = _class_coefficients(target_ptr, w, offs_t, mask, eps, C, HAS_WEIGHT, PROB_TARGET, SMOOTHING, zero)
            a_dot = tl.sum(a * tl.where(mask, x - m_shift[None, :], 0), axis=0)
            a_sum = tl.sum(a, axis=0)
        if not PROB_TARGET:
            x_y = tl.sum(tl.where((c[:, None] == y[None, :]) & mask, x, 0), axis=0)
    else:
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C).to(tl.int64)
            mask = (c < C)[:, None] & row_mask[None, :]
            x = tl.load(
                logits_ptr + offs_x_row[None, :] + c[:, None] * logits_class_stride, mask=mask, other=float("-inf")
            )
            x = x.to(zero.dtype)
            m_new = tl.maximum(m, tl.max(x, axis=0))
            m_shift_new = tl.where(m_new == float("-inf"), 0, m_new)
            s = s * tl.exp2((m - m_shift_new) * log2e) + tl.sum(tl.exp2((x - m_shift_new[None, :]) * log2e), axis=0)
            if PROB_TARGET or SMOOTHING:
                offs_t = offs_t_row[None, :] + c[:, None] * target_class_stride
                if HAS_WEIGHT:
                    w_tile = tl.load(weight_ptr + c, mask=c < C, other=0).to(zero.dtype)
                else:
                    w_tile = zero  # unused
                a = _class_coefficients(
                    target_ptr, w_tile, offs_t, mask, eps, C, HAS_WEIGHT, PROB_TARGET, SMOOTHING, zero
                )
                # Re-reference the running sum to the new max, then add this tile.
                a_dot = a_dot + a_sum * (m_shift - m_shift_new)
                # Masked lanes hold x = -inf and a = 0: zero them before the product (0 * -inf).
                a_dot = a_dot + tl.sum(a * tl.where(mask, x - m_shift_new[None, :], 0), axis=0)
                a_sum = a_sum + tl.sum(a, axis=0)
            if not PROB_TARGET:
                x_y = x_y + tl.sum(tl.where((c[:, None] == y[None, :]) & mask, x, 0), axis=0)
            m = m_new
            m_shift = m_shift_new

    # lse = m_shift + log(s); rows past the end take log(1) rather than warn about log(0).
    log_s = tl.log2(tl.where(row_mask, s, 1)) * tl.full([], LN2, zero.dtype)
    lse = m_shift + log_s
    # sum_c a_c (lse - x_c), from the running sums.
    smooth = a_sum * log_s - a_dot
    if PROB_TARGET:
        w_y = zero
        loss = smooth
        coef = a_sum
    else:
        if HAS_WEIGHT:
            w_y = tl.load(weight_ptr + y, mask=valid, other=0).to(zero.dtype)
        else:
            w_y = tl.where(valid, zero + 1, 0)
        nll = (m_shift - x_y) + log_s
        if SMOOTHING:
            loss = (1 - eps) * w_y * nll + eps / C * smooth
            coef = (1 - eps) * w_y + eps / C * a_sum
        else:
            loss = w_y * nll
            coef = w_y
        loss = tl.where(valid, loss, 0)
        coef = tl.where(valid, coef, 0)
        if STORE_ROW_WEIGHT:
            tl.store(row_weight_ptr + rows, w_y, mask=row_mask)
    if STORE_LOSS:
        tl.store(loss_ptr + rows, loss.to(loss_ptr.dtype.element_ty), mask=row_mask)
    if STORE_STATS:
        tl.store(lse_ptr + rows, lse.to(lse_ptr.dtype.element_ty), mask=row_mask)
        tl.store(coef_ptr + rows, coef.to(coef_ptr.dtype.element_ty), mask=row_mask)

    if GRAD:
        offs_g_row = o * grad_outer_stride + i * grad_inner_stride
        if ONE_TILE:
            # From the registers: grad = scale * (coef * p - a), the module doc's formula.
            grad = tl.exp2((x - lse[None, :]) * log2e) * coef[None, :]
            if PROB_TARGET:
                grad = grad - a
            else:
                onehot_w = tl.where(c[:, None] == y[None, :], w_y[None, :], 0)
                if SMOOTHING:
                    grad = grad - (1 - eps) * onehot_w - eps / C * a
                else:
                    grad = grad - onehot_w
            grad = tl.where(valid[None, :], grad * scale[None, :], 0)
            offs_g = offs_g_row[None, :] + c[:, None] * grad_class_stride
            tl.store(
                grad_ptr + offs_g,
                grad.to(grad_ptr.dtype.element_ty),
                mask=(c < C * grad_ok)[:, None] & row_mask[None, :],
            )
        else:
            # Rows longer than one tile: a second read of the logits (the gradient needs the
            # final lse), still no second launch and no saved-logits backward pass.
            for c0 in range(0, C, BLOCK_C):
                c = c0 + tl.arange(0, BLOCK_C).to(tl.int64)
                mask = (c < C)[:, None] & row_mask[None, :]
                x = tl.load(logits_ptr + offs_x_row[None, :] + c[:, None] * logits_class_stride, mask=mask).to(
                    zero.dtype
                )
                offs_t = offs_t_row[None, :] + c[:, None] * target_class_stride
                grad = _grad_tile(
                    x,
                    c,
                    mask,
                    lse,
                    coef,
                    y,
                    w_y,
                    valid,
                    scale,
                    target_ptr,
                    weight_ptr,
                    offs_t,
                    eps,
                    C,
                    HAS_WEIGHT,
                    PROB_TARGET,
                    SMOOTHING,
                )
                offs_g = offs_g_row[None, :] + c[:, None] * grad_class_stride
                tl.store(
                    grad_ptr + offs_g,
                    grad.to(grad_ptr.dtype.element_ty),
                    mask=(c < C * grad_ok)[:, None] & row_mask[None, :],
                )
    return n_bad, tl.where(row_mask, loss, 0), w_y


@triton.jit(do_not_specialize=["blocks_per_program", "ignore_index", "eps_hi", "eps_lo"])
def cross_entropy_forward_kernel(
    logits_ptr,
    target_ptr,
    weight_ptr,
    loss_ptr,
    lse_ptr,
    coef_ptr,
    row_weight_ptr,
    grad_ptr,
    target_ok_ptr,
    total_weight_ptr,
    C,
    inner,
    n_rows,
    blocks_per_program,
    logits_outer_stride,
    logits_class_stride,
    logits_inner_stride,
    target_outer_stride,
    target_class_stride,
    target_inner_stride,
    grad_outer_stride,
    grad_class_stride,
    grad_inner_stride,
    ignore_index,
    eps_hi,
    eps_lo,
    HAS_WEIGHT: tl.constexpr,
    PROB_TARGET: tl.constexpr,
    SMOOTHING: tl.constexpr,
    GRAD: tl.constexpr,
    REDUCTION: tl.constexpr,
    CHECK_TARGETS: tl.constexpr,
    ONE_TILE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_I: tl.constexpr,
    GROUP_ROWS: tl.constexpr,
    SINGLE: tl.constexpr,
    STORE_STATS: tl.constexpr,
):
    """Per-row loss, ``lse`` and ``coef``, and with ``GRAD`` the loss's gradient, in one pass.

    Shapes: logits and probability targets ``(outer, C, inner)`` strided; index targets
    ``(outer, inner)`` strided (``target_class_stride`` unused); ``loss``, ``lse``, ``coef`` and
    ``row_weight`` contiguous ``(outer * inner,)``; ``grad`` ``(outer, C, inner)`` strided.
    ``row_weight`` is ``w_y`` (0 for ignored rows), the denominator of the weighted mean
    (not written with ``GRAD``, whose prepass already summed it into ``total_weight``).
    With ``CHECK_TARGETS``, ``target_ok`` has one int8 per program: 1 if all its index
    targets are valid.

    ``GRAD`` writes ``dloss/dx`` for a ``grad_output`` of 1: for a 'mean' ``REDUCTION`` divided by
    the mean's denominator, read from ``total_weight`` (index targets: computed on the
    device by :func:`cross_entropy_total_weight_kernel`) or ``n_rows`` (probabilities).
    ``ONE_TILE`` (``BLOCK_C >= C``): the row's logits stay in registers between the
    logsumexp and the gradient, so they are read once; otherwise a second loop reads them
    again (the logsumexp must be final before any gradient is written).

    Each program handles ``blocks_per_program`` consecutive blocks of ``BLOCK_I`` rows (the
    last program fewer), one after the other. With ``ONE_TILE``, the class weights that the
    per-class term needs (label smoothing, probability targets) are loaded once per program
    for all of them, rather than once per row (``_one_pass_plan`` picks the count).

    ``SINGLE``: the grid is this one program, which also does the work of the other
    launches, so the op is one launch: the prepass (with ``GRAD`` and index targets: the
    mean's denominator and the bounds check, before any gradient is written, and no
    gradient at all if a target is bad) and the reduction (the row losses summed in
    registers, in a fixed order). ``loss`` is then the 0-d loss ('mean', 'sum'),
    ``total_weight`` is written, and ``target_ok`` is the single ``all_ok`` flag.

    Without ``STORE_STATS`` (a forward without autograd, which saves nothing), ``lse``,
    ``coef`` and a single program's ``total_weight`` are not written.
    """
    # int64 before any stride multiply (pid here, the class index c in the loops): offsets
    # pass 2^31 on large logits, e.g. c * logits_class_stride for (N, C, T) with C * T > 2^31.
    pid = tl.program_id(0).to(tl.int64)
    blocks_per_outer = tl.cdiv(inner, BLOCK_I)
    # A zero in the compute dtype: fp64 logits compute in fp64, every other dtype in fp32.
    zero = upcast(tl.zeros([BLOCK_I], logits_ptr.dtype.element_ty))
    # A float launch argument is fp32, so eps arrives as hi + lo and fp64 keeps every digit.
    eps = (tl.zeros([], zero.dtype) + eps_hi) + eps_lo
    # Class weights needed class by class in one-tile rows: the program takes several blocks
    # of rows and loads the weights once for all of them.
    if GROUP_ROWS:
        c = tl.arange(0, BLOCK_C).to(tl.int64)
        w = tl.load(weight_ptr + c, mask=c < C, other=0).to(zero.dtype)
    grad_ok = 1
    total_weight = tl.zeros([], zero.dtype) + 1
    if PROB_TARGET:
        total_weight = total_weight * n_rows
    elif GRAD:
        if SINGLE:
            total_weight, n_bad_all = _target_totals(
                target_ptr,
                weight_ptr,
                C,
                inner,
                n_rows,
                target_outer_stride,
                target_inner_stride,
                ignore_index,
                zero,
                HAS_WEIGHT,
                1024,
            )
            grad_ok = (n_bad_all == 0).to(tl.int32)
        else:
            total_weight = tl.load(total_weight_ptr).to(zero.dtype)
    scale = zero
    if GRAD:
        if REDUCTION == REDUCTION_MEAN:
            # 1 / 0 = inf when every target is ignored: those rows are zeroed after scaling.
            scale = zero + 1 / total_weight
        else:
            scale = zero + 1
    pointers = (logits_ptr, target_ptr, weight_ptr, loss_ptr, lse_ptr, coef_ptr, row_weight_ptr, grad_ptr)
    sizes = (
        C,
        inner,
        logits_outer_stride,
        logits_class_stride,
        logits_inner_stride,
        target_outer_stride,
        target_class_stride,
        target_inner_stride,
        grad_outer_stride,
        grad_class_stride,
        grad_inner_stride,
        ignore_index,
    )
    STORE_LOSS: tl.constexpr = (not SINGLE) or REDUCTION == REDUCTION_NONE
    STORE_ROW_WEIGHT: tl.constexpr = not (GRAD or SINGLE)
    if GROUP_ROWS:
        n_bad = tl.zeros([BLOCK_I], tl.int32)
        loss_acc = zero
        w_y_acc = zero
        first_block = pid * blocks_per_program
        last_block = tl.minimum(first_block + blocks_per_program, (n_rows // inner) * blocks_per_outer)
        for block in range(first_block, last_block):
            block_bad, block_loss, block_w_y = _forward_block(
                block,
                w,
                zero,
                eps,
                scale,
                blocks_per_outer,
                pointers,
                sizes,
                HAS_WEIGHT,
                PROB_TARGET,
                SMOOTHING,
                GRAD,
                ONE_TILE,
                BLOCK_C,
                BLOCK_I,
                True,
                STORE_LOSS,
                STORE_ROW_WEIGHT,
                STORE_STATS,
                grad_ok,
            )
            n_bad += block_bad
            loss_acc += block_loss
            w_y_acc += block_w_y
    else:
        # One block a program: straight-line code, no loop for the compiler to carry.
        n_bad, loss_acc, w_y_acc = _forward_block(
            pid,
            zero,
            zero,
            eps,
            scale,
            blocks_per_outer,
            pointers,
            sizes,
            HAS_WEIGHT,
            PROB_TARGET,
            SMOOTHING,
            GRAD,
            ONE_TILE,
            BLOCK_C,
            BLOCK_I,
            False,
            STORE_LOSS,
            STORE_ROW_WEIGHT,
            STORE_STATS,
            grad_ok,
        )
    if CHECK_TARGETS:
        tl.store(target_ok_ptr + pid, (tl.sum(n_bad, axis=0) == 0).to(tl.int8))
    if SINGLE:
        if GRAD and not PROB_TARGET:
            tl.store(target_ok_ptr, grad_ok.to(tl.int8))
        if REDUCTION == REDUCTION_NONE:
            total_weight = tl.zeros([], zero.dtype) + 1
        else:
            if not (GRAD or PROB_TARGET):
                total_weight = tl.sum(w_y_acc, axis=0)
            loss = tl.sum(loss_acc, axis=0)
            if REDUCTION == REDUCTION_MEAN:
                # 0 / 0 is NaN, as torch's mean over no (or only ignored) targets.
                loss = loss / total_weight
            else:
                total_weight = tl.zeros([], zero.dtype) + 1
            tl.store(loss_ptr, loss.to(loss_ptr.dtype.element_ty))
        if STORE_STATS:
            tl.store(total_weight_ptr, total_weight.to(total_weight_ptr.dtype.element_ty))


@triton.jit(do_not_specialize=["ignore_index", "eps_hi", "eps_lo"])
def cross_entropy_backward_kernel(
    grad_output_ptr,
    logits_ptr,
    target_ptr,
    weight_ptr,
    lse_ptr,
    coef_ptr,
    total_weight_ptr,
    grad_ptr,
    C,
    inner,
    grad_output_outer_stride,
    grad_output_inner_stride,
    logits_outer_stride,
    logits_class_stride,
    logits_inner_stride,
    target_outer_stride,
    target_class_stride,
    target_inner_stride,
    grad_outer_stride,
    grad_class_stride,
    grad_inner_stride,
    ignore_index,
    eps_hi,
    eps_lo,
    HAS_WEIGHT: tl.constexpr,
    PROB_TARGET: tl.constexpr,
    SMOOTHING: tl.constexpr,
    REDUCTION: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_I: tl.constexpr,
):
    """``grad = scale * (coef * softmax(x) - a)``: one read of the logits, one write of grad.

    ``grad_output`` is ``(outer, inner)`` strided for ``REDUCTION_NONE``, else 0-d.
    """
    pid = tl.program_id(0).to(tl.int64)
    blocks_per_outer = tl.cdiv(inner, BLOCK_I)
    o = pid // blocks_per_outer
    i = (pid % blocks_per_outer) * BLOCK_I + tl.arange(0, BLOCK_I)
    row_mask = i < inner
    rows = o * inner + i
    offs_x_row = o * logits_outer_stride + i * logits_inner_stride
    offs_t_row = o * target_outer_stride + i * target_inner_stride
    offs_g_row = o * grad_outer_stride + i * grad_inner_stride
    zero = upcast(tl.zeros([BLOCK_I], logits_ptr.dtype.element_ty))
    eps = (tl.zeros([], zero.dtype) + eps_hi) + eps_lo
    scale = _row_scale(
        grad_output_ptr,
        total_weight_ptr,
        o,
        i,
        row_mask,
        grad_output_outer_stride,
        grad_output_inner_stride,
        zero,
        REDUCTION,
    )
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0).to(zero.dtype)
    coef = tl.load(coef_ptr + rows, mask=row_mask, other=0).to(zero.dtype)
    if PROB_TARGET:
        y = tl.zeros([BLOCK_I], tl.int64)
        valid = row_mask
        w_y = zero
    else:
        y = tl.load(target_ptr + offs_t_row, mask=row_mask, other=0).to(tl.int64)
        # A bad target raised in the forward; on a GPU that assertion is asynchronous, so
        # the bounds mask keeps this kernel from reading weights out of bounds meanwhile.
        valid = row_mask & (y != ignore_index) & (y >= 0) & (y < C)
        if HAS_WEIGHT:
            w_y = tl.load(weight_ptr + y, mask=valid, other=0).to(zero.dtype)
        else:
            w_y = tl.where(valid, zero + 1, 0)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C).to(tl.int64)
        mask = (c < C)[:, None] & row_mask[None, :]
        x = tl.load(logits_ptr + offs_x_row[None, :] + c[:, None] * logits_class_stride, mask=mask).to(zero.dtype)
        offs_t = offs_t_row[None, :] + c[:, None] * target_class_stride
        grad = _grad_tile(
            x,
            c,
            mask,
            lse,
            coef,
            y,
            w_y,
            valid,
            scale,
            target_ptr,
            weight_ptr,
            offs_t,
            eps,
            C,
            HAS_WEIGHT,
            PROB_TARGET,
            SMOOTHING,
        )
        offs_g = offs_g_row[None, :] + c[:, None] * grad_class_stride
        tl.store(grad_ptr + offs_g, grad.to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["ignore_index"])
def cross_entropy_scale_grad_kernel(
    grad_output_ptr,
    target_ptr,
    grad_ptr,
    C,
    inner,
    target_outer_stride,
    target_inner_stride,
    grad_outer_stride,
    grad_class_stride,
    grad_inner_stride,
    ignore_index,
    PROB_TARGET: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_I: tl.constexpr,
):
    """The backward of the one-pass forward: ``grad *= grad_output`` in place, unless it is 1.

    ``grad_output`` is 0-d and read here, on the device: when it is 1 (``loss.backward()``)
    each program reads that one value and ends, so the backward moves no logits-sized
    data and the host never waits. Otherwise index targets are read (one per row) so that
    ignored rows stay exactly 0, as torch leaves them, even for an inf or nan grad_output.
    """
    g = tl.load(grad_output_ptr)
    if g != 1:
        pid = tl.program_id(0).to(tl.int64)
        blocks_per_outer = tl.cdiv(inner, BLOCK_I)
        o = pid // blocks_per_outer
        i = (pid % blocks_per_outer) * BLOCK_I + tl.arange(0, BLOCK_I)
        row_mask = i < inner
        offs_g_row = o * grad_outer_stride + i * grad_inner_stride
        zero = upcast(tl.zeros([BLOCK_I], grad_ptr.dtype.element_ty))
        scale = zero + g.to(zero.dtype)
        if PROB_TARGET:
            valid = row_mask
        else:
            y = tl.load(target_ptr + o * target_outer_stride + i * target_inner_stride, mask=row_mask, other=0).to(
                tl.int64
            )
            valid = row_mask & (y != ignore_index)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C).to(tl.int64)
            mask = (c < C)[:, None] & row_mask[None, :]
            offs_g = offs_g_row[None, :] + c[:, None] * grad_class_stride
            grad = tl.load(grad_ptr + offs_g, mask=mask).to(zero.dtype)
            grad = tl.where(valid[None, :], grad * scale[None, :], 0)
            tl.store(grad_ptr + offs_g, grad.to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _target_totals(
    target_ptr,
    weight_ptr,
    C,
    inner,
    n_rows,
    target_outer_stride,
    target_inner_stride,
    ignore_index,
    acc_like,
    HAS_WEIGHT: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    """(total_weight, n_bad) over the ``(outer, inner)`` index targets, in ``acc_like``'s dtype.

    ``total_weight``: the sum of ``weight[y]`` (or the count) over valid non-ignored targets;
    ``n_bad``: how many targets are neither in ``[0, C)`` nor ``ignore_index``. A fixed order.
    """
    offsets = tl.arange(0, BLOCK_SIZE)
    zero = tl.zeros([BLOCK_SIZE], acc_like.dtype)
    weight_acc = zero
    n_bad = tl.zeros([BLOCK_SIZE], tl.int32)
    for start in range(0, n_rows, BLOCK_SIZE):
        rows = start + offsets.to(tl.int64)
        row_mask = rows < n_rows
        o = rows // inner
        i = rows % inner
        y = tl.load(target_ptr + o * target_outer_stride + i * target_inner_stride, mask=row_mask, other=0).to(tl.int64)
        counted = row_mask & (y != ignore_index)
        in_bounds = (y >= 0) & (y < C)
        n_bad += (counted & ~in_bounds).to(tl.int32)
        valid = counted & in_bounds
        if HAS_WEIGHT:
            weight_acc += tl.load(weight_ptr + y, mask=valid, other=0).to(zero.dtype)
        else:
            weight_acc += tl.where(valid, 1, 0).to(zero.dtype)
    return tl.sum(weight_acc, axis=0), tl.sum(n_bad, axis=0)


@triton.jit(do_not_specialize=["ignore_index"])
def cross_entropy_total_weight_kernel(
    target_ptr,
    weight_ptr,
    total_weight_ptr,
    all_ok_ptr,
    C,
    inner,
    n_rows,
    target_outer_stride,
    target_inner_stride,
    ignore_index,
    HAS_WEIGHT: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    """The prepass of the one-pass forward: reads only the ``(outer, inner)`` index targets.

    Writes ``total_weight``, the weighted mean's denominator (the sum of ``weight[y]``, or
    the count, over non-ignored targets; the gradient written by the forward needs it
    before any row is done), and ``all_ok`` (one int8, 1 when every target is in
    ``[0, C)`` or ``ignore_index``), checked on the host by ``torch._assert_async`` before
    the forward writes anything. One program, in a fixed order: deterministic.
    """
    total_weight, n_bad = _target_totals(
        target_ptr,
        weight_ptr,
        C,
        inner,
        n_rows,
        target_outer_stride,
        target_inner_stride,
        ignore_index,
        upcast(tl.zeros([], total_weight_ptr.dtype.element_ty)),
        HAS_WEIGHT,
        BLOCK_SIZE,
    )
    tl.store(total_weight_ptr, total_weight.to(total_weight_ptr.dtype.element_ty))
    tl.store(all_ok_ptr, (n_bad == 0).to(tl.int8))


@triton.jit
def _reduce_rows(
    row_loss_ptr,
    row_weight_ptr,
    loss_ptr,
    total_weight_ptr,
    n_rows,
    REDUCTION: tl.constexpr,
    HAS_ROW_WEIGHT: tl.constexpr,
    GIVEN_TOTAL_WEIGHT: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    """The loss and ``total_weight`` of :func:`cross_entropy_reduce_kernel`."""
    offsets = tl.arange(0, BLOCK_SIZE)
    zero = upcast(tl.zeros([BLOCK_SIZE], row_loss_ptr.dtype.element_ty))
    loss_acc = zero
    weight_acc = zero
    for start in range(0, n_rows, BLOCK_SIZE):
        mask = start + offsets < n_rows
        loss_acc += tl.load(row_loss_ptr + start + offsets, mask=mask, other=0).to(zero.dtype)
        if HAS_ROW_WEIGHT:
            weight_acc += tl.load(row_weight_ptr + start + offsets, mask=mask, other=0).to(zero.dtype)
    loss = tl.sum(loss_acc, axis=0)
    if GIVEN_TOTAL_WEIGHT:
        # Summed by the prepass (cross_entropy_total_weight_kernel), in the same order.
        if REDUCTION == REDUCTION_MEAN:
            loss = loss / tl.load(total_weight_ptr).to(zero.dtype)
        tl.store(loss_ptr, loss.to(loss_ptr.dtype.element_ty))
    else:
        if REDUCTION == REDUCTION_MEAN:
            if HAS_ROW_WEIGHT:
                total_weight = tl.sum(weight_acc, axis=0)
            else:
                total_weight = tl.sum(zero, axis=0) + n_rows
            # 0 / 0 is NaN, as torch's mean over no (or only ignored) targets.
            loss = loss / total_weight
        else:
            total_weight = tl.sum(zero, axis=0) + 1
        tl.store(loss_ptr, loss.to(loss_ptr.dtype.element_ty))
        tl.store(total_weight_ptr, total_weight.to(total_weight_ptr.dtype.element_ty))


@triton.jit
def cross_entropy_reduce_kernel(
    row_loss_ptr,
    row_weight_ptr,
    loss_ptr,
    total_weight_ptr,
    target_ok_ptr,
    all_ok_ptr,
    n_rows,
    n_flags,
    REDUCTION: tl.constexpr,
    HAS_ROW_WEIGHT: tl.constexpr,
    GIVEN_TOTAL_WEIGHT: tl.constexpr,
    CHECK_TARGETS: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    """Second stage of the deterministic sum: one program adds the per-row partials in order.

    Writes the reduced loss, and ``total_weight`` (the mean's denominator: the sum of
    ``row_weight`` for class-index targets, the row count otherwise; 1 for a sum or for
    ``REDUCTION_NONE``, which reduces no loss). With ``CHECK_TARGETS``, also writes
    ``all_ok`` (one int8): the minimum of the ``n_flags`` per-program ``target_ok`` flags
    of the forward, 1 when every target is valid. With ``GIVEN_TOTAL_WEIGHT`` (the
    one-pass forward) ``total_weight`` was written by the prepass and is only read.
    """
    offsets = tl.arange(0, BLOCK_SIZE)
    if CHECK_TARGETS:
        ok = tl.full([BLOCK_SIZE], 1, tl.int32)
        for start in range(0, n_flags, BLOCK_SIZE):
            mask = start + offsets < n_flags
            ok = tl.minimum(ok, tl.load(target_ok_ptr + start + offsets, mask=mask, other=1).to(tl.int32))
        tl.store(all_ok_ptr, tl.min(ok, axis=0).to(tl.int8))
    if REDUCTION == REDUCTION_NONE:
        tl.store(total_weight_ptr, tl.full([], 1, total_weight_ptr.dtype.element_ty))
    else:
        _reduce_rows(
            row_loss_ptr,
            row_weight_ptr,
            loss_ptr,
            total_weight_ptr,
            n_rows,
            REDUCTION,
            HAS_ROW_WEIGHT,
            GIVEN_TOTAL_WEIGHT,
            BLOCK_SIZE,
        )


def _blocks(geometry: tuple) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_I) for 3-D logits: the tile is long along whichever dim is contiguous.

    ``geometry``: the logits' ``(outer, C, inner, outer_stride, class_stride, inner_stride)``.

    Classes contiguous (``(N, C)`` row-major): up to 4096 classes of a row per tile, and
    when C is small, many rows per program (a 10-class row alone would waste a program).
    Rows contiguous (``(N, C, d1, ...)``, column-major ``(N, C)``): up to 128 adjacent rows
    per tile, so each class's loads are one coalesced run, and as many classes as fit.
    """
    _, C, inner, _, class_stride, row_stride = geometry
    return _block_sizes(C, inner, class_stride == 1 or C == 1 or row_stride != 1)


@functools.lru_cache(maxsize=256)
def _block_sizes(C: int, inner: int, classes_long: bool) -> tuple[int, int]:
    """_blocks' arithmetic, cached: (BLOCK_C, BLOCK_I) for C classes and ``inner`` rows."""
    c_pow2 = next_power_of_2(max(C, 1))
    i_pow2 = next_power_of_2(max(inner, 1))
    tile = CROSS_ENTROPY_TILE_SIZE
    if classes_long:
        block_c = min(c_pow2, CROSS_ENTROPY_MAX_BLOCK_C)
        return block_c, min(i_pow2, tile // block_c)
    block_i = min(i_pow2, CROSS_ENTROPY_MAX_BLOCK_I)
    return min(c_pow2, tile // block_i), block_i


# Rows per program of the one-pass forward when every row needs the class weights class by
# class (weights with label smoothing, or with probability targets): a program loads the
# weight vector once and keeps it in registers for all its rows, instead of loading it again
# for each row. Re-read per row, the weights cost 4 B per logit, as much as the logits
# themselves (a third of the 12 B the kernel then moved); once per 128 rows or more they cost
# at most 4 / 128 = 0.031 B. Rule, from the row count N: floor(N / 128) programs (at least
# one), the rows split evenly between them in blocks, so each program has 128 to 255 rows
# and the bound holds for every N. Trade-off: the grid is N / 128 programs (for rows of
# 2048-8192 classes, one row a block) and each program's rows run one after the other, so a
# GPU gets fewer programs than SMs (132 on an H100) below ~17k rows; above that (a loss over
# a batch of tokens) it has full waves. On a GPU the re-read weights mostly came from L2 (a
# 4096-class fp32 vector is 16 kB), so the change saves L2-to-SM bandwidth and half of the
# kernel's load instructions rather than DRAM bytes (a modeled gain, not measured). Only
# this case groups rows: without weights, or without a per-class term, nothing is re-read,
# and one block a program keeps the most parallelism.
CROSS_ENTROPY_WEIGHT_ROWS_PER_PROGRAM = 128


@functools.lru_cache(maxsize=256)
def _one_pass_plan(
    C: int, outer: int, inner: int, classes_long: bool, weights_per_class: bool, fp64: bool
) -> tuple[int, int, int, bool, int, int, bool]:
    """(BLOCK_C, BLOCK_I, num_warps, one_tile, blocks_per_program, programs, grouped): the forward with grad.

    A row of up to CROSS_ENTROPY_ONE_PASS_MAX_C padded classes is one tile held in
    registers, so the logits are read once; longer rows take the usual tiles and a second
    read (``one_tile`` False). ``weights_per_class``: the loss reads the class weights
    class by class (weights with smoothing or probability targets); then a one-tile program
    handles several blocks of rows (CROSS_ENTROPY_WEIGHT_ROWS_PER_PROGRAM above).
    ``fp64``: the logits are fp64.
    """
    c_pow2 = next_power_of_2(max(C, 1))
    # An fp64 tile of 8192 classes with the weights needed beside it spills (100-270 B on
    # sm_90 at 16 or 32 warps, grouped or not): fp64, gradcheck's dtype, reads such rows
    # twice in tiles of 4096, as longer rows.
    wide_fp64 = fp64 and weights_per_class and c_pow2 > CROSS_ENTROPY_TILE_SIZE
    if c_pow2 > CROSS_ENTROPY_ONE_PASS_MAX_C or wide_fp64:
        block_c, block_i = _block_sizes(C, inner, classes_long)
        return block_c, block_i, CROSS_ENTROPY_NUM_WARPS, False, 1, _grid(outer, inner, block_i)[0], False
    i_pow2 = next_power_of_2(max(inner, 1))
    max_i = max(1, CROSS_ENTROPY_TILE_SIZE // c_pow2)
    if not classes_long:
        max_i = min(max_i, CROSS_ENTROPY_MAX_BLOCK_I)
    block_i = min(i_pow2, max_i)
    warps = CROSS_ENTROPY_ONE_PASS_NUM_WARPS if c_pow2 * block_i > CROSS_ENTROPY_TILE_SIZE else CROSS_ENTROPY_NUM_WARPS
    n_blocks = _grid(outer, inner, block_i)[0]
    if not weights_per_class or n_blocks == 0:
        return c_pow2, block_i, warps, True, 1, n_blocks, False
    if c_pow2 * block_i > CROSS_ENTROPY_TILE_SIZE:
        # An 8192-class tile and the weights held beside it: 16 fp32 of each per thread over
        # 16 warps spill on sm_90 (128 registers a thread); over 32 warps, 8 of each fit
        # in ~50 registers (64 allowed), checked by compiling for sm_90 and sm_80.
        warps = 32
    programs = max(1, n_blocks // max(1, CROSS_ENTROPY_WEIGHT_ROWS_PER_PROGRAM // block_i))
    blocks_per_program = (n_blocks + programs - 1) // programs
    programs = (n_blocks + blocks_per_program - 1) // blocks_per_program
    return c_pow2, block_i, warps, True, blocks_per_program, programs, True


def _grid(outer: int, inner: int, block_i: int) -> tuple[int]:
    return (outer * ((inner + block_i - 1) // block_i),)


# Launches bound once per signature (kernels/_launch.py).
_forward = BoundKernel(cross_entropy_forward_kernel)
_reduce = BoundKernel(cross_entropy_reduce_kernel)
_backward = BoundKernel(cross_entropy_backward_kernel)
_scale_grad = BoundKernel(cross_entropy_scale_grad_kernel)
_total_weight = BoundKernel(cross_entropy_total_weight_kernel)


def _to_fp32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


@functools.lru_cache(maxsize=64)
def _split_fp64(value: float) -> tuple[float, float]:
    """``value`` as two fp32-exact floats whose sum is ``value`` to ~1e-16 (fp64 kernels add them)."""
    hi = _to_fp32(value)
    return hi, _to_fp32(value - hi)


def forward_plan(geometry: tuple, fp64: bool, weights_per_class: bool, one_pass: bool) -> tuple:
    """The forward's launch plan: ``(BLOCK_C, BLOCK_I, num_warps, one_tile, blocks_per_program,
    programs, grouped)``.

    ``geometry``: the logits' ``(outer, C, inner, outer_stride, class_stride, inner_stride)``
    (the launchers take this rather than a 3-D view, which would cost ~1.5 µs of host time
    a view). ``one_pass``: the forward writes the gradient too. ``weights_per_class``: class
    weights with label smoothing or probability targets. ``programs == 1``: the forward
    does the whole op in one launch (``SINGLE``), and the caller passes it the reduced buffers.
    """
    outer, C, inner, _, class_stride, row_stride = geometry
    if not one_pass:
        block_c, block_i = _blocks(geometry)
        return block_c, block_i, CROSS_ENTROPY_NUM_WARPS, False, 1, _grid(outer, inner, block_i)[0], False
    return _one_pass_plan(C, outer, inner, class_stride == 1 or C == 1 or row_stride != 1, weights_per_class, fp64)


def cross_entropy_forward(
    plan: tuple,
    logits: torch.Tensor,
    geometry: tuple,
    target: torch.Tensor,
    target_strides: tuple,
    weight: torch.Tensor | None,
    loss: torch.Tensor,
    lse: torch.Tensor,
    coef: torch.Tensor,
    row_weight: torch.Tensor,
    grad: torch.Tensor | None,
    grad_strides: tuple,
    target_ok: torch.Tensor | None,
    total_weight: torch.Tensor,
    ignore_index: int,
    label_smoothing: float,
    prob_target: bool,
    reduction: int,
    store_stats: bool = True,
) -> None:
    """Launch the forward over ``logits`` seen as ``(outer, C, inner)`` with :func:`forward_plan`'s ``plan``.

    ``geometry``: the logits' ``(outer, C, inner, outer_stride, class_stride, inner_stride)``;
    ``target_strides``, ``grad_strides``: the ``(outer, class, inner)`` strides of ``target``
    and ``grad`` (class stride 0 for index targets).
    ``target`` is ``(outer, inner)`` (indices) or ``(outer, C, inner)`` (probabilities);
    ``lse``, ``coef``, ``row_weight`` are contiguous ``(outer * inner,)``; ``loss`` too (the
    row losses), except for a one-program plan with a 'mean' or 'sum' ``reduction``, where
    it is the 0-d loss. ``target_ok`` (index targets; None with ``grad`` unless one
    program) is int8, one flag per program (the ``all_ok`` flag for one program).
    ``grad``, when given, is ``(outer, C, inner)`` and receives ``dloss/dlogits`` for a
    ``grad_output`` of 1, for a 'mean' divided by the mean's denominator, read from the 0-d
    ``total_weight`` (index targets: filled by :func:`cross_entropy_total_weight` first,
    unless one program, which computes and writes it, as it does without ``grad``).
    Without ``store_stats``, ``lse``, ``coef`` (and one program's ``total_weight``) are
    not written: any tensor will do.
    """
    launch = forward_launch(
        plan,
        geometry,
        target_strides,
        grad_strides,
        ignore_index,
        label_smoothing,
        prob_target,
        reduction,
        weight is not None,
        grad is not None,
        target_ok is not None and grad is None,
        store_stats,
    )
    if launch is not None:
        launch(forward_tensors(logits, target, weight, loss, lse, coef, row_weight, grad, target_ok, total_weight))


def forward_launch(
    plan: tuple,
    geometry: tuple,
    target_strides: tuple,
    grad_strides: tuple,
    ignore_index: int,
    label_smoothing: float,
    prob_target: bool,
    reduction: int,
    has_weight: bool,
    has_grad: bool,
    check_targets: bool,
    store_stats: bool,
) -> Callable[[tuple], None] | None:
    """:func:`cross_entropy_forward`'s launch with all but its tensors bound, or None without rows.

    Takes the arguments of :func:`cross_entropy_forward` that are not tensors, and whether
    ``weight`` and ``grad`` are given and ``target_ok`` is checked without ``grad``.
    Returns ``launch(tensors)``, ``tensors`` from :func:`forward_tensors`: what a caller
    that launches the same shapes and options again keeps, to skip this arithmetic.
    """
    outer, C, inner, x_outer, x_class, x_inner = geometry
    if outer * inner == 0:
        return None
    block_c, block_i, warps, one_tile, blocks_per_program, programs, grouped = plan
    t_outer, t_class, t_inner = target_strides
    g_outer, g_class, g_inner = grad_strides
    eps_hi, eps_lo = _split_fp64(label_smoothing)
    fixed = (
        C,
        inner,
        outer * inner,
        blocks_per_program,
        x_outer,
        x_class,
        x_inner,
        t_outer,
        t_class,
        t_inner,
        g_outer,
        g_class,
        g_inner,
        ignore_index,
        eps_hi,
        eps_lo,
    )
    # Constexprs in the kernel's order: HAS_WEIGHT, PROB_TARGET, SMOOTHING, GRAD, REDUCTION,
    # CHECK_TARGETS, ONE_TILE, BLOCK_C, BLOCK_I, GROUP_ROWS, SINGLE, STORE_STATS.
    constants = (
        has_weight,
        prob_target,
        label_smoothing > 0,
        has_grad,
        reduction,
        check_targets,
        one_tile,
        block_c,
        block_i,
        grouped,
        programs == 1,
        store_stats,
    )
    # The sizes, strides and options bound once per distinct value (BoundKernel.planned).
    return functools.partial(_forward.planned(fixed, constants, warps), programs)


def forward_tensors(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    loss: torch.Tensor,
    lse: torch.Tensor,
    coef: torch.Tensor,
    row_weight: torch.Tensor,
    grad: torch.Tensor | None,
    target_ok: torch.Tensor | None,
    total_weight: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """The forward kernel's tensor arguments (see :func:`cross_entropy_forward`), an unused
    tensor standing in for each None."""
    return (
        logits,
        target,
        logits if weight is None else weight,
        loss,
        lse,
        coef,
        row_weight,
        logits if grad is None else grad,
        loss if target_ok is None else target_ok,
        total_weight,
    )


def cross_entropy_total_weight(
    target: torch.Tensor,
    target_strides: tuple,
    outer: int,
    inner: int,
    weight: torch.Tensor | None,
    total_weight: torch.Tensor,
    all_ok: torch.Tensor,
    n_classes: int,
    ignore_index: int,
) -> None:
    """The prepass over ``(outer, inner)`` index targets (``target_strides``: theirs, as (outer, class, inner)).

    Fills 0-d ``total_weight`` and int8 ``all_ok``.
    """
    # Constexprs in the kernel's order: HAS_WEIGHT, BLOCK_SIZE.
    _total_weight.launch_fixed(
        1,
        (target, weight if weight is not None else total_weight, total_weight, all_ok),
        (
            n_classes,
            max(inner, 1),
            outer * inner,
            target_strides[0],
            target_strides[2],
            ignore_index,
        ),
        (weight is not None, CROSS_ENTROPY_REDUCE_BLOCK_SIZE),
        4,
    )


def cross_entropy_reduce(
    row_loss: torch.Tensor,
    row_weight: torch.Tensor | None,
    loss: torch.Tensor | None,
    total_weight: torch.Tensor,
    reduction: int,
    target_ok: torch.Tensor | None = None,
    all_ok: torch.Tensor | None = None,
    given_total_weight: bool = False,
) -> None:
    """Sum (or weighted-mean) the per-row losses into 0-d ``loss``; fill 0-d ``total_weight``.

    For ``reduction`` none, ``loss`` is None and ``total_weight`` becomes 1. With
    ``target_ok`` (the forward's per-program flags), also writes their minimum into the
    one-element int8 ``all_ok``. With ``given_total_weight`` the prepass already wrote
    ``total_weight``, which a mean divides by.
    """
    check = target_ok is not None
    # Constexprs in the kernel's order: REDUCTION, HAS_ROW_WEIGHT, GIVEN_TOTAL_WEIGHT, CHECK_TARGETS, BLOCK_SIZE.
    _reduce.launch_fixed(
        1,
        (
            row_loss,
            row_weight if row_weight is not None else row_loss,
            loss if loss is not None else row_loss,
            total_weight,
            target_ok if check else row_loss,
            all_ok if check else row_loss,
        ),
        (row_loss.numel(), target_ok.numel() if check else 0),
        (reduction, row_weight is not None, given_total_weight, check, CROSS_ENTROPY_REDUCE_BLOCK_SIZE),
        4,
    )


def cross_entropy_backward(
    grad_output: torch.Tensor,
    grad_output_strides: tuple,
    logits: torch.Tensor,
    geometry: tuple,
    target: torch.Tensor,
    target_strides: tuple,
    weight: torch.Tensor | None,
    lse: torch.Tensor,
    coef: torch.Tensor,
    total_weight: torch.Tensor,
    grad: torch.Tensor,
    grad_strides: tuple,
    ignore_index: int,
    label_smoothing: float,
    prob_target: bool,
    reduction: int,
) -> None:
    """Write ``dloss/dlogits`` into ``grad``; ``grad_output`` is ``(outer, inner)`` or 0-d.

    ``geometry``: the logits' ``(outer, C, inner, outer_stride, class_stride, inner_stride)``;
    the ``*_strides`` are each tensor's strides in that view (``(outer, inner)`` for
    ``grad_output``, (0, 0) when 0-d; class stride 0 for index targets).
    """
    outer, C, inner = geometry[:3]
    if outer * inner * C == 0:
        return
    block_c, block_i = _blocks(geometry)
    eps_hi, eps_lo = _split_fp64(label_smoothing)
    # Constexprs in the kernel's order: HAS_WEIGHT, PROB_TARGET, SMOOTHING, REDUCTION, BLOCK_C, BLOCK_I.
    _backward.launch_fixed(
        _grid(outer, inner, block_i)[0],
        (grad_output, logits, target, weight if weight is not None else logits, lse, coef, total_weight, grad),
        (
            C,
            inner,
            *grad_output_strides,
            *geometry[3:],
            *target_strides,
            *grad_strides,
            ignore_index,
            eps_hi,
            eps_lo,
        ),
        (weight is not None, prob_target, label_smoothing > 0, reduction, block_c, block_i),
        CROSS_ENTROPY_NUM_WARPS,
    )


def scale_grad_launch(
    target_strides: tuple, geometry: tuple, ignore_index: int, prob_target: bool
) -> Callable[[tuple], None] | None:
    """The launch that scales the forward's gradient in place by the 0-d ``grad_output``, or None when empty.

    Nothing is written when ``grad_output`` is 1 (decided on the device). ``geometry``:
    the gradient's ``(outer, C, inner, outer_stride, class_stride, inner_stride)``;
    ``target_strides``: the index targets' ``(outer, class, inner)`` strides (unused for
    probability targets). Returns ``launch((grad_output, target, grad))``, with every
    argument but those tensors bound.
    """
    outer, C, inner, g_outer, g_class, g_inner = geometry
    if outer * inner * C == 0:
        return None
    block_c, block_i = _blocks(geometry)
    fixed = (C, inner, target_strides[0], target_strides[2], g_outer, g_class, g_inner, ignore_index)
    # Constexprs in the kernel's order: PROB_TARGET, BLOCK_C, BLOCK_I.
    launch = _scale_grad.planned(fixed, (prob_target, block_c, block_i), CROSS_ENTROPY_NUM_WARPS)
    return functools.partial(launch, _grid(outer, inner, block_i)[0])
