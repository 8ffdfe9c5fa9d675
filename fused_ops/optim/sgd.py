"""SGD whose step is one Triton kernel launch per (device, dtype), across param groups.

Drop-in replacement for :class:`torch.optim.SGD` (torch 2.13): the same constructor,
checks and messages, ``momentum_buffer`` state with torch's first-step rule (the buffer
starts as the gradient), ``state_dict`` loadable both ways, GradScaler's ``grad_scale``
and ``found_inf`` handled in the kernel.

    >>> optimizer = fused_ops.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # was torch.optim.SGD
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from .. import reference
from ._base import FusedOptimizer, Plan, encode_hyperparameter, local, real

_OPTIONAL_FLAGS = {"nesterov": False, "maximize": False, "foreach": None, "differentiable": False, "fused": False}


class SGD(FusedOptimizer):
    """Drop-in for :class:`torch.optim.SGD`, one fused Triton kernel launch per step and (device, dtype).

    Args:
        params: iterable of tensors, of (name, tensor) pairs, or of param-group dicts.
        lr (float, Tensor): learning rate (default: 1e-3); a tensor is read on the device.
        momentum (float): momentum factor (default: 0).
        dampening (float): dampening for momentum (default: 0).
        weight_decay (float, Tensor): L2 penalty (default: 0).
        nesterov (bool): Nesterov momentum (default: False).
        maximize (bool): maximize the objective (default: False).
        foreach, fused: accepted for compatibility; the step is always one fused kernel
            per (device, dtype).
        differentiable (bool): must be False (``RuntimeError`` otherwise).

    Each step reads p and g (and the momentum buffer) once and writes p (and the buffer)
    once: 12 bytes per fp32 parameter without momentum, 20 with. Sparse gradients, and
    parameters with gaps in memory, take the eager reference step.

    Example:
        >>> optimizer = fused_ops.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> loss_fn(model(x), y).backward()
        >>> optimizer.step()
    """

    _family = "sgd"
    _optional_flags = _OPTIONAL_FLAGS

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | torch.Tensor = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        # torch's checks, in torch's order, with torch's messages.
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        # Address of a buffer's (local, real) data -> (weakref to the buffer in the state, its
        # first-step flag: (int32 tensor, index), or None before one is allocated), for the
        # buffers this optimizer created. Keyed by address, not id: the kernel sees the
        # buffer as a view (a DTensor's local shard, a complex buffer's real view).
        self._first_flags: dict[int, tuple[weakref.ref, tuple[torch.Tensor, int] | None]] = {}
        super().__init__(params, defaults)
        if differentiable:
            raise RuntimeError(
                f"{'`fused` does not support `differentiable`: ' if fused else ''}fused_ops.optim.SGD does not "
                "support differentiable=True, because its update runs in a Triton kernel that autograd cannot "
                "differentiate through. Use torch.optim.SGD(..., differentiable=True) for that."
            )
        if fused and foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")

    def _after_load(self) -> None:
        # Loaded buffers have been written: none is waiting for its first step.
        self._first_flags = {}

    def _check_loaded_state(self, state: dict[str, Any]) -> None:
        for group in state["param_groups"]:
            for position, p in enumerate(group["params"]):
                buffer = state["state"].get(p, {}).get("momentum_buffer")
                if buffer is not None and (not isinstance(buffer, torch.Tensor) or buffer.shape != p.shape):
                    shape = tuple(buffer.shape) if isinstance(buffer, torch.Tensor) else type(buffer).__name__
                    raise ValueError(
                        f"loaded state dict has momentum_buffer of shape {shape} for parameter {position} of a "
                        f"param group, whose shape is {tuple(p.shape)}"
                    )

    def _sparse_gradient(self, group: dict[str, Any], p: torch.Tensor) -> None:
        """torch's SGD accepts sparse gradients: they take the eager reference step."""

    def _state_row(self, group: dict[str, Any], p: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """(momentum_buffer | None,): torch keeps no state at all without momentum."""
        if group["momentum"] == 0:
            return (None,)
        state = self.state[p]
        buffer = state.get("momentum_buffer")
        if buffer is None:
            # torch creates the buffer as a copy of the first gradient; the kernel writes
            # it on that step (its first-step flag says so), the reference as torch does.
            buffer = state["momentum_buffer"] = torch.empty_like(p, memory_format=torch.preserve_format)
            self._first_flags[real(local(buffer)).data_ptr()] = (weakref.ref(buffer), None)
        return (buffer,)

    def _first_flag(self, buffer: torch.Tensor | None) -> tuple[torch.Tensor, int] | bool | None:
        """The first-step flag of a buffer (as the kernel sees it); None: none yet; False: not new."""
        entry = None if buffer is None else self._first_flags.get(buffer.data_ptr())
        if entry is None or entry[0]() is None or real(local(entry[0]())).data_ptr() != buffer.data_ptr():
            return False
        return entry[1]

    def _allocate_first_flags(self, buffers: list[torch.Tensor], device: torch.device) -> None:
        """One int32 flag, set to 1, per new buffer, all in one tensor: one allocation per build."""
        if not buffers:
            return
        flags = torch.ones(len(buffers), dtype=torch.int32, device=device)
        for index, buffer in enumerate(buffers):
            key = buffer.data_ptr()
            self._first_flags[key] = (self._first_flags[key][0], (flags, index))

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_first_flags", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._first_flags = {}

    def _build_tensor_table(self, plan: Plan) -> None:
        from ..kernels import sgd as kernels

        buffers = [views[2] for views in plan.views]
        self._allocate_first_flags([b for b in buffers if self._first_flag(b) is None], plan.device)
        programs, first_programs, group_rows = self._program_layout(plan, kernels.SGD_CHUNK_SIZE)
        rows: list[int] = []
        for (p, _g, buffer), first_program, group in zip(plan.views, first_programs, group_rows, strict=True):
            flag = self._first_flag(buffer)
            address = flag[0].data_ptr() + 4 * flag[1] if flag else 0
            rows += kernels.table_row(p, buffer, address, first_program, group)
        self._set_tensor_table(plan, rows, programs, kernels.TABLE_LAYOUT, kernels.SGD_CHUNK_SIZE)
        plan.any_flags["momentum"] = any(
            rows[start + kernels.MOMENTUM_BUFFER] for start in range(0, len(rows), kernels.TABLE_COLUMNS)
        )

    def _group_row(self, group: dict[str, Any], device: torch.device, keepalive: list[torch.Tensor]) -> list[int]:
        from ..kernels import sgd as kernels

        lr, lr_address, lr_fp64 = encode_hyperparameter(group["lr"], device, keepalive)
        weight_decay, weight_decay_address, weight_decay_fp64 = encode_hyperparameter(
            group["weight_decay"], device, keepalive
        )
        return kernels.group_row(
            lr=lr,
            lr_address=lr_address,
            lr_fp64=lr_fp64,
            momentum=group["momentum"],
            dampening=group["dampening"],
            weight_decay=weight_decay,
            weight_decay_address=weight_decay_address,
            weight_decay_fp64=weight_decay_fp64,
            nesterov=group["nesterov"],
            maximize=group["maximize"],
        )

    def _launch(
        self,
        plan: Plan,
        grad_scale: torch.Tensor | None,
        found_inf: torch.Tensor | None,
        clip_coef: torch.Tensor | None,
        skipped: torch.Tensor | None,
    ) -> None:
        from ..kernels import sgd as kernels

        kernels.sgd_step(
            plan.tensor_table,
            plan.grad_table,
            plan.group_table,
            plan.program_table,
            plan.arrivals,
            plan.element,
            any_momentum=plan.any_flags["momentum"],
            grad_scale=grad_scale,
            found_inf=found_inf,
            skipped=skipped,
            clip_coef=clip_coef,
            chunk_size=plan.extra["chunk_size"],
            aligned=plan.aligned,
        )

    def _reference_step(
        self,
        group: dict[str, Any],
        rows: list[tuple[torch.Tensor, ...]],
        grad_scale: torch.Tensor | None,
        found_inf: torch.Tensor | None,
        clip_coef: torch.Tensor | None,
    ) -> None:
        params, grads, buffers = (list(column) for column in zip(*rows, strict=True))
        self._allocate_first_flags([b for b in buffers if self._first_flag(b) is None], params[0].device)
        first = []
        for buffer in buffers:
            flag = self._first_flag(buffer)
            first.append(flag[0][flag[1]] if flag else None)
        reference.sgd_step_ref(
            params,
            grads,
            buffers,
            first,
            lr=group["lr"],
            momentum=group["momentum"],
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
            grad_scale=grad_scale,
            found_inf=found_inf,
            clip_coef=clip_coef,
        )
