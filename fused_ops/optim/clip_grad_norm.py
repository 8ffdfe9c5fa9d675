"""clip_grad_norm_: a drop-in for torch.nn.utils.clip_grad_norm_, and the norm pass of the fused clip + step.

:func:`clip_grad_norm_` keeps torch's semantics exactly (the gradients are rewritten, the
total norm is returned, no host sync unless ``error_if_nonfinite=True``): per device, one
norm launch per dtype (whose last program writes the total norm and the clip
coefficient on the device) and one scaling launch per dtype.

The fused form is :meth:`fused_ops.optim.AdamW.clip_grad_norm_` (every fused optimizer
has it): the same norm pass over the optimizer's own launch tables, and the coefficient
is applied by the next ``step()`` as it reads each gradient, instead of rewriting them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import torch

from .. import reference
from .._dispatch import use_triton
from .._validation import is_dense


def _supported(norm_type: float) -> bool:
    return norm_type > 0 or norm_type == float("inf")


def _tables(grads: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
    """(table, grad table, program table) for the norm and scale kernels over these gradients."""
    from ..kernels import clip_grad_norm as kernels
    from ..kernels._config import CLIP_CHUNK_SIZE

    rows, programs, first = [], [], 0
    for g in grads:
        count = max(1, -(-g.numel() // CLIP_CHUNK_SIZE))
        rows += [g.numel(), first]
        programs.append(count)
        first += count
    table = torch.tensor(rows, dtype=torch.int64).view(len(grads), kernels.TABLE_COLUMNS).to(device)
    grad_table = torch.tensor([g.data_ptr() for g in grads], dtype=torch.int64).to(device)
    program_table = torch.repeat_interleave(torch.arange(len(grads), dtype=torch.int32), torch.tensor(programs))
    return table, grad_table, program_table.to(device)


def clip_grad_norm_(
    parameters: torch.Tensor | Iterable[torch.Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> torch.Tensor:
    """Drop-in for :func:`torch.nn.utils.clip_grad_norm_`, computed by Triton kernels.

    Clips the gradients of ``parameters`` in place so that their total ``norm_type``-norm
    (that of all gradients concatenated) is at most ``max_norm``:
    ``grad *= min(max_norm / (total_norm + 1e-6), 1)``.

    Args:
        parameters (Tensor or iterable of Tensors): tensors whose ``.grad`` is clipped.
        max_norm (float): max norm of the gradients.
        norm_type (float): 1, 2, inf or any p > 0 run in the kernels; other norm types
            (0, -inf, p < 0) and gradients with gaps in memory use torch's own function.
        error_if_nonfinite (bool): raise if the total norm is nan or inf (a host sync, as
            in torch).
        foreach (bool, optional): accepted for compatibility.

    Returns:
        The total norm of the gradients (a 0-d tensor on the first gradient's device, in
        their promoted dtype), as torch's.

    Shape:
        Any gradients, of mixed dtypes and devices.

    Example:
        >>> loss.backward()
        >>> fused_ops.optim.clip_grad_norm_(model.parameters(), max_norm=1.0)
        >>> optimizer.step()
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    norm_type = float(norm_type)
    if (
        not grads
        or not _supported(norm_type)
        or not all(is_dense(g) and not g.is_complex() and g.is_floating_point() for g in grads)
        or not use_triton("clip_grad_norm", grads[0])
    ):
        return reference.clip_grad_norm_ref(parameters, max_norm, norm_type, error_if_nonfinite, foreach)
    from ..kernels import clip_grad_norm as kernels

    buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for g in grads:
        buckets.setdefault((g.device, g.dtype), []).append(g)
    out_dtype = functools.reduce(torch.promote_types, (dtype for _, dtype in buckets))
    devices = list(dict.fromkeys(device for device, _ in buckets))
    launches = []
    norms, coefficients = {}, {}
    for device in devices:
        device_buckets = [(key, tensors) for key, tensors in buckets.items() if key[0] == device]
        tables = [_tables(tensors, device) for _, tensors in device_buckets]
        total_programs = sum(t[2].numel() for t in tables)
        partials = torch.empty(total_programs, dtype=torch.float64, device=device)
        arrivals = torch.zeros(1, dtype=torch.int32, device=device)
        norm = torch.empty((), dtype=out_dtype, device=device)
        coef = torch.empty((), dtype=torch.float32, device=device)
        offset = 0
        for (_, tensors), (table, grad_table, program_table) in zip(device_buckets, tables, strict=True):
            kernels.grad_norm(
                table,
                grad_table,
                program_table,
                tensors[0],
                partials,
                arrivals,
                norm,
                coef,
                program_offset=offset,
                max_norm=max_norm,
                norm_type=norm_type,
            )
            offset += program_table.numel()
            launches.append((tensors[0], table, grad_table, program_table))
        norms[device], coefficients[device] = norm, coef
    total_norm, coefficients = _combine(devices, norms, coefficients, float(max_norm), norm_type)
    if error_if_nonfinite:
        check_finite(total_norm, norm_type)
    for element, table, grad_table, program_table in launches:
        kernels.grad_scale(table, grad_table, program_table, element, coefficients[element.device])
    return total_norm


def check_finite(total_norm: torch.Tensor, norm_type: float) -> None:
    """torch's ``error_if_nonfinite`` check: raise if the total norm is nan or inf (reads it: a host sync)."""
    if torch.logical_or(total_norm.isnan(), total_norm.isinf()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from "
            "`parameters` is non-finite, so it cannot be clipped. To disable "
            "this error and scale the gradients by the non-finite norm anyway, "
            "set `error_if_nonfinite=False`"
        )


def _combine(
    devices: list[torch.device],
    norms: dict[torch.device, torch.Tensor],
    coefficients: dict[torch.device, torch.Tensor],
    max_norm: float,
    norm_type: float,
) -> tuple[torch.Tensor, dict[torch.device, torch.Tensor]]:
    """The total norm and each device's coefficient: the kernel's own on one device, torch ops across devices."""
    if len(devices) == 1:
        return norms[devices[0]], coefficients
    first = devices[0]
    total = torch.linalg.vector_norm(torch.stack([norms[d].to(first) for d in devices]), norm_type)
    coef = torch.clamp(max_norm / (total.float() + 1e-6), max=1.0)
    return total, {d: coef.to(d) for d in devices}


def fused_norm(
    optimizer: Any, cache: Any, max_norm: float, norm_type: float, grad_scale: torch.Tensor | None
) -> tuple[torch.Tensor, dict[torch.device, torch.Tensor]]:
    """The norm pass of a fused optimizer's clip: (total norm, clip coefficient per device).

    Runs over the optimizer's cached launch tables (each plan's tensor and grad tables),
    so it adds no per-parameter Python work to the step.
    """
    from ..kernels import clip_grad_norm as kernels

    if not _supported(norm_type):
        raise ValueError(f"the fused clip supports norm types 1, 2, inf and p > 0, got {norm_type}")
    if cache.eager or not cache.plans:
        # Some gradients take the eager step (or there are none): torch ops for the norm.
        grads = [rows[1] for _, group_rows in cache.eager for rows in group_rows]
        grads += [views[1] for plan in cache.plans for views in plan.views]
        if grads and grad_scale is not None:
            grads = [g / grad_scale.to(g.device) for g in grads]
        total = torch.nn.utils.get_total_norm(grads, norm_type) if grads else torch.tensor(0.0)
        coef = torch.clamp(max_norm / (total.float() + 1e-6), max=1.0)
        devices = {views[0].device for plan in cache.plans for views in plan.views}
        devices |= {rows[0].device for _, group_rows in cache.eager for rows in group_rows}
        return total, {d: coef.to(d) for d in devices}
    out_dtype = functools.reduce(torch.promote_types, (plan.dtype for plan in cache.plans))
    devices = list(dict.fromkeys(plan.device for plan in cache.plans))
    norms, coefficients = {}, {}
    for device in devices:
        plans = [plan for plan in cache.plans if plan.device == device]
        total_programs = sum(plan.program_table.numel() for plan in plans)
        partials = torch.empty(total_programs, dtype=torch.float64, device=device)
        # The kernel's last program resets its arrival counter to 0, so one counter per
        # device serves every step: no zeros() launch beside the norm pass.
        arrivals = optimizer._clip_arrivals.get(device)
        if arrivals is None:
            arrivals = optimizer._clip_arrivals[device] = torch.zeros(1, dtype=torch.int32, device=device)
        norm = torch.empty((), dtype=out_dtype, device=device)
        coef = torch.empty((), dtype=torch.float32, device=device)
        offset = 0
        for plan in plans:
            columns = plan.extra["norm_columns"]
            kernels.grad_norm(
                plan.tensor_table,
                plan.grad_table,
                plan.program_table,
                plan.element,
                partials,
                arrivals,
                norm,
                coef,
                program_offset=offset,
                max_norm=max_norm,
                norm_type=norm_type,
                grad_scale=None if grad_scale is None else grad_scale.to(device=device, dtype=torch.float32),
                columns=columns,
                chunk_size=plan.extra["chunk_size"],
            )
            offset += plan.program_table.numel()
        norms[device], coefficients[device] = norm, coef
    return _combine(devices, norms, coefficients, max_norm, norm_type)
