"""Linear + cross-entropy kernels: the ``(N, V)`` logits ``x @ W.T + b`` never exist in memory.

Shapes: input ``x`` ``(N, D)``, linear weight ``W`` ``(V, D)``, bias ``b`` ``(V,)``, class-index
targets ``y`` ``(N,)``, class weights ``w`` ``(V,)`` (all strided). A tile is ``BLOCK_N`` rows
by ``BLOCK_V`` classes of logits, computed with ``tl.dot`` over ``D`` in ``BLOCK_D`` steps, used
in registers, and dropped.

Forward (two launches, or one):

1. ``linear_cross_entropy_forward_kernel``, grid ``(row blocks, V splits)``: each program
   walks its split's class blocks with an online log-sum-exp and writes, per row, partial
   statistics of its split: running max ``m``, ``sum exp(x - m)``, the target's logit
   (0 unless the split holds it) and, with label smoothing, ``sum_c w_c (x_c - m)`` and
   ``sum_c w_c``. Splitting V keeps the GPU busy when there are few row blocks (4096 rows
   are 64 blocks, half an H100); the split count is a deterministic function of the shape.
2. ``linear_cross_entropy_finalize_kernel``, one program: merges the splits of every row
   in a fixed order, writes ``lse`` and ``coef`` per row (all the backward needs), the
   per-row loss (``'none'``) or the reduced loss and the mean's denominator, and a flag
   saying whether every target is in bounds (the host hands it to ``torch._assert_async``).

When the grid is one program (at most ``BLOCK_N`` rows, one split), that program does the
finalize's work itself (``SINGLE``): one launch, no partials. ``lse``, ``coef`` and the
mean's denominator share one ``stats`` buffer (``2 N + 1`` floats), one allocation: on
small problems the host's time per allocation and launch is the op's cost.

Backward (two launches, each recomputing the logits tiles once):

- ``linear_cross_entropy_grad_input_kernel``, one program per row block, walks every class
  block: ``dX[rows] += G @ W[cols]``;
- ``linear_cross_entropy_grad_weight_kernel``, one program per class block, walks every row
  block: ``dW[cols] += G.T @ X[rows]`` and ``db[cols] += sum_rows G``;

where ``G = s * (coef * softmax - a)`` is the logits' gradient (module doc of
``kernels/cross_entropy.py`` for ``a`` and ``coef``; ``s`` is the row's grad_output, or
``g / total_weight`` for a mean). Each output block has exactly one owner that adds its
terms in a fixed order, accumulated in fp32 (fp64 for fp64) in the output itself when it
is fp32/fp64, else in an fp32 scratch that the last step converts: deterministic with no
atomics. Apple's Cut Cross-Entropy (github.com/apple/ml-cross-entropy, cce/cce_backward.py)
instead lets every (row block, class block) program add into dX and dW with float atomics,
which is faster on a GPU but not reproducible; Liger-Kernel
(src/liger_kernel/ops/fused_linear_cross_entropy.py) materializes logits chunk by chunk.
The price here is a second recompute of the logits: 10 N V D flops in total against 8 for
CCE and 6 for eager torch (which keeps the logits), and a read-modify-write of each
owner's fp32 partial sums per step (64 KB per program at D = 256, which L2 holds; at
D = 4096 the 1 MB per program would spill to DRAM, a case to tune on a GPU). For 16-bit
inputs the fp32 partial sums need a scratch of (N + V) x D x 4 bytes.

Maths per row with logits ``x``, ``lse``, smoothing ``eps``, ``C = V`` classes:
``loss = (1 - eps) w_y (lse - x_y) + eps / C * (lse * sum_c w_c - sum_c w_c x_c)``,
``coef = (1 - eps) w_y + eps / C * sum_c w_c``, 0 for ignored rows.
"""

import struct

import torch
import triton
import triton.language as tl

from ._common import LN2, LOG2E, REDUCTION_MEAN, REDUCTION_NONE
from ._config import (
    LINEAR_CE_BACKWARD_NUM_STAGES,
    LINEAR_CE_BLOCKS,
    LINEAR_CE_FINALIZE_BLOCK,
    LINEAR_CE_FORWARD_NUM_STAGES,
    LINEAR_CE_FORWARD_PROGRAMS,
    LINEAR_CE_MIN_BLOCKS_PER_SPLIT,
    LINEAR_CE_NUM_WARPS,
)
from ._launch import BoundKernel

# Per-row partial statistics written by the forward, one plane each of (splits, N).
N_STATS = 5
STAT_MAX = tl.constexpr(0)
STAT_SUM = tl.constexpr(1)
STAT_TARGET = tl.constexpr(2)
STAT_WDOT = tl.constexpr(3)
STAT_WSUM = tl.constexpr(4)

# The kernels share their tile arithmetic through the @triton.jit helpers below, which the
# compiler inlines. A strided ``(*, D)`` matrix travels as one tuple ``(ptr, row stride,
# column stride, D)``. Under Triton's interpreter each helper call re-patches
# triton.language (about 0.7 ms), so helpers run once per tile, or once per D step for
# loads, never per element.


@triton.jit
def _compute_zeros(ptr, BLOCK: tl.constexpr):
    """``(BLOCK,)`` zeros in the compute dtype of ``ptr``'s elements: fp64 for fp64, else fp32."""
    if ptr.dtype.element_ty == tl.float64:
        zero = tl.zeros([BLOCK], tl.float64)
    else:
        zero = tl.zeros([BLOCK], tl.float32)
    return zero


@triton.jit
def _tile(mat, idx, idx_mask, d, d_mask):
    """``mat[idx, d]`` as an ``(len(idx), len(d))`` tile in the storage dtype; 0 where masked."""
    ptr, stride_i, stride_d, _ = mat
    return tl.load(
        ptr + idx[:, None] * stride_i + d[None, :] * stride_d,
        mask=idx_mask[:, None] & d_mask[None, :],
        other=0,
    )


@triton.jit
def _class_weights(class_weight_ptr, idx, mask, HAS_WEIGHT: tl.constexpr, dtype: tl.constexpr):
    """The weights of classes ``idx`` in ``dtype`` (1 without class weights: nothing read); 0 where masked."""
    if HAS_WEIGHT:
        w = tl.load(class_weight_ptr + idx, mask=mask, other=0).to(dtype)
    else:
        w = tl.where(mask, 1, 0).to(dtype)
    return w


@triton.jit
def _logits_tile(x_mat, rows, row_mask, w_mat, cols, col_mask, bias, HAS_BIAS, ALLOW_TF32, BLOCK_D: tl.constexpr):
    """``x[rows] @ W[cols].T + b[cols]`` in the compute dtype, over D in BLOCK_D steps.

    ``bias`` is ``(b_ptr, stride)``, read only if ``HAS_BIAS``. Masked lanes hold 0 (plus
    nothing from the bias). The dot's inputs stay in the storage dtype; fp32 inputs use
    TF32 only when ``ALLOW_TF32``.
    """
    x_ptr = x_mat[0]
    D = x_mat[3]
    if x_ptr.dtype.element_ty == tl.float64:
        logits = tl.zeros([rows.shape[0], cols.shape[0]], tl.float64)
    else:
        logits = tl.zeros([rows.shape[0], cols.shape[0]], tl.float32)
    d_range = tl.arange(0, BLOCK_D).to(tl.int64)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + d_range
        d_mask = d < D
        xt = _tile(x_mat, rows, row_mask, d, d_mask)
        wt = _tile(w_mat, cols, col_mask, d, d_mask)
        logits = tl.dot(xt, tl.trans(wt), logits, input_precision="tf32" if ALLOW_TF32 else "ieee")
    if HAS_BIAS:
        b_ptr, stride_b = bias
        logits += tl.load(b_ptr + cols * stride_b, mask=col_mask, other=0).to(logits.dtype)[None, :]
    return logits


@triton.jit
def _grad_output_scale(grad_output_ptr, total_weight_ptr, REDUCTION: tl.constexpr, dtype: tl.constexpr):
    """Every row's scale of the loss gradient: ``g``, or ``g / total_weight`` for a mean.

    0 (nothing read) for ``REDUCTION_NONE``, whose scale is per row.
    """
    if REDUCTION == REDUCTION_NONE:
        g = tl.zeros([], dtype)
    else:
        g = tl.load(grad_output_ptr).to(dtype)
        if REDUCTION == REDUCTION_MEAN:
            g = g / tl.load(total_weight_ptr).to(dtype)
    return g


@triton.jit
def _grad_row_factors(row_inputs, rows, row_mask, class_weight_ptr, g, V, ignore_index, eps, HAS_WEIGHT, REDUCTION):
    """Per row of ``G = A p - B onehot(y) - S w``, with the row's scale folded in once.

    ``row_inputs`` is ``(target_ptr, stride_t, lse_ptr, coef_ptr, grad_output_ptr,
    stride_dy)``, ``g`` from :func:`_grad_output_scale`, ``eps`` in the compute dtype.
    Returns ``(y, valid, lse, A, B, S)``; ``valid`` is off for ignored and out-of-bounds
    targets.
    """
    target_ptr, stride_t, lse_ptr, coef_ptr, grad_output_ptr, stride_dy = row_inputs
    y = tl.load(target_ptr + rows * stride_t, mask=row_mask, other=0).to(tl.int64)
    valid = row_mask & (y != ignore_index) & (y >= 0) & (y < V)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0)
    if REDUCTION == REDUCTION_NONE:
        scale = tl.load(grad_output_ptr + rows * stride_dy, mask=row_mask, other=0).to(lse.dtype)
    else:
        scale = tl.zeros_like(lse) + g
    w_y = _class_weights(class_weight_ptr, y, valid, HAS_WEIGHT, lse.dtype)
    coef_a = tl.load(coef_ptr + rows, mask=row_mask, other=0) * scale
    coef_b = (1 - eps) * w_y * scale
    coef_s = eps / V * scale
    return y, valid, lse, coef_a, coef_b, coef_s


@triton.jit
def _grad_tile(logits, y, valid, lse, coef_a, coef_b, coef_s, cols, col_mask, w, SMOOTHING: tl.constexpr):
    """The logits' gradient ``G = A p - B onehot(y) - S w`` on one tile, from the tile's logits.

    ``w`` are the classes' weights (used only with smoothing). Ignored rows and masked
    classes are 0, even when the scale is inf (a mean over no targets).
    """
    p = tl.exp2((logits - lse[:, None]) * tl.full([], LOG2E, logits.dtype))
    grad = coef_a[:, None] * p - tl.where(cols[None, :] == y[:, None], coef_b[:, None], 0)
    if SMOOTHING:
        grad -= coef_s[:, None] * w[None, :]
    return tl.where(valid[:, None] & col_mask[None, :], grad, 0)


@triton.jit
def _add_product(a, b_mat, b_idx, b_mask, out_idx, out_mask, acc_ptr, out_ptr, started, last, ALLOW_TF32, BLOCK_D):
    """One step of an owner's running sum: ``acc[out_idx] + a @ b_mat[b_idx]``, over D in BLOCK_D steps.

    ``acc`` (compute dtype) and ``out`` (output dtype, possibly the same tensor) are
    contiguous ``(*, D)``. The sum starts from 0 unless ``started`` (the buffer is never
    zero-filled), and goes to ``out``, converted, when ``last``, else back to ``acc``.
    """
    D = b_mat[3]
    d_range = tl.arange(0, BLOCK_D).to(tl.int64)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + d_range
        d_mask = d < D
        mask = out_mask[:, None] & d_mask[None, :]
        offs = out_idx[:, None] * D + d[None, :]
        acc = tl.load(acc_ptr + offs, mask=mask & started, other=0)
        bt = _tile(b_mat, b_idx, b_mask, d, d_mask)
        acc = tl.dot(a, bt, acc, input_precision="tf32" if ALLOW_TF32 else "ieee")
        if last:
            tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)
        else:
            tl.store(acc_ptr + offs, acc, mask=mask)


@triton.jit
def _valid_targets(y, row_mask, V, ignore_index):
    """``(valid, bad)`` per row: a target to count (in ``[0, V)``, not ignored), and 1 (int32)
    for one out of bounds. A bad target raises on the host; meanwhile its row computes as
    ignored, so no class weight is read out of bounds."""
    counted = row_mask & (y != ignore_index)
    in_bounds = (y >= 0) & (y < V)
    return counted & in_bounds, (counted & ~in_bounds).to(tl.int32)


@triton.jit
def _finish_rows(
    merged, rows, row_mask, y, valid, class_weight_ptr, stats_ptr, loss_ptr, N, V, eps, HAS_WEIGHT, SMOOTHING, REDUCTION
):
    """Per row, from the statistics over all classes: store ``lse`` and ``coef`` (and the loss
    for ``REDUCTION_NONE``); return ``(loss, w_y)`` for the reduction.

    ``merged`` is ``(m_shift, s, x_y, w_dot, w_sum)`` (the forward kernel's running values);
    ``stats`` holds ``lse`` at ``[0, N)`` and ``coef`` at ``[N, 2 N)``.
    """
    m_shift, s, x_y, w_dot, w_sum = merged
    log_s = tl.log2(tl.where(row_mask, s, 1)) * tl.full([], LN2, s.dtype)
    lse = m_shift + log_s
    w_y = _class_weights(class_weight_ptr, y, valid, HAS_WEIGHT, s.dtype)
    nll = (m_shift - x_y) + log_s
    if SMOOTHING:
        loss = (1 - eps) * w_y * nll + eps / V * (w_sum * log_s - w_dot)
        coef = (1 - eps) * w_y + eps / V * w_sum
    else:
        loss = w_y * nll
        coef = w_y
    loss = tl.where(valid, loss, 0)
    coef = tl.where(valid, coef, 0)
    tl.store(stats_ptr + rows, lse, mask=row_mask)
    tl.store(stats_ptr + N + rows, coef, mask=row_mask)
    if REDUCTION == REDUCTION_NONE:
        tl.store(loss_ptr + rows, loss.to(loss_ptr.dtype.element_ty), mask=row_mask)
    return loss, w_y


@triton.jit
def _store_totals(loss_ptr, total_weight_ptr, ok_ptr, loss_acc, weight_acc, n_bad, REDUCTION: tl.constexpr):
    """Store the reduced loss (unless ``REDUCTION_NONE``), ``total_weight`` (the mean's
    denominator, 1 otherwise) and ``ok`` (1 when no target is out of bounds), from per-lane sums."""
    if REDUCTION == REDUCTION_NONE:
        total_weight = tl.sum(tl.zeros_like(loss_acc), axis=0) + 1
    else:
        loss = tl.sum(loss_acc, axis=0)
        if REDUCTION == REDUCTION_MEAN:
            # 0 / 0 is NaN, as torch's mean over no (or only ignored) targets.
            total_weight = tl.sum(weight_acc, axis=0)
            loss = loss / total_weight
        else:
            total_weight = tl.sum(tl.zeros_like(loss_acc), axis=0) + 1
        tl.store(loss_ptr, loss.to(loss_ptr.dtype.element_ty))
    tl.store(total_weight_ptr, total_weight)
    tl.store(ok_ptr, (tl.sum(n_bad, axis=0) == 0).to(tl.int8))


@triton.jit(do_not_specialize=["ignore_index", "eps_hi", "eps_lo"])
def linear_cross_entropy_forward_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    target_ptr,
    class_weight_ptr,
    part_ptr,
    loss_ptr,
    stats_ptr,
    ok_ptr,
    N,
    V,
    D,
    blocks_per_split,
    stride_xn,
    stride_xd,
    stride_wv,
    stride_wd,
    stride_b,
    stride_t,
    ignore_index,
    eps_hi,
    eps_lo,
    HAS_BIAS: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    SMOOTHING: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    REDUCTION: tl.constexpr,
    SINGLE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Partial log-sum-exp statistics of one row block over one split of the classes.

    ``part`` is contiguous ``(N_STATS, splits, N)`` in the compute dtype. With ``SINGLE``
    (one program: every row in one block, every class in one split) the program holds the
    whole statistics and does the finalize's work itself (one launch instead of two, for
    small problems whose cost is the host's): it writes ``loss``, ``stats`` and ``ok`` as
    :func:`linear_cross_entropy_finalize_kernel` does, and no ``part``. ``REDUCTION``,
    ``ignore_index`` and ``eps`` are read only then.
    """
    # int64 before any stride multiply: N * D and V * D pass 2^31 for real vocabularies.
    pid_n = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    n_splits = tl.num_programs(1).to(tl.int64)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    row_mask = rows < N
    x_mat, w_mat, bias = (x_ptr, stride_xn, stride_xd, D), (w_ptr, stride_wv, stride_wd, D), (b_ptr, stride_b)
    y = tl.load(target_ptr + rows * stride_t, mask=row_mask, other=0).to(tl.int64)
    zero = _compute_zeros(x_ptr, BLOCK_N)
    log2e = tl.full([], LOG2E, zero.dtype)

    m = zero - float("inf")  # running max
    m_shift = zero  # m, or 0 while m is -inf, so that -inf - -inf never makes a NaN
    s = zero  # sum of exp(x - m_shift)
    x_y = zero  # the target's logit, if this split holds it
    w_dot = zero  # sum_c w_c (x_c - m_shift)
    w_sum = zero  # sum_c w_c
    v_start = split * blocks_per_split * BLOCK_V
    v_end = tl.minimum(v_start + blocks_per_split * BLOCK_V, V)
    for v0 in range(v_start, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V).to(tl.int64)
        col_mask = cols < v_end
        logits = _logits_tile(x_mat, rows, row_mask, w_mat, cols, col_mask, bias, HAS_BIAS, ALLOW_TF32, BLOCK_D)
        mask = row_mask[:, None] & col_mask[None, :]
        logits = tl.where(mask, logits, float("-inf"))
        m_new = tl.maximum(m, tl.max(logits, axis=1))
        m_shift_new = tl.where(m_new == float("-inf"), 0, m_new)
        p = tl.exp2((logits - m_shift_new[:, None]) * log2e)
        s = s * tl.exp2((m - m_shift_new) * log2e) + tl.sum(p, axis=1)
        x_y += tl.sum(tl.where(mask & (cols[None, :] == y[:, None]), logits, 0), axis=1)
        if SMOOTHING:
            w = _class_weights(class_weight_ptr, cols, col_mask, HAS_WEIGHT, zero.dtype)
            # Re-reference the running sum to the new max, then add this tile; masked
            # lanes hold -inf logits and w = 0, so they are zeroed before the product.
            w_dot = w_dot + w_sum * (m_shift - m_shift_new)
            w_dot += tl.sum(tl.where(mask, logits - m_shift_new[:, None], 0) * w[None, :], axis=1)
            w_sum += tl.sum(w, axis=0)
        m = m_new
        m_shift = m_shift_new

    if SINGLE:
        valid, bad = _valid_targets(y, row_mask, V, ignore_index)
        # A float launch argument is fp32, so eps arrives as hi + lo and fp64 keeps every digit.
        eps = (tl.zeros([], zero.dtype) + eps_hi) + eps_lo
        loss, w_y = _finish_rows(
            (m_shift, s, x_y, w_dot, w_sum),
            rows,
            row_mask,
            y,
            valid,
            class_weight_ptr,
            stats_ptr,
            loss_ptr,
            N,
            V,
            eps,
            HAS_WEIGHT,
            SMOOTHING,
            REDUCTION,
        )
        _store_totals(loss_ptr, stats_ptr + 2 * N, ok_ptr, loss, w_y, bad, REDUCTION)
    else:
        plane = n_splits * N
        offs = split * N + rows
        tl.store(part_ptr + STAT_MAX * plane + offs, m, mask=row_mask)
        tl.store(part_ptr + STAT_SUM * plane + offs, s, mask=row_mask)
        tl.store(part_ptr + STAT_TARGET * plane + offs, x_y, mask=row_mask)
        if SMOOTHING:
            tl.store(part_ptr + STAT_WDOT * plane + offs, w_dot, mask=row_mask)
            tl.store(part_ptr + STAT_WSUM * plane + offs, w_sum, mask=row_mask)


@triton.jit(do_not_specialize=["ignore_index", "eps_hi", "eps_lo"])
def linear_cross_entropy_finalize_kernel(
    part_ptr,
    target_ptr,
    class_weight_ptr,
    loss_ptr,
    stats_ptr,
    ok_ptr,
    N,
    V,
    n_splits,
    stride_t,
    ignore_index,
    eps_hi,
    eps_lo,
    HAS_WEIGHT: tl.constexpr,
    SMOOTHING: tl.constexpr,
    REDUCTION: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """Merge the splits of every row, in order; write lse, coef, the loss and the target check.

    One program, so the loss sum is added in one fixed order. ``loss`` is ``(N,)`` for
    ``REDUCTION_NONE`` (loss dtype), else 0-d; ``total_weight`` is 0-d (the mean's
    denominator, 1 otherwise); ``ok`` is one int8, 1 when every target is in ``[0, V)`` or
    ``ignore_index``. ``stats`` is contiguous ``(2 N + 1,)`` in the compute dtype: ``lse``
    and ``coef`` per row, then ``total_weight`` (one allocation for the three: host time).
    """
    zero = _compute_zeros(part_ptr, BLOCK_R)
    # A float launch argument is fp32, so eps arrives as hi + lo and fp64 keeps every digit.
    eps = (tl.zeros([], zero.dtype) + eps_hi) + eps_lo
    log2e = tl.full([], LOG2E, zero.dtype)
    plane = n_splits * N
    loss_acc = zero
    weight_acc = zero
    n_bad = tl.zeros([BLOCK_R], tl.int32)
    for r0 in range(0, N, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R).to(tl.int64)
        row_mask = rows < N
        y = tl.load(target_ptr + rows * stride_t, mask=row_mask, other=0).to(tl.int64)
        valid, bad = _valid_targets(y, row_mask, V, ignore_index)
        n_bad += bad
        m = zero - float("inf")
        m_shift = zero
        s = zero
        x_y = zero
        w_dot = zero
        w_sum = zero
        for k in range(0, n_splits):
            offs = k * N + rows
            m_k = tl.load(part_ptr + STAT_MAX * plane + offs, mask=row_mask, other=float("-inf"))
            s_k = tl.load(part_ptr + STAT_SUM * plane + offs, mask=row_mask, other=0)
            m_new = tl.maximum(m, m_k)
            m_shift_new = tl.where(m_new == float("-inf"), 0, m_new)
            m_shift_k = tl.where(m_k == float("-inf"), 0, m_k)
            s = s * tl.exp2((m - m_shift_new) * log2e) + s_k * tl.exp2((m_k - m_shift_new) * log2e)
            x_y += tl.load(part_ptr + STAT_TARGET * plane + offs, mask=row_mask, other=0)
            if SMOOTHING:
                w_dot_k = tl.load(part_ptr + STAT_WDOT * plane + offs, mask=row_mask, other=0)
                w_sum_k = tl.load(part_ptr + STAT_WSUM * plane + offs, mask=row_mask, other=0)
                w_dot = w_dot + w_sum * (m_shift - m_shift_new) + w_dot_k + w_sum_k * (m_shift_k - m_shift_new)
                w_sum += w_sum_k
            m = m_new
            m_shift = m_shift_new
        loss, w_y = _finish_rows(
            (m_shift, s, x_y, w_dot, w_sum),
            rows,
            row_mask,
            y,
            valid,
            class_weight_ptr,
            stats_ptr,
            loss_ptr,
            N,
            V,
            eps,
            HAS_WEIGHT,
            SMOOTHING,
            REDUCTION,
        )
        loss_acc += loss
        weight_acc += w_y
    _store_totals(loss_ptr, stats_ptr + 2 * N, ok_ptr, loss_acc, weight_acc, n_bad, REDUCTION)


@triton.jit(do_not_specialize=["ignore_index", "eps_hi", "eps_lo"])
def linear_cross_entropy_grad_input_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    target_ptr,
    class_weight_ptr,
    stats_ptr,
    grad_output_ptr,
    grad_x_acc_ptr,
    grad_x_ptr,
    N,
    V,
    D,
    stride_xn,
    stride_xd,
    stride_wv,
    stride_wd,
    stride_b,
    stride_t,
    stride_dy,
    ignore_index,
    eps_hi,
    eps_lo,
    HAS_BIAS: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    SMOOTHING: tl.constexpr,
    REDUCTION: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """``dX[rows] = sum over class blocks of G @ W[cols]``, one program per row block.

    ``grad_x_acc`` (compute dtype) and ``grad_x`` (input dtype) are contiguous ``(N, D)``; they
    are the same tensor when the input computes in its own dtype. Partial sums go to
    ``grad_x_acc``, the last class block's result to ``grad_x``.
    """
    pid_n = tl.program_id(0).to(tl.int64)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    row_mask = rows < N
    x_mat, w_mat, bias = (x_ptr, stride_xn, stride_xd, D), (w_ptr, stride_wv, stride_wd, D), (b_ptr, stride_b)
    # The forward's per-row lse and coef, then total_weight, in one (2 N + 1,) buffer.
    lse_ptr = stats_ptr
    coef_ptr = stats_ptr + N
    total_weight_ptr = stats_ptr + 2 * N
    row_inputs = (target_ptr, stride_t, lse_ptr, coef_ptr, grad_output_ptr, stride_dy)
    zero = _compute_zeros(x_ptr, BLOCK_N)
    eps = (tl.zeros([], zero.dtype) + eps_hi) + eps_lo
    g = _grad_output_scale(grad_output_ptr, total_weight_ptr, REDUCTION, zero.dtype)
    y, valid, lse, coef_a, coef_b, coef_s = _grad_row_factors(
        row_inputs, rows, row_mask, class_weight_ptr, g, V, ignore_index, eps, HAS_WEIGHT, REDUCTION
    )

    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V).to(tl.int64)
        col_mask = cols < V
        logits = _logits_tile(x_mat, rows, row_mask, w_mat, cols, col_mask, bias, HAS_BIAS, ALLOW_TF32, BLOCK_D)
        # Class weights are read only for smoothing, the one term that uses them here.
        w = _class_weights(class_weight_ptr, cols, col_mask, HAS_WEIGHT & SMOOTHING, zero.dtype)
        grad = _grad_tile(logits, y, valid, lse, coef_a, coef_b, coef_s, cols, col_mask, w, SMOOTHING).to(
            x_ptr.dtype.element_ty
        )
        last = v0 + BLOCK_V >= V
        _add_product(
            grad, w_mat, cols, col_mask, rows, row_mask, grad_x_acc_ptr, grad_x_ptr, v0 > 0, last, ALLOW_TF32, BLOCK_D
        )


@triton.jit(do_not_specialize=["ignore_index", "eps_hi", "eps_lo"])
def linear_cross_entropy_grad_weight_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    target_ptr,
    class_weight_ptr,
    stats_ptr,
    grad_output_ptr,
    grad_w_acc_ptr,
    grad_w_ptr,
    grad_b_ptr,
    N,
    V,
    D,
    stride_xn,
    stride_xd,
    stride_wv,
    stride_wd,
    stride_b,
    stride_t,
    stride_dy,
    ignore_index,
    eps_hi,
    eps_lo,
    HAS_BIAS: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    SMOOTHING: tl.constexpr,
    REDUCTION: tl.constexpr,
    GRAD_W: tl.constexpr,
    GRAD_B: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """``dW[cols] = sum over row blocks of G.T @ X[rows]`` and ``db[cols] = sum_rows G``.

    One program per class block. ``grad_w_acc`` (compute dtype) and ``grad_w`` (weight
    dtype) are contiguous ``(V, D)`` (the same tensor when no conversion is needed);
    ``grad_b`` is contiguous ``(V,)`` in the bias dtype.
    """
    pid_v = tl.program_id(0).to(tl.int64)
    cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V).to(tl.int64)
    col_mask = cols < V
    x_mat, w_mat, bias = (x_ptr, stride_xn, stride_xd, D), (w_ptr, stride_wv, stride_wd, D), (b_ptr, stride_b)
    # The forward's per-row lse and coef, then total_weight, in one (2 N + 1,) buffer.
    lse_ptr = stats_ptr
    coef_ptr = stats_ptr + N
    total_weight_ptr = stats_ptr + 2 * N
    row_inputs = (target_ptr, stride_t, lse_ptr, coef_ptr, grad_output_ptr, stride_dy)
    zero = _compute_zeros(x_ptr, BLOCK_N)
    eps = (tl.zeros([], zero.dtype) + eps_hi) + eps_lo
    # What depends only on the class block is read once, outside the loop over row blocks.
    if HAS_BIAS:
        b_cols = tl.load(b_ptr + cols * stride_b, mask=col_mask, other=0).to(zero.dtype)
    w = _class_weights(class_weight_ptr, cols, col_mask, HAS_WEIGHT & SMOOTHING, zero.dtype)
    g = _grad_output_scale(grad_output_ptr, total_weight_ptr, REDUCTION, zero.dtype)
    grad_b = tl.zeros([BLOCK_V], zero.dtype)

    for n0 in range(0, N, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
        row_mask = rows < N
        y, valid, lse, coef_a, coef_b, coef_s = _grad_row_factors(
            row_inputs, rows, row_mask, class_weight_ptr, g, V, ignore_index, eps, HAS_WEIGHT, REDUCTION
        )
        # The bias was read above: the tile leaves it out (HAS_BIAS=False) and it is added here.
        logits = _logits_tile(x_mat, rows, row_mask, w_mat, cols, col_mask, bias, False, ALLOW_TF32, BLOCK_D)
        if HAS_BIAS:
            logits += b_cols[None, :]
        grad = _grad_tile(logits, y, valid, lse, coef_a, coef_b, coef_s, cols, col_mask, w, SMOOTHING)
        if GRAD_B:
            grad_b += tl.sum(grad, axis=0)
        if GRAD_W:
            grad_t = tl.trans(grad.to(x_ptr.dtype.element_ty))
            last = n0 + BLOCK_N >= N
            _add_product(
                grad_t,
                x_mat,
                rows,
                row_mask,
                cols,
                col_mask,
                grad_w_acc_ptr,
                grad_w_ptr,
                n0 > 0,
                last,
                ALLOW_TF32,
                BLOCK_D,
            )
    if GRAD_B:
        tl.store(grad_b_ptr + cols, grad_b.to(grad_b_ptr.dtype.element_ty), mask=col_mask)


# Launches bound once per signature (kernels/_launch.py): Triton's ``kernel[grid](...)``
# costs 8-15 µs of host time a launch, a bound launch a few. Under torch.compile tracing
# they record themselves through ``wrap_triton``, so the graph holds the kernels.
_FORWARD = BoundKernel(linear_cross_entropy_forward_kernel, num_stages=LINEAR_CE_FORWARD_NUM_STAGES)
_FINALIZE = BoundKernel(linear_cross_entropy_finalize_kernel)
_GRAD_INPUT = BoundKernel(linear_cross_entropy_grad_input_kernel, num_stages=LINEAR_CE_BACKWARD_NUM_STAGES)
_GRAD_WEIGHT = BoundKernel(linear_cross_entropy_grad_weight_kernel, num_stages=LINEAR_CE_BACKWARD_NUM_STAGES)
# The finalize, one program, runs with Triton's default warps and stages.
_FINALIZE_NUM_WARPS = 4


def _to_fp32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def _split_fp64(value: float) -> tuple[float, float]:
    """``value`` as two fp32-exact floats whose sum is ``value`` to ~1e-16 (fp64 kernels add them)."""
    hi = _to_fp32(value)
    return hi, _to_fp32(value - hi)


def _blocks(dtype: torch.dtype) -> tuple[int, int, int]:
    return LINEAR_CE_BLOCKS[str(dtype).removeprefix("torch.")]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulator dtype of the kernels: fp64 for fp64, else fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def allow_tf32(dtype: torch.dtype) -> bool:
    """TF32 for fp32 dots only when torch's own matmul setting allows it (default: no)."""
    return dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest"


def forward_splits(n_rows: int, n_classes: int, dtype: torch.dtype) -> tuple[int, int]:
    """(splits of the class dim, class blocks per split) for the forward's grid.

    Enough splits to give LINEAR_CE_FORWARD_PROGRAMS programs in all, each walking at least
    LINEAR_CE_MIN_BLOCKS_PER_SPLIT class blocks (so the partials, up to 5 floats per row
    and split, stay under 0.5% of the logits they replace); a function of the shape only,
    so results are reproducible. (Integer ``//`` rather than ``triton.cdiv``, a
    ConstexprFunction that costs microseconds a call from host code.)
    """
    block_n, block_v, _ = _blocks(dtype)
    v_blocks = max((n_classes + block_v - 1) // block_v, 1)
    n_blocks = max((n_rows + block_n - 1) // block_n, 1)
    wanted = max(1, (LINEAR_CE_FORWARD_PROGRAMS + n_blocks - 1) // n_blocks)
    splits = min(wanted, max(1, v_blocks // LINEAR_CE_MIN_BLOCKS_PER_SPLIT))
    per_split = (v_blocks + splits - 1) // splits
    return (v_blocks + per_split - 1) // per_split, per_split


def stats_numel(n_rows: int) -> int:
    """Elements of the forward's ``stats``: ``lse`` and ``coef`` per row, then ``total_weight``."""
    return 2 * n_rows + 1


class LaunchPlan:
    """The four kernels' launches for one signature: shapes, strides, dtype, options.

    Everything a launch needs besides its tensors is worked out here, once: the forward's
    class splits, the grids, the sizes, strides and scalars, and the constexprs. With
    ``planned``, each launch's non-tensor arguments are bound too
    (``BoundKernel.planned``), so a caller that keeps the plan for inputs like these
    (the eager path caches one per signature) pays only the tensors' part of each launch.
    Without it (the ``torch.library`` ops, whose sizes may be symbolic while torch.compile
    traces them), every launch keys all its arguments.

    Args:
        x: ``(N, D)`` input; w: ``(V, D)`` linear weight; b: ``(V,)`` bias or None;
            target: ``(N,)`` class indices (only their geometry and dtype are read).
        has_weight: whether class weights are given.
        options: ``(reduction, ignore_index, label_smoothing)``, reduction torch's enum.
        planned: bind the launches' non-tensor arguments once.
    """

    __slots__ = (
        "_backward_launches",
        "_backward_scalars",
        "_constants",
        "_planned",
        "acc",
        "class_programs",
        "device",
        "finalize_launch",
        "forward_launch",
        "in_features",
        "n_classes",
        "n_rows",
        "n_splits",
        "part_numel",
        "reduction",
        "row_programs",
        "single",
        "stats_numel",
    )

    def __init__(self, x, w, b, target, has_weight: bool, options: tuple[int, int, float], planned: bool) -> None:
        reduction, ignore_index, label_smoothing = options
        N, D = x.shape
        V = w.shape[0]
        self.n_rows, self.n_classes, self.in_features = N, V, D
        self.acc = compute_dtype(x.dtype)
        self.device = x.device
        self.reduction = reduction
        self._planned = planned
        n_splits, per_split = forward_splits(N, V, x.dtype)
        smoothing = label_smoothing > 0
        self.stats_numel = stats_numel(N)
        self.n_splits = n_splits
        block_n, block_v, block_d = _blocks(x.dtype)
        self.row_programs = (N + block_n - 1) // block_n
        self.class_programs = (V + block_v - 1) // block_v
        # One forward program: it finalizes too (no partials, no second launch). Not for
        # fp64, whose one-program variants with class weights and smoothing spill registers
        # on sm_90 (28-32 B at 8 warps, from the cubin); fp64 is for gradcheck, not speed.
        self.single = N > 0 and self.row_programs == 1 and n_splits == 1 and x.dtype != torch.float64
        # Without smoothing only the first 3 statistics exist: no memory for the other
        # planes. Flat: an int size allocates faster than a shape tuple.
        self.part_numel = 0 if self.single else (N_STATS if smoothing else 3) * n_splits * N
        has_bias = b is not None
        stride_t = target.stride(0)
        strides = (*x.stride(), *w.stride(), b.stride(0) if has_bias else 0, stride_t)
        eps_hi, eps_lo = _split_fp64(label_smoothing)
        # HAS_BIAS, HAS_WEIGHT, SMOOTHING, ALLOW_TF32, BLOCK_N, BLOCK_V, BLOCK_D: the
        # forward's constexprs; the backward kernels insert theirs among them.
        self._constants = (has_bias, has_weight, smoothing, allow_tf32(x.dtype), block_n, block_v, block_d)
        self.forward_launch = self.finalize_launch = None
        if N > 0:
            # HAS_BIAS, HAS_WEIGHT, SMOOTHING, ALLOW_TF32, REDUCTION, SINGLE, BLOCK_N, BLOCK_V,
            # BLOCK_D; the reduction matters only to a single program (one compiled
            # variant for the others).
            constants = (*self._constants[:4], reduction if self.single else 0, self.single, *self._constants[4:])
            self.forward_launch = self._bind(
                _FORWARD,
                (N, V, D, per_split, *strides, ignore_index, eps_hi, eps_lo),
                constants,
                LINEAR_CE_NUM_WARPS,
            )
        if not self.single:
            self.finalize_launch = self._bind(
                _FINALIZE,
                (N, V, n_splits, stride_t, ignore_index, eps_hi, eps_lo),
                # HAS_WEIGHT, SMOOTHING, REDUCTION, BLOCK_R.
                (has_weight, smoothing, reduction, LINEAR_CE_FINALIZE_BLOCK),
                _FINALIZE_NUM_WARPS,
            )
        # The backward kernels' non-tensor arguments, but for grad_output's stride.
        self._backward_scalars = ((N, V, D, *strides), (ignore_index, eps_hi, eps_lo))
        # (grad_output stride, grad_x, grad_w, grad_b wanted) -> the two backward launches.
        self._backward_launches: dict[tuple, tuple] = {}

    def _bind(self, bound: BoundKernel, fixed: tuple, constants: tuple, num_warps: int):
        """``launch(programs, tensors, grid_1=1)`` for ``bound`` with these trailing arguments."""
        if self._planned:
            return bound.planned(fixed, constants, num_warps)

        def launch(programs: int, tensors: tuple, grid_1: int = 1) -> None:
            bound.launch(programs, (*tensors, *fixed), constants, num_warps, grid_1)

        return launch

    def _bind_backward(self, stride_dy: int, grad_x: bool, grad_w: bool, grad_b: bool) -> tuple:
        sizes, scalars = self._backward_scalars
        fixed = (*sizes, stride_dy, *scalars)
        has_bias, has_weight, smoothing, tf32, block_n, block_v, block_d = self._constants
        common = (has_bias, has_weight, smoothing, self.reduction)
        grad_input = grad_weight = None
        if grad_x:
            # HAS_BIAS, HAS_WEIGHT, SMOOTHING, REDUCTION, ALLOW_TF32, BLOCK_N, BLOCK_V, BLOCK_D.
            constants = (*common, tf32, block_n, block_v, block_d)
            grad_input = self._bind(_GRAD_INPUT, fixed, constants, LINEAR_CE_NUM_WARPS)
        if grad_w or grad_b:
            # ..., REDUCTION, GRAD_W, GRAD_B, ALLOW_TF32, BLOCK_N, BLOCK_V, BLOCK_D.
            constants = (*common, grad_w, grad_b, tf32, block_n, block_v, block_d)
            grad_weight = self._bind(_GRAD_WEIGHT, fixed, constants, LINEAR_CE_NUM_WARPS)
        return grad_input, grad_weight

    def forward(self, inputs: tuple, outputs: tuple) -> None:
        """Fill the outputs ``(loss, stats, ok)``: two launches, one for a single program or no rows.

        ``inputs`` is ``(x, w, b, target, class_weight)``: ``x`` ``(N, D)``, ``w`` ``(V, D)``,
        ``b`` ``(V,)`` or None, ``target`` ``(N,)`` strided, as the plan was made for;
        ``class_weight`` contiguous ``(V,)`` or None. ``stats`` is contiguous ``(2 N + 1,)``
        in the compute dtype: per row ``lse``, then per row ``coef``, then ``total_weight``
        (:func:`stats_numel`); ``loss`` ``(N,)`` for reduction none, else 0-d; ``ok`` one
        int8 (1 when every target is in bounds).
        """
        x, w, b, target, class_weight = inputs
        loss, stats, ok = outputs
        # A missing bias or class weight is passed as ``w``, which the kernel never reads in its place.
        tensors = (x, w, w if b is None else b, target, w if class_weight is None else class_weight)
        if self.single:
            # No partials: ``stats`` stands in for them.
            self.forward_launch(1, (*tensors, stats, loss, stats, ok))
            return
        part = torch.empty(self.part_numel, dtype=self.acc, device=self.device)
        if self.forward_launch is not None:
            # The finalize writes loss, stats and ok: ``part`` stands in for them here.
            self.forward_launch(self.row_programs, (*tensors, part, part, part, part), self.n_splits)
        self.finalize_launch(1, (part, target, part if class_weight is None else class_weight, loss, stats, ok))

    def backward(self, grad_output: torch.Tensor, saved: tuple, grads: tuple) -> None:
        """Write the requested gradients ``grads = (grad_x, grad_w, grad_b)``, each None when not needed.

        ``saved`` is the forward's ``inputs`` followed by its ``stats``.
        ``grad_x`` ``(N, D)``, ``grad_w`` ``(V, D)`` and ``grad_b`` ``(V,)`` are contiguous;
        ``grad_output`` is ``(N,)`` for reduction none, else 0-d. Accumulates in the compute
        dtype: in the gradient itself when it has that dtype, else in a scratch buffer. N
        must be positive (the caller handles empty batches).
        """
        x, w, b, target, class_weight, stats = saved
        grad_x, grad_w, grad_b = grads
        stride_dy = grad_output.stride(0) if grad_output.dim() == 1 else 0
        key = (stride_dy, grad_x is not None, grad_w is not None, grad_b is not None)
        if self._planned:
            launches = self._backward_launches.get(key)
            if launches is None:
                launches = self._backward_launches[key] = self._bind_backward(*key)
        else:
            launches = self._bind_backward(*key)
        grad_input, grad_weight = launches
        acc = self.acc
        inputs = (x, w, w if b is None else b, target, w if class_weight is None else class_weight)
        inputs = (*inputs, stats, grad_output)
        if grad_input is not None:
            # Accumulate in the gradient itself when it already has the compute dtype. Traced,
            # functionalization gives the two aliased arguments separate copies; that is still
            # right (here and for grad_w below), because the kernel never reads grad_x and
            # writes every element of it at its last step, from the sums kept in grad_x_acc.
            grad_x_acc = grad_x
            if grad_x.dtype != acc:
                grad_x_acc = torch.empty((self.n_rows, self.in_features), dtype=acc, device=self.device)
            grad_input(self.row_programs, (*inputs, grad_x_acc, grad_x))
        if grad_weight is not None:
            if grad_w is None:
                grad_w_acc = grad_w_out = w  # never touched: GRAD_W is off
            else:
                grad_w_out = grad_w_acc = grad_w
                if grad_w.dtype != acc:
                    grad_w_acc = torch.empty((self.n_classes, self.in_features), dtype=acc, device=self.device)
            grad_weight(self.class_programs, (*inputs, grad_w_acc, grad_w_out, stats if grad_b is None else grad_b))


def linear_cross_entropy_forward(inputs: tuple, options: tuple[int, int, float], outputs: tuple) -> None:
    """:meth:`LaunchPlan.forward` for inputs seen once (``options`` as there: reduction, ignore_index, smoothing)."""
    x, w, b, target, class_weight = inputs
    LaunchPlan(x, w, b, target, class_weight is not None, options, planned=False).forward(inputs, outputs)


def linear_cross_entropy_backward(
    grad_output: torch.Tensor, saved: tuple, options: tuple[int, int, float], grads: tuple
) -> None:
    """:meth:`LaunchPlan.backward` for inputs seen once (``saved``: the forward's inputs and stats)."""
    x, w, b, target, class_weight = saved[:5]
    LaunchPlan(x, w, b, target, class_weight is not None, options, planned=False).backward(grad_output, saved, grads)


def modeled_traffic(n_rows: int, in_features: int, n_classes: int, dtype: torch.dtype) -> dict[str, int]:
    """Bytes each kernel loads + stores for one forward + backward (both gradients, mean, no bias).

    Every tile reloads its input rows and weight rows (``BLOCK_N x D`` and ``BLOCK_V x D``),
    and the backward's owners read and write their fp32 partial sums once per step, so:
    forward ``x * v_blocks + W * n_blocks``; grad_input ``x * v_blocks + 2 W * n_blocks`` plus
    the accumulator; grad_weight ``2 x * v_blocks + W * n_blocks`` plus the accumulator (per-row
    scalars omitted). This counts every load as :class:`fused_ops.profiling.KernelTrace` does,
    with no cache; on a GPU, L2 serves much of the reloads. The minimum reads ``x`` and ``W``
    once each way and writes their gradients once.
    """
    block_n, block_v, _ = _blocks(dtype)
    n_b, v_b = (n_rows + block_n - 1) // block_n, (n_classes + block_v - 1) // block_v
    elt = torch.empty((), dtype=dtype).element_size()
    acc = torch.empty((), dtype=compute_dtype(dtype)).element_size()
    x = n_rows * in_features
    w = n_classes * in_features
    return {
        "forward": elt * (x * v_b + w * n_b),
        # Loads of x and W, the partial sums' load + store per step, the final store.
        "grad_input": elt * (x * v_b + 2 * w * n_b) + 2 * acc * x * (v_b - 1) + elt * x,
        "grad_weight": elt * (2 * x * v_b + w * n_b) + 2 * acc * w * (n_b - 1) + elt * w,
        "minimum": elt * 3 * (x + w),
    }
