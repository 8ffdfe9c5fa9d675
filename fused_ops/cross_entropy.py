"""Fused cross-entropy: log_softmax + nll_loss and their backward, in one pass over the logits.

The op has three layers, read top to bottom:

- the functional (``cross_entropy``) reproduces :func:`torch.nn.functional.cross_entropy`
  up to the kernel call: legacy ``size_average``/``reduce``, the reduction name, and every
  shape, dtype and weight check, with torch's error types and messages, in torch's order;
- two ``torch.autograd.Function``\\ s, which call the launchers. ``CrossEntropyOnePassFunction``
  (a 'mean' or 'sum' loss whose logits alone require grad, the common case) writes the
  gradient in the forward, into a buffer of its own or (``inplace_grad``) into the logits;
  its backward scales that buffer in place on the device, unless ``grad_output`` is 1.
  Where the C++ autograd node is built (fused_ops/_native.py), the one-pass path records
  that node instead of the Function, with the same forward and backward.
  ``CrossEntropyFunction`` (``'none'``, gradients for probability targets or weights)
  saves the logits, the per-row logsumexp and a per-row coefficient, so its backward is
  one more pass over the logits. Without autograd the functional calls the launchers
  directly. Under ``create_graph=True`` either backward applies ``_BackwardFunction``,
  whose backward is the second derivative in eager ops, which is what makes double
  backward work;
- under ``torch.compile``, ``torch.library`` ops (``fused_ops::cross_entropy_forward`` and
  ``_backward``, registered with ``kernel_op``) run the two-pass kernels: where kernels
  compile they are ``triton_op``\\ s, so the traced graph holds the Triton kernels
  themselves; under the interpreter, custom ops with fake implementations. The backward
  op has the same second derivative registered as its autograd.

Logits are seen as ``(outer, C, inner)`` strided views (see :mod:`fused_ops.kernels.cross_entropy`):
``(C,)`` is ``(1, C, 1)``, ``(N, C)`` is ``(1, C, N)`` (any strides), and ``(N, C, d1, ...)``
is ``(N, C, d1 * ...)`` (a copy only when the spatial dims cannot be merged into one
stride). Nothing is transposed in memory.
"""

from __future__ import annotations

import torch

from . import _native, reference
from ._autocast import autocast_inputs
from ._dispatch import (
    TRITON_AVAILABLE,
    _forward_ad,
    fast_apply,
    kernel_op,
    needs_autograd,
    specialize_shapes,
    use_triton,
)
from ._validation import (
    REDUCTION_MEAN,
    REDUCTION_NONE,
    check_floating,
    check_same_device,
    is_dense,
    legacy_reduction,
    scalar_type_name,
)

if TRITON_AVAILABLE:
    from .kernels import cross_entropy as kernels


def _is_prob_target(input: torch.Tensor, target: torch.Tensor) -> bool:
    # torch's rule: a target shaped exactly like the input holds class probabilities.
    return input.shape == target.shape


def _layout(input: torch.Tensor) -> str:
    """How the logits map to ``(outer, C, inner)``: 'vector', 'matrix' or 'spatial'."""
    dim = input.dim()
    return "matrix" if dim == 2 else "vector" if dim == 1 else "spatial"


def _class_geometry(tensor: torch.Tensor, layout: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    """A logits-shaped tensor seen as ``(outer, C, inner)``: ``(tensor, geometry)``.

    ``geometry`` is ``(outer, C, inner, outer_stride, class_stride, inner_stride)``, what the
    launchers take: ``(N, C)`` is ``(1, C, N)``, so that a program can take several rows (the
    kernels pick the tile's long side from the strides, whichever dim is contiguous). For
    vectors and matrices no view is made (a view costs ~1.5 µs of host time); spatial dims
    are merged by a reshape (a view, a copy when they cannot merge), which is returned.
    """
    if layout == "matrix":
        n, c = tensor.shape
        row_stride, class_stride = tensor.stride()
        return tensor, (1, c, n, 0, class_stride, row_stride)
    if layout == "vector":
        return tensor, (1, tensor.shape[0], 1, 0, tensor.stride(0), 0)
    tensor = tensor.reshape(_shape3(tensor))
    return tensor, (*tensor.shape, *tensor.stride())


def _shape3(tensor: torch.Tensor) -> tuple[int, int, int]:
    inner = 1
    for size in tensor.shape[2:]:
        inner *= size
    return tensor.shape[0], tensor.shape[1], inner


def _row_geometry(tensor: torch.Tensor, layout: str, geometry: tuple) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """A tensor shaped like the logits without the class dim, seen as ``(outer, inner)``.

    Returns ``(tensor, (outer_stride, 0, inner_stride))`` (a class stride of 0, as the
    kernels take index targets); spatial dims are merged by a reshape, which is returned.
    """
    if layout == "matrix":
        return tensor, (0, 0, tensor.stride(0))
    if layout == "vector":
        return tensor, (0, 0, 0)
    tensor = tensor.reshape(geometry[0], geometry[2])
    outer_stride, inner_stride = tensor.stride()
    return tensor, (outer_stride, 0, inner_stride)


def _target_geometry(target: torch.Tensor, layout: str, geometry: tuple, prob_target: bool):
    """(target, its (outer, class, inner) strides): probabilities as the logits, indices as rows."""
    if prob_target:
        target, target_geometry = _class_geometry(target, layout)
        return target, target_geometry[3:]
    return _row_geometry(target, layout, geometry)


def _spatial_dims_merge(tensor: torch.Tensor) -> bool:
    """True when dims 2.. of ``tensor`` can be viewed as one dim with a single stride."""
    expected = None
    for size, stride in reversed(list(zip(tensor.shape[2:], tensor.stride()[2:], strict=True))):
        if size == 1:
            continue
        if expected is not None and stride != expected:
            return False
        expected = stride * size
    return True


def _empty_grad(input: torch.Tensor) -> torch.Tensor:
    """The gradient buffer: the logits' own layout when dense (and mergeable), else contiguous."""
    if input.is_contiguous() or (is_dense(input) and (input.dim() < 3 or _spatial_dims_merge(input))):
        return torch.empty_like(input)
    return torch.empty(input.shape, dtype=input.dtype, device=input.device)


def _loss_shape(input: torch.Tensor) -> tuple[int, ...]:
    return () if input.dim() == 1 else (input.shape[0], *input.shape[2:])


def _loss_dtype(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.dtype:
    # Probability targets: torch multiplies log_softmax(input) by target (and weight), so
    # the loss takes their promoted dtype. Class indices: the input's dtype.
    if not _is_prob_target(input, target):
        return input.dtype
    dtype = torch.promote_types(input.dtype, target.dtype)
    return dtype if weight is None else torch.promote_types(dtype, weight.dtype)


def _check_target_bounds(target: torch.Tensor, n_classes: int, ignore_index: int) -> None:
    """The eager bounds check of the reference path (the kernels check as they load targets)."""
    if target.numel() == 0:
        return
    _assert_targets_in_bounds(
        _targets_in_bounds(target, n_classes, ignore_index).all(), target, n_classes, ignore_index
    )


def _targets_in_bounds(target: torch.Tensor, n_classes: int, ignore_index: int) -> torch.Tensor:
    return ((target >= 0) & (target < n_classes)) | (target == ignore_index)


def _assert_targets_in_bounds(all_ok: torch.Tensor, target: torch.Tensor, n_classes: int, ignore_index: int) -> None:
    """torch's ``IndexError: Target 5 is out of bounds.`` unless ``all_ok``, without a host sync.

    ``all_ok`` is a one-element flag (nonzero: every target is valid). ``torch._assert_async``
    does not synchronize on a GPU: a bad target there trips a device-side assertion
    (reported at a later sync, as torch's own CUDA kernels do). On the CPU it raises at
    once, and only then are the targets read again to name the offending value.
    """
    try:
        torch._assert_async(all_ok, "cross_entropy: a target is out of bounds")
    except RuntimeError:
        in_bounds = _targets_in_bounds(target, n_classes, ignore_index)
        bad = target[~in_bounds].reshape(-1)[0]
        raise IndexError(f"Target {int(bad)} is out of bounds.") from None


def _views(plan: _CallPlan, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, target) as the launchers take them: spatial dims merged, by views."""
    if plan.layout != "spatial":
        return input, target
    # A view costs ~1.5 µs: only where needed. (A copy where the dims cannot merge.)
    geometry = plan.geometry
    return input.reshape(geometry[:3]), target.reshape(geometry[:3] if plan.prob_target else (geometry[0], geometry[2]))


def _forward_impl(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
    save: bool = True,
    plan: _CallPlan | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(loss, lse, coef, total_weight): the forward without a gradient (one read of the logits).

    Without ``save`` (no autograd), only the loss is wanted: with Triton, the per-row
    statistics are then neither allocated nor written (None, or unspecified values).
    ``plan``: these inputs' :class:`_CallPlan`, if cached.
    """
    if plan is None:
        plan = _CallPlan(input, target, weight, label_smoothing, False)
    prob_target, n_classes, out_dtype, acc = plan.prob_target, plan.n_classes, plan.out_dtype, plan.acc
    if not use_triton("cross_entropy", input, target, weight) or n_classes == 0:
        if not prob_target:
            _check_target_bounds(target, n_classes, ignore_index)
        return reference.cross_entropy_forward_ref(
            input, target, weight, reduction, ignore_index, label_smoothing, out_dtype
        )

    geometry, target_strides, kernel_plan = plan.geometry, plan.target_strides, plan.two_pass_kernel_plan
    logits, target_view = _views(plan, input, target)
    outer, _, inner = geometry[:3]
    n_rows = outer * inner
    device = input.device
    # One program: the forward kernel also reduces and checks the targets (one launch).
    single = kernel_plan[5] == 1
    if reduction == REDUCTION_NONE:
        loss = torch.empty(_loss_shape(input), dtype=out_dtype, device=device)
        row_loss = loss.view(-1)
    else:
        loss = torch.empty((), dtype=out_dtype, device=device)
        row_loss = loss if single else torch.empty(n_rows, dtype=acc, device=device)
    if save:
        lse = torch.empty(n_rows, dtype=acc, device=device)
        coef = torch.empty(n_rows, dtype=acc, device=device)
    else:
        lse = coef = row_loss
    row_weight = None if prob_target or single else torch.empty(n_rows, dtype=acc, device=device)
    total_weight = torch.empty((), dtype=acc, device=device) if save or not single else None
    # The kernels validate index targets as they load them: one flag per forward program,
    # folded into all_ok by the reduce kernel, and one torch._assert_async on it (no sync).
    check_targets = not prob_target and n_rows > 0
    if check_targets:
        all_ok = torch.empty(1, dtype=torch.int8, device=device)
        target_ok = all_ok if single else torch.empty(kernel_plan[5], dtype=torch.int8, device=device)
    else:
        target_ok = all_ok = None
    kernels.cross_entropy_forward(
        kernel_plan,
        logits,
        geometry,
        target_view,
        target_strides,
        None if weight is None else weight.contiguous(),
        row_loss,
        lse,
        coef,
        coef if row_weight is None else row_weight,
        None,
        geometry[3:],
        target_ok,
        row_loss if total_weight is None else total_weight,
        ignore_index,
        label_smoothing,
        prob_target,
        reduction,
        save,
    )
    if not single:
        # With 'none' the reduce kernel only writes total_weight = 1 (and all_ok): the same
        # one launch as a torch.ones would be.
        kernels.cross_entropy_reduce(
            row_loss,
            row_weight,
            None if reduction == REDUCTION_NONE else loss,
            total_weight,
            reduction,
            target_ok,
            all_ok,
        )
    if check_targets:
        _assert_targets_in_bounds(all_ok, target, n_classes, ignore_index)
    return loss, lse, coef, total_weight


class _CallPlan:
    """What a forward needs besides the tensors: a pure function of their shapes, strides
    and dtypes and the options, so the functional caches it (``_PLANS``)."""

    __slots__ = (
        "acc",
        "forward_launch",
        "geometry",
        "kernel_plan",
        "layout",
        "n_classes",
        "out_dtype",
        "prob_target",
        "scale_launch",
        "single",
        "target_strides",
        "two_pass_kernel_plan",
        "weights_per_class",
        "write_through",
    )

    def __init__(self, input, target, weight, label_smoothing: float, inplace: bool) -> None:
        self.prob_target = _is_prob_target(input, target)
        self.n_classes = input.shape[0 if input.dim() == 1 else 1]
        self.out_dtype = _loss_dtype(input, target, weight)
        self.acc = reference.compute_dtype(input.dtype)
        self.layout = _layout(input)
        # In place needs the (outer, C, inner) view to alias the input (it does, except for
        # spatial dims that cannot merge, where the gradient is copied in at the end).
        self.write_through = inplace and (self.layout != "spatial" or _spatial_dims_merge(input))
        self.weights_per_class = weight is not None and (self.prob_target or label_smoothing > 0)
        # The views' geometries: the same for every tensor of these shapes and strides. For
        # spatial dims, worked out on meta tensors laid out alike (a reshape that cannot be
        # a view copies: _views makes that copy, once, where it launches).
        input_like, target_like = input, target
        if self.layout == "spatial":
            input_like = torch.empty_strided(input.shape, input.stride(), dtype=input.dtype, device="meta")
            target_like = torch.empty_strided(target.shape, target.stride(), dtype=target.dtype, device="meta")
        self.geometry = _class_geometry(input_like, self.layout)[1]
        self.target_strides = _target_geometry(target_like, self.layout, self.geometry, self.prob_target)[1]
        self.kernel_plan = self.two_pass_kernel_plan = None
        self.single = False
        # The forward's and the backward scale's launches, bound at the first launch
        # (kernels.forward_launch, kernels.scale_grad_launch). A forward_launch of False:
        # nothing to launch.
        self.forward_launch = self.scale_launch = None
        if self.n_classes and TRITON_AVAILABLE:
            fp64 = input.dtype == torch.float64
            self.kernel_plan = kernels.forward_plan(self.geometry, fp64, self.weights_per_class, True)
            # The forward without the gradient (no autograd, or the two-pass path).
            self.two_pass_kernel_plan = kernels.forward_plan(self.geometry, fp64, False, False)
            # One program: the forward kernel also does the prepass and the reduction (one launch).
            self.single = self.kernel_plan[5] == 1


def _one_pass_forward_impl(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
    inplace: bool,
    plan: _CallPlan | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple | None]:
    """(loss, grad, scale) for a 'mean' or 'sum' reduction, in one pass.

    ``grad`` is ``dloss/dinput`` for a ``grad_output`` of 1, in a fresh buffer, or with
    ``inplace`` in ``input`` itself (then returned as ``input``). Class-index targets
    first go through a prepass that reads only them: the mean's denominator, which the
    gradient needs, and the bounds check, asserted before anything of the caller's is
    written (a forward of one program does both itself). ``scale``: for the backward,
    ``(launch, target, grad)`` (``launch((grad_output, target, grad))`` scales ``grad`` in
    place, see :func:`kernels.scale_grad_launch`; None when empty), or None to scale
    ``grad`` with eager ops (no Triton, or the in-place gradient of spatial
    dims that cannot merge, which the kernel cannot see as one ``(outer, C, inner)`` view).
    The per-row statistics of a backward through the saved logits are not kept: only a
    second or differentiable backward needs them, and it recomputes them
    (:func:`_forward_impl`). ``plan``: these inputs' :class:`_CallPlan`, if cached.
    """
    if plan is None:
        plan = _CallPlan(input, target, weight, label_smoothing, inplace)
    prob_target, n_classes, out_dtype, layout = plan.prob_target, plan.n_classes, plan.out_dtype, plan.layout
    if not use_triton("cross_entropy", input, target, weight) or n_classes == 0:
        if not prob_target:
            _check_target_bounds(target, n_classes, ignore_index)
        loss, lse, coef, total_weight = reference.cross_entropy_forward_ref(
            input, target, weight, reduction, ignore_index, label_smoothing, out_dtype
        )
        ones = torch.ones((), dtype=out_dtype, device=input.device)
        grad = reference.cross_entropy_backward_ref(
            ones, input, target, weight, lse, coef, total_weight, reduction, ignore_index, label_smoothing
        ).to(input.dtype)
        if inplace:
            grad = input.copy_(grad)
        return loss, grad, None

    geometry, target_strides, single, acc = plan.geometry, plan.target_strides, plan.single, plan.acc
    logits, target_view = _views(plan, input, target)
    outer, _, inner = geometry[:3]
    device = input.device
    contiguous_weight = None if weight is None else weight.contiguous()
    loss = torch.empty((), dtype=out_dtype, device=device)
    # Written by the prepass (index targets) or the reduce kernel; one program needs none.
    total_weight = loss if single else torch.empty((), dtype=acc, device=device)
    all_ok = None
    if not prob_target:
        all_ok = torch.empty(1, dtype=torch.int8, device=device)
        if not single:
            kernels.cross_entropy_total_weight(
                target_view,
                target_strides,
                outer,
                inner,
                contiguous_weight,
                total_weight,
                all_ok,
                n_classes,
                ignore_index,
            )
            _assert_targets_in_bounds(all_ok, target, n_classes, ignore_index)
    write_through = plan.write_through
    grad = input if write_through else _empty_grad(input)
    row_loss = loss if single else torch.empty(outer * inner, dtype=acc, device=device)
    grad_3d, grad_geometry = (logits, geometry) if write_through else _class_geometry(grad, layout)
    if plan.forward_launch is None:
        # The plan's key holds everything these depend on (see cross_entropy).
        plan.forward_launch = (
            kernels.forward_launch(
                plan.kernel_plan,
                geometry,
                target_strides,
                grad_geometry[3:],
                ignore_index,
                label_smoothing,
                prob_target,
                reduction,
                weight is not None,
                True,
                False,
                False,
            )
            or False
        )
        scale_target_strides = (0, 0, 0) if prob_target else target_strides
        plan.scale_launch = kernels.scale_grad_launch(scale_target_strides, grad_geometry, ignore_index, prob_target)
    if plan.forward_launch:
        all_ok_or_none = all_ok if single else None
        plan.forward_launch(
            kernels.forward_tensors(
                logits, target_view, contiguous_weight, *(row_loss,) * 4, grad_3d, all_ok_or_none, total_weight
            )
        )
    if not single:
        kernels.cross_entropy_reduce(row_loss, None, loss, total_weight, reduction, given_total_weight=not prob_target)
    elif all_ok is not None:
        # The kernel wrote no gradient if a target is bad: the logits are untouched (inplace_grad).
        _assert_targets_in_bounds(all_ok, target, n_classes, ignore_index)
    if inplace and not write_through:
        return loss, input.copy_(grad), None
    return loss, grad, (plan.scale_launch, target_view, grad_3d)


def _forward_fake(input, target, weight, reduction, ignore_index, label_smoothing):
    out_dtype = _loss_dtype(input, target, weight)
    acc = reference.compute_dtype(input.dtype)
    n_rows = 1
    for size in _loss_shape(input):
        n_rows *= size
    loss_shape = _loss_shape(input) if reduction == REDUCTION_NONE else ()
    return (
        input.new_empty(loss_shape, dtype=out_dtype),
        input.new_empty((n_rows,), dtype=acc),
        input.new_empty((n_rows,), dtype=acc),
        input.new_empty((), dtype=acc),
    )


@kernel_op("fused_ops::cross_entropy_forward", fake=_forward_fake)
def _cross_entropy_forward(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # Called where torch.compile traces (eager calls _forward_impl directly).
    input, target, weight = specialize_shapes(input, target, weight)
    return _forward_impl(input, target, weight, reduction, ignore_index, label_smoothing)


def _backward_impl(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    lse: torch.Tensor,
    coef: torch.Tensor,
    total_weight: torch.Tensor,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
) -> torch.Tensor:
    """d loss / d input, in a new buffer."""
    args = (ignore_index, label_smoothing)
    if not use_triton("cross_entropy", grad_output, input, target, weight):
        return reference.cross_entropy_backward_ref(
            grad_output, input, target, weight, lse, coef, total_weight, reduction, *args
        )
    prob_target = _is_prob_target(input, target)
    layout = _layout(input)
    logits, geometry = _class_geometry(input, layout)
    grad = _empty_grad(input)
    if reduction == REDUCTION_NONE:
        grad_output, grad_output_strides = _row_geometry(grad_output, layout, geometry)
        grad_output_strides = (grad_output_strides[0], grad_output_strides[2])
    else:
        grad_output_strides = (0, 0)
    target_view, target_strides = _target_geometry(target, layout, geometry, prob_target)
    grad_3d, grad_geometry = _class_geometry(grad, layout)
    kernels.cross_entropy_backward(
        grad_output,
        grad_output_strides,
        logits,
        geometry,
        target_view,
        target_strides,
        None if weight is None else weight.contiguous(),
        lse,
        coef,
        total_weight,
        grad_3d,
        grad_geometry[3:],
        *args,
        prob_target,
        reduction,
    )
    return grad


def _backward_fake(
    grad_output, input, target, weight, lse, coef, total_weight, reduction, ignore_index, label_smoothing
):
    return _empty_grad(input)


@kernel_op("fused_ops::cross_entropy_backward", fake=_backward_fake)
def _cross_entropy_backward(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    lse: torch.Tensor,
    coef: torch.Tensor,
    total_weight: torch.Tensor,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
) -> torch.Tensor:
    # Called where torch.compile traces (eager calls _backward_impl directly).
    grad_output, input, target, weight, lse, coef, total_weight = specialize_shapes(
        grad_output, input, target, weight, lse, coef, total_weight
    )
    return _backward_impl(
        grad_output, input, target, weight, lse, coef, total_weight, reduction, ignore_index, label_smoothing
    )


def _cross_entropy_backward_setup_context(ctx, inputs, output) -> None:
    grad_output, input, target, weight, lse, coef, total_weight, reduction, ignore_index, label_smoothing = inputs
    ctx.save_for_backward(grad_output, input, target, weight, lse, coef, total_weight)
    ctx.reduction = reduction
    ctx.ignore_index = ignore_index
    ctx.label_smoothing = label_smoothing


def _cross_entropy_double_backward(ctx, grad_grad: torch.Tensor):
    # The backward computes grad = s * D with D = coef * p - a, p = softmax(x) and s the
    # row scale (grad_output per row, or g / total_weight). lse and coef were computed from
    # x and target by the forward, so their dependence is folded in here and they get None:
    #   d/ds:      sum_c gg_c D_c (summed over rows for a 0-d grad_output)
    #   d/dx_j:    s coef p_j (gg_j - sum_c gg_c p_c)              (softmax backward)
    #   d/dt_k:    s (1 - eps) w_k (sum_c gg_c p_c - gg_k)        (probability targets)
    #   d/dw_k:    sum over rows of s t'_k (sum_c gg_c p_c - gg_k)  (probability targets)
    grad_output, input, target, weight, lse, coef, total_weight = ctx.saved_tensors
    acc = reference.compute_dtype(input.dtype)
    x = reference._class_rows(input).to(acc)
    gg = reference._class_rows(grad_grad).to(acc)
    p = torch.exp(x - lse.to(acc)[:, None])
    a, _, _, _ = reference.cross_entropy_coefficients_ref(input, target, weight, ctx.ignore_index, ctx.label_smoothing)
    coef = coef.to(acc)[:, None]
    if ctx.reduction == REDUCTION_NONE:
        scale = grad_output.to(acc).reshape(-1, 1)
    elif ctx.reduction == REDUCTION_MEAN:
        scale = grad_output.to(acc) / total_weight.to(acc)
    else:
        scale = grad_output.to(acc)
    needs_grad_output, needs_input, needs_target, needs_weight = ctx.needs_input_grad[:4]
    grad_grad_output = grad_input = grad_target = grad_weight = None
    gg_dot_p = (gg * p).sum(-1, keepdim=True)
    if needs_grad_output:
        per_row = (gg * (coef * p - a)).sum(-1)
        if ctx.reduction == REDUCTION_NONE:
            grad_grad_output = per_row.reshape(grad_output.shape)
        else:
            grad_grad_output = (
                per_row.sum() / total_weight.to(acc) if ctx.reduction == REDUCTION_MEAN else per_row.sum()
            )
        grad_grad_output = grad_grad_output.to(grad_output.dtype)
    if needs_input:
        grad_input = reference._from_class_rows(scale * coef * p * (gg - gg_dot_p), input).to(input.dtype)
    if (needs_target or needs_weight) and _is_prob_target(input, target):
        n_classes = x.shape[-1]
        w = torch.ones(n_classes, dtype=acc, device=x.device) if weight is None else weight.to(acc)
        eps = max(ctx.label_smoothing, 0.0)
        if needs_target:
            grad_target = reference._from_class_rows(scale * (1 - eps) * w * (gg_dot_p - gg), target)
            grad_target = grad_target.to(target.dtype)
        if needs_weight and weight is not None:
            t = reference._class_rows(target).to(acc)
            smoothed = t * (1 - eps) + eps / n_classes if eps > 0 else t
            grad_weight = (scale * smoothed * (gg_dot_p - gg)).sum(0).to(weight.dtype)
    return grad_grad_output, grad_input, grad_target, grad_weight, None, None, None, None, None, None


_cross_entropy_backward.register_autograd(
    _cross_entropy_double_backward, setup_context=_cross_entropy_backward_setup_context
)


class _BackwardFunction(torch.autograd.Function):
    """The logits' gradient as a differentiable op (only under ``create_graph=True``).

    Takes the arguments of ``_backward_impl``; its backward is the second derivative in
    eager ops, ``_cross_entropy_double_backward``.
    """

    @staticmethod
    def forward(ctx, *inputs):
        _cross_entropy_backward_setup_context(ctx, inputs, None)
        return _backward_impl(*inputs)

    @staticmethod
    def backward(ctx, grad_grad):
        return _cross_entropy_double_backward(ctx, grad_grad)


def _scale_grad_impl(grad: torch.Tensor, grad_output: torch.Tensor, target: torch.Tensor, ignore_index: int) -> None:
    """Scale the one-pass forward's gradient in place by the 0-d ``grad_output``, in eager ops.

    The backward's path when the forward ran no Triton, or wrote its gradient over logits
    whose spatial dims cannot merge; otherwise the scale kernel does this on the device.
    """
    scaled = grad * grad_output.to(grad.dtype)
    if not _is_prob_target(grad, target):
        # Ignored rows stay 0 even for an inf or nan grad_output, as torch's.
        scaled = scaled.masked_fill((target == ignore_index).unsqueeze(0 if grad.dim() == 1 else 1), 0)
    grad.copy_(scaled)


class CrossEntropyFunction(torch.autograd.Function):
    """Cross-entropy whose forward and backward each read the logits once (Triton kernels).

    Saves the logits, the targets, the weight, and per row the logsumexp and the
    gradient coefficient; the backward writes ``grad_output``-scaled ``softmax - target``.
    With ``traced`` (under torch.compile) it runs the custom ops instead of the launchers.
    """

    @staticmethod
    def forward(ctx, input, target, weight, reduction, ignore_index, label_smoothing, traced):
        if traced:
            loss, lse, coef, total_weight = torch.ops.fused_ops.cross_entropy_forward(
                input, target, weight, reduction, ignore_index, label_smoothing
            )
        else:
            loss, lse, coef, total_weight = _forward_impl(
                input, target, weight, reduction, ignore_index, label_smoothing
            )
        ctx.save_for_backward(input, target, weight, lse, coef, total_weight)
        ctx.reduction = reduction
        ctx.ignore_index = ignore_index
        ctx.label_smoothing = label_smoothing
        ctx.traced = traced
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        input, target, weight, lse, coef, total_weight = ctx.saved_tensors
        needs_input, needs_target, needs_weight = ctx.needs_input_grad[:3]
        grad_input = grad_target = grad_weight = None
        if needs_input:
            if ctx.traced:
                backward = torch.ops.fused_ops.cross_entropy_backward
            elif torch.is_grad_enabled():
                # create_graph=True: the gradient must itself be differentiable.
                backward = _BackwardFunction.apply
            else:
                backward = _backward_impl
            grad_input = backward(
                grad_output,
                input,
                target,
                weight,
                lse,
                coef,
                total_weight,
                ctx.reduction,
                ctx.ignore_index,
                ctx.label_smoothing,
            )
        if needs_target or needs_weight:
            # Probability targets and their weight: rarely trained, so eager ops (which
            # autograd can differentiate again) rather than another kernel.
            grad_target, grad_weight = _prob_target_and_weight_grads(
                grad_output, input, target, weight, total_weight, ctx.reduction, ctx.label_smoothing
            )
            grad_target = grad_target if needs_target else None
            grad_weight = grad_weight if needs_weight else None
        return grad_input, grad_target, grad_weight, None, None, None, None


def _prob_target_and_weight_grads(grad_output, input, target, weight, total_weight, reduction, label_smoothing):
    """d loss / d target and d loss / d weight for probability targets, in eager ops."""
    acc = reference.compute_dtype(input.dtype)
    log_probs = torch.log_softmax(reference._class_rows(input).to(acc), dim=-1)
    t = reference._class_rows(target).to(acc)
    n_classes = log_probs.shape[-1]
    eps = max(label_smoothing, 0.0)
    w = torch.ones(n_classes, dtype=acc, device=input.device) if weight is None else weight.to(acc)
    if reduction == REDUCTION_NONE:
        scale = grad_output.to(acc).reshape(-1, 1)
    else:
        scale = grad_output.to(acc) / total_weight.to(acc) if reduction == REDUCTION_MEAN else grad_output.to(acc)
    grad_target = reference._from_class_rows(-(1 - eps) * scale * w * log_probs, target).to(target.dtype)
    smoothed = t * (1 - eps) + eps / n_classes if eps > 0 else t
    grad_weight = None if weight is None else (-(scale * smoothed * log_probs).sum(0)).to(weight.dtype)
    return grad_target, grad_weight


class _OnePassState:
    """What a one-pass backward needs besides its saved tensors.

    ``grad``: the forward's gradient for a ``grad_output`` of 1, handed out (then None) by
    the first backward without ``create_graph``. Not a saved tensor: once handed out it
    may be changed in place (as ``.grad``), which must not fail a later backward's
    saved-tensor version check. ``scale``: the scale kernel's arguments after
    ``grad_output`` (see ``_one_pass_forward_impl``).
    """

    __slots__ = ("grad", "ignore_index", "label_smoothing", "reduction", "scale")

    def __init__(self, grad, scale, reduction: int, ignore_index: int, label_smoothing: float) -> None:
        self.grad, self.scale = grad, scale
        self.reduction, self.ignore_index, self.label_smoothing = reduction, ignore_index, label_smoothing


def _one_pass_backward(grad_output, input, target, weight, state: _OnePassState) -> torch.Tensor:
    """The logits' gradient of a one-pass forward: its buffer, scaled, or (after the first) recomputed.

    ``input`` is None after ``inplace_grad`` (the logits hold the gradient). Called by the
    C++ node and by ``CrossEntropyOnePassFunction``; differentiable when grad mode is on
    (``create_graph=True``).
    """
    create_graph = torch.is_grad_enabled()
    if state.grad is not None and not create_graph:
        grad, state.grad = state.grad, None
        if state.scale is not None:
            launch, target, grad_3d = state.scale
            if launch is not None:
                launch((grad_output, target, grad_3d))
        else:
            _scale_grad_impl(grad, grad_output, target, state.ignore_index)
        state.scale = None
        return grad
    if input is None:
        raise RuntimeError(
            "cross_entropy(inplace_grad=True) overwrote the logits with their gradient, so it supports "
            "one backward only (no retain_graph second backward, no create_graph=True); "
            "use inplace_grad=False"
        )
    # The per-row statistics, recomputed (the first backward did not need them).
    with torch.no_grad():
        _, lse, coef, total_weight = _forward_impl(
            input, target, weight, state.reduction, state.ignore_index, state.label_smoothing
        )
    args = (grad_output, input, target, weight, lse, coef, total_weight, state.reduction)
    backward = _BackwardFunction.apply if create_graph else _backward_impl
    return backward(*args, state.ignore_index, state.label_smoothing)


def _one_pass_forward(input, target, weight, reduction, ignore_index, label_smoothing, inplace, plan=None):
    """(loss, the tensors a one-pass backward saves, its state): ``_one_pass_forward_impl`` and its bookkeeping."""
    loss, grad, scale = _one_pass_forward_impl(
        input, target, weight, reduction, ignore_index, label_smoothing, inplace, plan
    )
    state = _OnePassState(grad, scale, reduction, ignore_index, label_smoothing)
    if inplace:
        # The kernel's write is invisible to autograd: bump the version counter (shared
        # with every view of the input), so a backward that saved these logits raises
        # torch's in-place error instead of using the gradient as logits.
        torch.autograd.graph.increment_version(input)
        state.grad = grad.detach()
        return loss, (None, target, weight), state
    # The logits are kept only for a second (or a differentiable) backward.
    return loss, (input, target, weight), state


class CrossEntropyOnePassFunction(torch.autograd.Function):
    """'mean' or 'sum' cross-entropy whose forward also writes the gradient: one read of the logits.

    The forward writes ``dloss/dinput`` for a ``grad_output`` of 1 into a buffer of its own
    (or, with ``inplace``, into the input). The first backward hands that buffer to
    autograd after one kernel that reads ``grad_output`` on the device and scales the
    buffer in place unless it is 1 (then it moves nothing else). A later backward through
    the same graph (``retain_graph=True``) never touches a buffer already handed out (it
    may be someone's ``.grad`` by then): it computes a fresh gradient from the saved
    logits, as does a backward with ``create_graph=True``, which is differentiable.
    Where the C++ node is built, it records the same forward and backward instead.
    """

    @staticmethod
    def forward(ctx, input, target, weight, reduction, ignore_index, label_smoothing, inplace, plan=None):
        loss, saved, ctx.state = _one_pass_forward(
            input, target, weight, reduction, ignore_index, label_smoothing, inplace, plan
        )
        ctx.save_for_backward(*saved)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad = _one_pass_backward(grad_output, *ctx.saved_tensors, ctx.state)
        return grad, None, None, None, None, None, None, None


_cross_entropy_apply = fast_apply(CrossEntropyFunction)
_one_pass_apply = fast_apply(CrossEntropyOnePassFunction)
_functorch_active = torch._C._are_functorch_transforms_active
_set_grad_enabled = torch._C._set_grad_enabled
# The one-pass path's autograd node, where the C++ node records it.
_NODE_NAME = "FusedCrossEntropyBackward"
# Validated inputs' one-pass plans, keyed on what they depend on (see cross_entropy).
_PLANS: dict[tuple, _CallPlan] = {}
_MAX_PLANS = 4096


def _check_arguments(input, target, weight, ignore_index: int, label_smoothing: float) -> None:
    """torch's checks, error types and messages, in the order torch makes them."""
    check_same_device("cross_entropy", input, target, weight)
    if input.dim() == 0:
        raise IndexError("Dimension out of range (expected to be in range of [-1, 0], but got 1)")
    n_classes = input.shape[0 if input.dim() == 1 else 1]
    if _is_prob_target(input, target):
        if not target.is_floating_point():
            raise RuntimeError(
                "Expected floating point type for target with class probabilities, "
                f"got {scalar_type_name(target.dtype)}"
            )
        if ignore_index >= 0:
            raise RuntimeError("ignore_index is not supported for floating point target")
        if weight is not None and (weight.dim() != 1 or weight.numel() != n_classes):
            raise RuntimeError(
                f"cross_entropy: weight tensor should be defined either for all {n_classes} classes or no classes "
                f"but got weight tensor of shape: {list(weight.shape)}"
            )
        check_floating("cross_entropy", input)
        if label_smoothing > 1.0:
            raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
        return
    if label_smoothing > 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    check_floating("cross_entropy", input)
    if input.dim() != 1 and input.shape[0] != target.shape[0]:
        target_batch = target.shape[0] if target.dim() > 0 else 0
        raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target batch_size ({target_batch}).")
    if input.dim() <= 2:
        if target.dim() > 1:
            raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
        if input.dim() == 1 and target.dim() == 1 and target.shape[0] != 1:
            raise ValueError(f"For 1D input, 1D target must have size 1, but got target size: {target.shape[0]}")
    elif input.dim() == 4 and target.dim() != 3:
        raise RuntimeError(
            f"only batches of spatial targets supported (3D tensors) but got targets of dimension: {target.dim()}"
        )
    elif input.dim() == 4 and target.shape[1:] != input.shape[2:]:
        raise RuntimeError(f"size mismatch (got input: {list(input.shape)} , target: {list(target.shape)}")
    elif input.dim() != 4 and target.shape[1:] != input.shape[2:]:
        raise RuntimeError(f"Expected target size {[input.shape[0], *input.shape[2:]]}, got {list(target.shape)}")
    if target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(f"expected target dtype to be Long or Byte, but got {scalar_type_name(target.dtype)}")
    if weight is not None:
        if weight.dim() != 1 or weight.numel() != n_classes:
            if input.dim() <= 2:
                raise RuntimeError(
                    f"weight tensor should be defined either for all {n_classes} classes or no classes "
                    f"but got weight tensor of shape: {list(weight.shape)}"
                )
            raise RuntimeError("weight tensor should be defined either for all or no classes")
        if weight.dtype != input.dtype:
            raise RuntimeError(
                f"expected scalar type {scalar_type_name(input.dtype)} but found {scalar_type_name(weight.dtype)}"
            )
        if weight.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(
                "The function 'nll_loss_forward' is not differentiable with respect to argument 'weight'. "
                "This input cannot have requires_grad True."
            )


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    inplace_grad: bool = False,
) -> torch.Tensor:
    """Drop-in for :func:`torch.nn.functional.cross_entropy`, without materialising the softmax.

    With a 'mean' or 'sum' reduction and logits that require grad, one pass over the logits
    computes the loss (an online logsumexp) and writes the gradient too, into a buffer of
    its own; the backward then only reads ``grad_output`` on the device and scales that
    buffer in place unless it is 1 (``loss.backward()``: nothing to do). That is 8 bytes
    per fp32 logit for forward and backward together, against 12 for a separate backward
    pass, with no host sync. Class-index targets first take a tiny pass over the targets
    alone, for the mean's denominator. Rows of more than 8192 classes read the logits
    twice in that forward. ``'none'``, and gradients for probability targets or their
    weight, use a forward and a separate backward pass over the saved logits. Without
    autograd the forward reads each logit once and writes no gradient. Vocabularies of
    128k+ classes work at any row count.

    Args:
        input: unnormalized logits, float32/float64/float16/bfloat16 (computed in fp32,
            fp64 for fp64), any layout. The class dim is 1 (0 for a 1-D input).
        target: class indices (int64 or uint8) shaped like ``input`` without the class
            dim, each in ``[0, C)`` or equal to ``ignore_index``; or class probabilities
            (float) shaped exactly like ``input``.
        weight: a 1-D tensor of ``C`` class weights. For class indices it must have the
            input's dtype and cannot require grad (as torch); for probabilities it can.
        size_average: deprecated (see ``reduction``).
        ignore_index: a class-index target to skip; it adds nothing to the loss, the
            gradient, or the mean's denominator. Not allowed (>= 0) with probabilities.
        reduce: deprecated (see ``reduction``).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. The mean over class indices is
            weighted: the sum divided by the sum of the weights of non-ignored targets
            (nan when every target is ignored, as torch); over probabilities it divides
            by the number of rows.
        label_smoothing: in ``[0, 1]``; mixes the target with the uniform distribution,
            with torch's exact formula (for class indices, the smoothing term is weighted
            by ``weight`` and is 0 for ignored targets).
        inplace_grad: keyword-only, fused_ops extension (Liger's default). When the
            forward also writes the gradient (above), it writes it into ``input`` itself,
            so no logits-sized buffer is allocated: after the call ``input`` holds the
            gradient, not the logits. The input's autograd version counter is bumped, so
            another op that saved these logits for its backward raises torch's in-place
            error ("modified by an inplace operation") rather than using the gradient as
            logits. Like any in-place op it refuses a leaf that requires grad and
            overlapping memory, and it supports one backward (no ``retain_graph`` second
            backward, no ``create_graph=True``). Ignored in the other cases above and
            under torch.compile, which always runs the two-pass custom ops.

    Returns:
        The loss: ``'none'`` gives one value per target (shape of ``input`` without the
        class dim), otherwise a 0-d tensor. Its dtype is the input's (for probabilities,
        the promotion of input, target and weight dtypes, as torch). Reductions add per-row
        losses in a fixed order, so results are bitwise reproducible.

    Raises:
        IndexError: a target outside ``[0, C)`` that is not ``ignore_index`` ("Target 5 is
            out of bounds."), found by the forward kernel as it loads the targets and
            raised before the op returns, with nothing of the caller's written. On a GPU
            this check does not synchronize: a bad target triggers a device-side
            assertion instead (reported at a later sync, as torch's CUDA kernels do).
        RuntimeError / ValueError / NotImplementedError: as torch, for mismatched shapes,
            target or weight dtypes, weight sizes, integer logits and reduction names.

    Shape:
        Input ``(C)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``; target ``()``, ``(N)`` or
        ``(N, d1, ..., dK)`` for indices, or the input's shape for probabilities. Output
        ``()``, or for ``'none'`` the target shape (without the class dim).

    Example:
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]], requires_grad=True)
        >>> fused_ops.cross_entropy(logits, torch.tensor([0, 2]))
        tensor(1.2056, grad_fn=<FusedCrossEntropyBackward>)
    """
    input, target, weight = autocast_inputs("cross_entropy", input, target, weight)
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    reduction_enum = torch.nn._reduction.get_enum(reduction)
    traced = torch.compiler.is_compiling()
    # Inputs like ones seen before (shapes, strides, dtypes, devices, options) passed the
    # checks then, and have a one-pass plan: validation and the plan's arithmetic once.
    # With a weight the checks also read it (and grad mode): checked every call.
    plan = key = None
    if weight is None and not traced:
        key = (
            input.shape,
            input.stride(),
            input.dtype,
            input.device,
            target.shape,
            target.stride(),
            target.dtype,
            target.device,
            reduction_enum,
            ignore_index,
            label_smoothing,
            inplace_grad,
        )
        plan = _PLANS.get(key)
    if plan is None:
        _check_arguments(input, target, weight, ignore_index, label_smoothing)
        if key is not None:
            if len(_PLANS) >= _MAX_PLANS:  # inputs of ever-changing shapes: start over
                _PLANS.clear()
            plan = _PLANS[key] = _CallPlan(input, target, weight, label_smoothing, inplace_grad)
    label_smoothing = float(label_smoothing)
    if traced:
        # Dynamo traces Function.apply itself (fast_apply's C++ call would break the graph).
        return CrossEntropyFunction.apply(input, target, weight, reduction_enum, ignore_index, label_smoothing, True)
    if needs_autograd(input, target, weight):
        if (
            reduction_enum != REDUCTION_NONE
            and input.requires_grad
            and not target.requires_grad
            and (weight is None or not weight.requires_grad)
        ):
            if inplace_grad:
                _check_inplace(input)
            attach = _native._attach
            if attach is _native.UNLOADED:
                attach = _native.attach()
            if plan is None:  # with a weight: not cached
                plan = _CallPlan(input, target, weight, label_smoothing, inplace_grad)
            args = (input, target, weight, reduction_enum, ignore_index, label_smoothing, inplace_grad, plan)
            if (
                attach is not None
                and _forward_ad._current_level < 0
                and not _functorch_active()
                and use_triton("cross_entropy", input, target, weight)
            ):
                # The kernels, then the C++ node that records them (see fused_ops/_native.py).
                # Without grad mode, as in a Function's forward: the in-place gradient over
                # unmergeable logits is a copy_, which autograd must not record.
                _set_grad_enabled(False)
                try:
                    loss, saved, state = _one_pass_forward(*args)
                finally:
                    _set_grad_enabled(True)
                return attach(loss, input, saved, _one_pass_backward, _one_pass_backward, (state,), _NODE_NAME)
            return _one_pass_apply(*args)
        return _cross_entropy_apply(input, target, weight, reduction_enum, ignore_index, label_smoothing, False)
    # No autograd: the forward launches alone (no gradient buffer, which nothing would read,
    # and no per-row statistics, which nothing saves).
    return _forward_impl(input, target, weight, reduction_enum, ignore_index, label_smoothing, False, plan)[0]


def _check_inplace(input: torch.Tensor) -> None:
    """torch's errors for an in-place write into ``input``."""
    if input.is_leaf:
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
    base = input._base
    if base is not None and base.is_leaf and base.requires_grad:
        raise RuntimeError("a view of a leaf Variable that requires grad is being used in an in-place operation.")
    if torch._debug_has_internal_overlap(input) == 1:
        raise RuntimeError(
            "unsupported operation: more than one element of the written-to tensor refers to a single memory "
            "location. Please clone() the tensor before performing the operation."
        )
