"""Mean squared error kernels: forward (elementwise, or a deterministic two-stage sum) and one fused backward.

Every kernel sees ``input`` and ``target`` (and a per-element ``grad_output``) as flat arrays
of ``n_elements`` that share one dense layout; the PyTorch side broadcasts them and
copies other layouts first. The two operands may have different float dtypes (torch
promotes them): each is loaded in its own storage dtype and upcast, so the arithmetic runs
in fp64 when either is fp64 and in fp32 otherwise, exactly the promoted compute dtype.

The reductions never use atomics. Stage 1 (:func:`mse_loss_partial_sums_kernel`) runs at
most ``MSE_MAX_PARTIALS`` programs; each accumulates its strided share of the blocks in a
register vector and writes one partial sum. Stage 2 (:func:`mse_loss_sum_partials_kernel`)
is one program that adds the partials in a fixed tree order and divides by ``n_elements``
for ``'mean'``. Grid and order depend only on ``n_elements``, so two runs are bitwise equal.
An input of at most one block needs one program, which writes the loss itself (one launch).
"""

import torch
import triton
import triton.language as tl

from ._common import upcast
from ._config import MSE_BLOCK_SIZE, MSE_MAX_PARTIALS, MSE_NUM_WARPS, MSE_PARTIALS_NUM_WARPS
from ._launch import BoundKernel


@triton.jit
def _store_as(ptr, value, mask):
    """Store ``value`` in ``ptr``'s dtype; fp64 reaches fp16/bf16 through fp32.

    Only gradients of mixed fp64 / half operands need the fp64 -> half step. Through fp32
    it rounds exactly as torch's own cast does (c10's Half and BFloat16 are built from a
    float), and Triton's interpreter has no correct direct fp64 -> bf16 conversion.
    """
    dtype = ptr.dtype.element_ty
    if dtype != tl.float64:
        value = value.to(tl.float32)
    tl.store(ptr, value.to(dtype), mask=mask)


@triton.jit
def mse_loss_kernel(input_ptr, target_ptr, output_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    """output = (input - target)^2 elementwise, for ``reduction='none'``."""
    # int64 before the multiply: pid * BLOCK_SIZE overflows int32 past 2^31 elements.
    block_start = tl.program_id(0).to(tl.int64) * BLOCK_SIZE
    offsets = block_start + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    diff = upcast(tl.load(input_ptr + offsets, mask=mask)) - upcast(tl.load(target_ptr + offsets, mask=mask))
    tl.store(output_ptr + offsets, (diff * diff).to(output_ptr.dtype.element_ty), mask=mask)


@triton.jit
def mse_loss_partial_sums_kernel(
    input_ptr,
    target_ptr,
    output_ptr,
    grad_input_ptr,
    grad_target_ptr,
    n_elements,
    FINAL: tl.constexpr,
    MEAN: tl.constexpr,
    INPUT_GRAD: tl.constexpr,
    TARGET_GRAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    """Stage 1: output[pid] = sum of (input - target)^2 over blocks pid, pid + num_programs, ...

    Without ``FINAL``, ``output`` holds one partial sum per program, in the compute dtype,
    for :func:`mse_loss_sum_partials_kernel`. With ``FINAL`` the grid is one program, which
    covers every element and so writes the loss itself into the 0-d output (divided by
    ``n_elements`` when ``MEAN``; for no elements, 0 or 0 / 0 = nan as torch): inputs of
    up to one block take a single launch.

    With ``INPUT_GRAD``/``TARGET_GRAD`` it also writes the loss's gradients for a
    ``grad_output`` of 1 (``scale * (input - target)`` and its negation, as
    :func:`mse_loss_backward_kernel`) from the same loads: one pass over the operands for
    the loss and its gradients (the one-pass forward; the backward only rescales them).
    """
    pid = tl.program_id(0).to(tl.int64)
    stride = tl.num_programs(0).to(tl.int64) * BLOCK_SIZE
    # Zeros in the two operands' promoted compute dtype (fp64 if either is fp64, else fp32).
    acc = upcast(tl.zeros([BLOCK_SIZE], input_ptr.dtype.element_ty)) - upcast(
        tl.zeros([BLOCK_SIZE], target_ptr.dtype.element_ty)
    )
    scale = tl.full((), 2.0, acc.dtype)
    if MEAN:
        # torch's norm = 2. / numel: divided in fp64 (exact n past 2^24), rounded once
        # (an empty input has no gradient to scale: max() spares the interpreter's 2 / 0).
        scale = (tl.full((), 2.0, tl.float64) / tl.maximum(n_elements, 1)).to(acc.dtype)
    # Each lane keeps its own running sum across blocks; one tree sum at the end adds
    # the lanes, which rounds far less than summing one long sequence.
    for block_start in range(pid * BLOCK_SIZE, n_elements, stride):
        offsets = block_start + tl.arange(0, BLOCK_SIZE)
        mask = offsets < n_elements
        # Masked-out lanes load 0 from both operands, so they add exactly 0.
        x = upcast(tl.load(input_ptr + offsets, mask=mask, other=0.0))
        t = upcast(tl.load(target_ptr + offsets, mask=mask, other=0.0))
        diff = x - t
        acc += diff * diff
        if INPUT_GRAD:
            _store_as(grad_input_ptr + offsets, scale * diff, mask)
        if TARGET_GRAD:
            _store_as(grad_target_ptr + offsets, -(scale * diff), mask)
    total = tl.sum(acc, axis=0)
    if FINAL and MEAN:
        total = total / n_elements
    tl.store(output_ptr + pid, total.to(output_ptr.dtype.element_ty))


@triton.jit
def mse_loss_sum_partials_kernel(
    partials_ptr, output_ptr, n_partials, n_elements, MEAN: tl.constexpr, BLOCK_SIZE: tl.constexpr
):
    """Stage 2: output = sum(partials), divided by ``n_elements`` when ``MEAN``; one program, one block."""
    offsets = tl.arange(0, BLOCK_SIZE)
    partials = tl.load(partials_ptr + offsets, mask=offsets < n_partials, other=0.0)
    total = tl.sum(partials, axis=0)
    if MEAN:
        total = total / n_elements
    tl.store(output_ptr, total.to(output_ptr.dtype.element_ty))


@triton.jit
def mse_loss_backward_kernel(
    grad_output_ptr,
    input_ptr,
    target_ptr,
    grad_input_ptr,
    grad_target_ptr,
    n_elements,
    SCALAR_GRAD_OUTPUT: tl.constexpr,
    MEAN: tl.constexpr,
    INPUT_GRAD: tl.constexpr,
    TARGET_GRAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    """grad_input = scale * (input - target) * grad_output, grad_target = -grad_input.

    ``scale`` is 2 / n_elements for ``'mean'`` and 2 otherwise. With ``SCALAR_GRAD_OUTPUT``,
    ``grad_output`` is one value for every element (the 0-d gradient of a sum or mean, or
    one broadcast with zero strides, as ``loss.sum()`` sends): it is read here, on the
    device, so the host never waits for it. Otherwise ``grad_output`` has one value per
    element. Only the gradients whose flag is set are written (an unused pointer may be None).
    """
    block_start = tl.program_id(0).to(tl.int64) * BLOCK_SIZE
    offsets = block_start + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    diff = upcast(tl.load(input_ptr + offsets, mask=mask)) - upcast(tl.load(target_ptr + offsets, mask=mask))
    if SCALAR_GRAD_OUTPUT:
        grad_output = upcast(tl.load(grad_output_ptr))
    else:
        grad_output = upcast(tl.load(grad_output_ptr + offsets, mask=mask))
    scale = tl.full((), 2.0, diff.dtype)
    if MEAN:
        # torch's norm = 2. / numel: divided in fp64 (exact n past 2^24), rounded once.
        scale = (tl.full((), 2.0, tl.float64) / n_elements).to(diff.dtype)
    grad = scale * diff * grad_output
    if INPUT_GRAD:
        _store_as(grad_input_ptr + offsets, grad, mask)
    if TARGET_GRAD:
        _store_as(grad_target_ptr + offsets, -grad, mask)


@triton.jit
def mse_loss_scale_grad_kernel(
    grad_output_ptr,
    grad_input_ptr,
    grad_target_ptr,
    n_elements,
    INPUT_GRAD: tl.constexpr,
    TARGET_GRAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    """The one-pass backward: the forward's gradients ``*= grad_output`` in place, unless it is 1.

    ``grad_output`` is 0-d and read here, on the device: when it is 1 (``loss.backward()``)
    each program reads that one value and ends, without a host sync.
    """
    g = tl.load(grad_output_ptr)
    if g != 1:
        offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offsets < n_elements
        if INPUT_GRAD:
            grad = upcast(tl.load(grad_input_ptr + offsets, mask=mask))
            _store_as(grad_input_ptr + offsets, grad * upcast(g).to(grad.dtype), mask)
        if TARGET_GRAD:
            grad = upcast(tl.load(grad_target_ptr + offsets, mask=mask))
            _store_as(grad_target_ptr + offsets, grad * upcast(g).to(grad.dtype), mask)


# Launches bound once per signature (kernels/_launch.py).
_mse_loss = BoundKernel(mse_loss_kernel)
_partial_sums = BoundKernel(mse_loss_partial_sums_kernel)
_sum_partials = BoundKernel(mse_loss_sum_partials_kernel)
_backward = BoundKernel(mse_loss_backward_kernel)
_scale_grad = BoundKernel(mse_loss_scale_grad_kernel)


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype of a loss whose output has ``dtype``: fp64 stays fp64, else fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def mse_loss_forward(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str,
    grad_input: torch.Tensor | None = None,
    grad_target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Squared error of two tensors sharing one dense layout, reduced by ``reduction``.

    Returns a tensor of dtype ``promote_types(input.dtype, target.dtype)``: with ``'none'``
    it has the input's shape and layout, otherwise it is 0-d. For 'mean' and 'sum', the
    given ``grad_input``/``grad_target`` (the operands' layout and dtypes) receive the
    loss's gradients for a ``grad_output`` of 1, in the same pass.
    """
    out_dtype = torch.promote_types(input.dtype, target.dtype)
    n_elements = input.numel()
    if reduction == "none":
        output = torch.empty_like(input, dtype=out_dtype)
        if n_elements > 0:
            grid = ((n_elements + MSE_BLOCK_SIZE - 1) // MSE_BLOCK_SIZE,)
            _mse_loss.launch(grid[0], (input, target, output, n_elements), (MSE_BLOCK_SIZE,), MSE_NUM_WARPS)
        return output
    mean = reduction == "mean"
    output = torch.empty((), dtype=out_dtype, device=input.device)
    # At least one program, so an empty input still writes its 0 (or nan) on the device.
    n_partials = max(1, min((n_elements + MSE_BLOCK_SIZE - 1) // MSE_BLOCK_SIZE, MSE_MAX_PARTIALS))
    final = n_partials == 1
    partials = output if final else torch.empty(n_partials, dtype=_accumulation_dtype(out_dtype), device=input.device)
    # Constexprs in the kernel's order: FINAL, MEAN, INPUT_GRAD, TARGET_GRAD, BLOCK_SIZE.
    _partial_sums.launch(
        n_partials,
        (input, target, partials, grad_input, grad_target, n_elements),
        (final, mean, grad_input is not None, grad_target is not None, MSE_BLOCK_SIZE),
        MSE_NUM_WARPS,
    )
    if not final:
        # Constexprs in the kernel's order: MEAN, BLOCK_SIZE.
        _sum_partials.launch(
            1, (partials, output, n_partials, n_elements), (mean, MSE_MAX_PARTIALS), MSE_PARTIALS_NUM_WARPS
        )
    return output


def mse_loss_backward(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    target: torch.Tensor,
    mean: bool,
    scalar_grad_output: bool,
    input_grad: bool,
    target_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of the MSE loss with respect to input and target, in one launch.

    ``input`` and ``target`` share one dense layout. ``grad_output`` shares it too, unless
    ``scalar_grad_output``: then only its first element is read, for every element.
    ``mean`` scales by 1 / numel. Returns ``(grad_input, grad_target)`` in the layout of
    ``input``, with ``input.dtype`` and ``target.dtype``; a gradient whose flag is False is
    None and is never computed.
    """
    grad_input = torch.empty_like(input) if input_grad else None
    grad_target = torch.empty_like(input, dtype=target.dtype) if target_grad else None
    n_elements = input.numel()
    if n_elements > 0 and (input_grad or target_grad):
        grid = ((n_elements + MSE_BLOCK_SIZE - 1) // MSE_BLOCK_SIZE,)
        # Constexprs in the kernel's order: SCALAR_GRAD_OUTPUT, MEAN, INPUT_GRAD, TARGET_GRAD, BLOCK_SIZE.
        _backward.launch(
            grid[0],
            (grad_output, input, target, grad_input, grad_target, n_elements),
            (scalar_grad_output, mean, input_grad, target_grad, MSE_BLOCK_SIZE),
            MSE_NUM_WARPS,
        )
    return grad_input, grad_target


def mse_loss_scale_grad(
    grad_output: torch.Tensor, grad_input: torch.Tensor | None, grad_target: torch.Tensor | None
) -> None:
    """Scale the one-pass forward's gradients in place by the 0-d ``grad_output`` (nothing if it is 1)."""
    like = grad_input if grad_input is not None else grad_target
    n_elements = like.numel()
    if n_elements == 0:
        return
    # Constexprs in the kernel's order: INPUT_GRAD, TARGET_GRAD, BLOCK_SIZE.
    _scale_grad.launch(
        (n_elements + MSE_BLOCK_SIZE - 1) // MSE_BLOCK_SIZE,
        (grad_output, grad_input, grad_target, n_elements),
        (grad_input is not None, grad_target is not None, MSE_BLOCK_SIZE),
        MSE_NUM_WARPS,
    )
