"""Adam and AdamW with 8-bit blockwise moments, one Triton kernel launch per (device, dtype) per step.

Each moment of a parameter of at least 4,096 elements is kept as one uint8 code per
element and one fp32 scale per block of 256 elements, with bitsandbytes' dynamic code
map (signed for exp_avg, unsigned for exp_avg_sq; see :mod:`fused_ops.kernels.adam8bit`
for the map and why), rounded to the nearest code except that a positive exp_avg_sq never
stores as 0 (which would blow the next update up; the same module says how): about
2.03 B of moments per parameter instead of 8, and a step moves about 16.06 B per fp32
parameter (10.06 with bf16 parameters and gradients).
Smaller tensors keep fp32 moments, in the same launch.

    >>> optimizer = fused_ops.optim.AdamW8bit(model.parameters(), lr=1e-3)

State per parameter: ``step`` and either ``exp_avg_codes``/``exp_avg_sq_codes`` (uint8,
flat, in the parameter's memory order) with ``exp_avg_scales``/``exp_avg_sq_scales``
(fp32), or fp32 ``exp_avg``/``exp_avg_sq``. ``state_dict()`` returns that compact form
(the default); ``state_dict(torch_format=True)`` returns torch's (moments dequantized to
the parameter's dtype), which ``torch.optim.AdamW.load_state_dict`` accepts.
``load_state_dict`` takes either, quantizing torch-format moments.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import reference
from ._base import Plan, local
from .adam import _AdamBase

_QUANTIZED_KEYS = ("exp_avg_codes", "exp_avg_scales", "exp_avg_sq_codes", "exp_avg_sq_scales")
# kernels/adam8bit.py's constants, here so that this module imports without Triton.
_MIN_8BIT_NUMEL = 4096
_QUANT_BLOCK = 256
_SIGNED_ZERO = 127


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    """A dense tensor's elements as a 1-D view in memory order (the kernel's flat offsets)."""
    return tensor.as_strided((tensor.numel(),), (1,))


class _Adam8bitBase(_AdamBase):
    """Adam(W) with 8-bit moments on :class:`fused_ops.optim.adam._AdamBase`."""

    _family = "adam8bit"

    def __init__(self, params: Any, lr, betas, eps, weight_decay, amsgrad, *, decoupled_weight_decay, **flags) -> None:
        name = type(self).__name__
        if amsgrad:
            raise ValueError(
                f"{name} does not support amsgrad: its running maximum would need a third quantized moment; "
                "use fused_ops.optim.AdamW(..., amsgrad=True, state_dtype=torch.bfloat16) for a smaller state "
                "with amsgrad"
            )
        if any(isinstance(beta, torch.Tensor) for beta in betas):
            raise ValueError(f"{name} takes float betas only (tensor lr is supported)")
        super().__init__(
            params, lr, betas, eps, weight_decay, False, decoupled_weight_decay=decoupled_weight_decay, **flags
        )

    def _plan_variant(self, group: dict[str, Any], p: torch.Tensor) -> Any:
        return None

    def _state_row(self, group: dict[str, Any], p: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """(exp_avg or its codes, exp_avg_sq or its codes, exp_avg scales | None, exp_avg_sq scales | None, step)."""
        state = self.state[p]
        shard = local(p)
        if len(state) == 0:
            if p.is_complex():
                raise ValueError(f"{type(self).__name__} does not support complex parameters")
            state["step"] = torch.zeros((), dtype=torch.float32, device=shard.device)
            if shard.numel() >= _MIN_8BIT_NUMEL:
                blocks = -(-shard.numel() // _QUANT_BLOCK)
                codes = {"dtype": torch.uint8, "device": shard.device}
                state["exp_avg_codes"] = torch.full((shard.numel(),), _SIGNED_ZERO, **codes)
                state["exp_avg_scales"] = torch.zeros(blocks, dtype=torch.float32, device=shard.device)
                state["exp_avg_sq_codes"] = torch.zeros(shard.numel(), **codes)
                state["exp_avg_sq_scales"] = torch.zeros(blocks, dtype=torch.float32, device=shard.device)
            else:
                state["exp_avg"] = torch.zeros_like(shard, dtype=torch.float32)
                state["exp_avg_sq"] = torch.zeros_like(shard, dtype=torch.float32)
        if "exp_avg_codes" in state:
            return (
                state["exp_avg_codes"],
                state["exp_avg_sq_codes"],
                state["exp_avg_scales"],
                state["exp_avg_sq_scales"],
                state["step"],
            )
        return state["exp_avg"], state["exp_avg_sq"], None, None, state["step"]

    def _build_tensor_table(self, plan: Plan) -> None:
        from ..kernels import adam8bit as kernels

        programs, first_programs, group_rows = self._program_layout(plan, kernels.CHUNK_SIZE)
        rows: list[int] = []
        for (p, _g, m, v, m_scales, v_scales, step), first_program, group in zip(
            plan.views, first_programs, group_rows, strict=True
        ):
            rows += kernels.table_row(p, m, v, m_scales, v_scales, step, first_program, group)
        self._set_tensor_table(plan, rows, programs, kernels.TABLE_LAYOUT, kernels.CHUNK_SIZE)
        plan.extra["codes_type"] = torch.empty(1, dtype=torch.uint8, device=plan.device)

    def _launch(
        self,
        plan: Plan,
        grad_scale: torch.Tensor | None,
        found_inf: torch.Tensor | None,
        clip_coef: torch.Tensor | None,
        skipped: torch.Tensor | None,
    ) -> None:
        from ..kernels import adam8bit as kernels

        kernels.adam8bit_step(
            plan.tensor_table,
            plan.grad_table,
            plan.group_table,
            plan.program_table,
            plan.arrivals,
            plan.element,
            plan.extra["codes_type"],
            grad_scale=grad_scale,
            found_inf=found_inf,
            skipped=skipped,
            clip_coef=clip_coef,
        )

    def _reference_step(
        self,
        group: dict[str, Any],
        rows: list[tuple[torch.Tensor, ...]],
        grad_scale: torch.Tensor | None,
        found_inf: torch.Tensor | None,
        clip_coef: torch.Tensor | None,
    ) -> None:
        params, grads, states = [], [], []
        for p, g, m, v, m_scales, v_scales, step in rows:
            params.append(p)
            grads.append(g)
            if m_scales is None:
                states.append({"exp_avg": m, "exp_avg_sq": v, "step": step})
            else:
                states.append(
                    {
                        "exp_avg_codes": m,
                        "exp_avg_sq_codes": v,
                        "exp_avg_scales": m_scales,
                        "exp_avg_sq_scales": v_scales,
                        "step": step,
                    }
                )
        beta1, beta2 = group["betas"]
        reference.adam8bit_step_ref(
            params,
            grads,
            states,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            grad_scale=grad_scale,
            found_inf=found_inf,
            clip_coef=clip_coef,
        )

    def state_dict(self, *, torch_format: bool = False) -> dict[str, Any]:
        """The optimizer's state: compact (codes and scales, the default) or in torch's format.

        Args:
            torch_format (bool): dequantize each moment to the parameter's dtype and shape
                under torch's keys (``exp_avg``, ``exp_avg_sq``), so that
                ``torch.optim.Adam(W).load_state_dict`` accepts it (4x the compact size).

        Returns:
            A dict with ``state`` and ``param_groups``, as :meth:`torch.optim.Optimizer.state_dict`.
        """
        state_dict = super().state_dict()
        if not torch_format:
            return state_dict
        params = self._flat_params()
        converted = {}
        for index, state in state_dict["state"].items():
            p = local(params[index])
            if "exp_avg_codes" in state:
                moments = {}
                for key, signed in (("exp_avg", True), ("exp_avg_sq", False)):
                    values = reference.dequantize_blockwise_ref(state[f"{key}_codes"], state[f"{key}_scales"], signed)
                    dense = torch.empty_like(p)
                    _flat(dense).copy_(values)
                    moments[key] = dense
            else:
                moments = {key: state[key].to(p.dtype) for key in ("exp_avg", "exp_avg_sq")}
            converted[index] = {"step": state["step"], **moments}
        state_dict["state"] = converted
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a compact or torch-format state (see :meth:`state_dict`); torch-format moments are quantized.

        Args:
            state_dict (dict): from :meth:`state_dict` (either form), from torch's
                Adam/AdamW, or from fused_ops' Adam/AdamW.
        """
        # torch's load_state_dict casts every state tensor but step to a floating
        # parameter's dtype, uint8 codes included: keep the saved tensors aside and put
        # them back, on the parameter's device, once it has replaced the state.
        saved = {
            index: {key: value for key, value in state.items() if key != "step" and isinstance(value, torch.Tensor)}
            for index, state in state_dict["state"].items()
        }
        self._loading = True
        try:
            super().load_state_dict(state_dict)
        finally:
            self._loading = False
        params = self._flat_params()
        groups = {id(p): group for group in self.param_groups for p in group["params"]}
        for index, values in saved.items():
            p = params[index]
            state = self.state[p]
            for key, value in values.items():
                state[key] = value.to(device=local(p).device, copy=True)
            self._load_moments(groups[id(p)], p, state)

    def _check_loaded_state(self, state: dict[str, Any]) -> None:
        for group in state["param_groups"]:
            for position, p in enumerate(group["params"]):
                p_state = state["state"].get(p)
                if not p_state:
                    continue
                compact = all(key in p_state for key in _QUANTIZED_KEYS)
                full = "exp_avg" in p_state and "exp_avg_sq" in p_state
                if "step" not in p_state or not (compact or full):
                    raise ValueError(
                        f"loaded state dict for parameter {position} of a param group has keys "
                        f"{sorted(p_state)}; an 8-bit Adam state needs step and either exp_avg and exp_avg_sq "
                        f"or {list(_QUANTIZED_KEYS)}"
                    )
                numel = local(p).numel()
                if compact and p_state["exp_avg_codes"].numel() != numel:
                    raise ValueError(
                        f"loaded state dict has {p_state['exp_avg_codes'].numel()} exp_avg codes for parameter "
                        f"{position} of a param group, which has {numel} elements"
                    )
                if not compact and tuple(p_state["exp_avg"].shape) != tuple(local(p).shape):
                    raise ValueError(
                        f"loaded state dict has exp_avg of shape {tuple(p_state['exp_avg'].shape)} for parameter "
                        f"{position} of a param group, whose shape is {tuple(local(p).shape)}"
                    )

    def _load_moments(self, group: dict[str, Any], p: torch.Tensor, state: dict[str, Any]) -> None:
        """Codes and scales as they are; torch-format moments quantized (fp32 for small tensors)."""
        if getattr(self, "_loading", False):
            return  # load_state_dict calls this again with the saved tensors
        shard = local(p)
        if "exp_avg" in state and shard.numel() >= _MIN_8BIT_NUMEL:
            # torch's format: quantize, in the parameter's memory order.
            for key, signed in (("exp_avg", True), ("exp_avg_sq", False)):
                dense = torch.empty_like(shard, dtype=torch.float32).copy_(state.pop(key))
                codes, scales = reference.quantize_blockwise_ref(_flat(dense), signed)
                state[f"{key}_codes"], state[f"{key}_scales"] = codes, scales
        elif "exp_avg" in state:
            for key in ("exp_avg", "exp_avg_sq"):
                state[key] = torch.empty_like(shard, dtype=torch.float32).copy_(state[key])
        elif "exp_avg_codes" in state and shard.numel() < _MIN_8BIT_NUMEL:
            for key, signed in (("exp_avg", True), ("exp_avg_sq", False)):
                values = reference.dequantize_blockwise_ref(
                    state.pop(f"{key}_codes"), state.pop(f"{key}_scales"), signed
                )
                dense = torch.empty_like(shard, dtype=torch.float32)
                _flat(dense).copy_(values)
                state[key] = dense


class Adam8bit(_Adam8bitBase):
    """:class:`fused_ops.optim.Adam` with 8-bit blockwise moments (see the module docstring).

    Args:
        params: iterable of tensors, of (name, tensor) pairs, or of param-group dicts.
        lr (float, Tensor): learning rate (default: 1e-3).
        betas (tuple[float, float]): floats only (default: (0.9, 0.999)).
        eps (float): term added to the denominator (default: 1e-8).
        weight_decay (float): L2 penalty added to the gradient (default: 0).
        amsgrad (bool): must be False (``ValueError`` otherwise).
        maximize (bool): maximize the objective (default: False).

    Example:
        >>> optimizer = fused_ops.optim.Adam8bit(model.parameters(), lr=1e-3)
    """

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=False,
        )


class AdamW8bit(_Adam8bitBase):
    """:class:`fused_ops.optim.AdamW` with 8-bit blockwise moments (see the module docstring).

    Takes :class:`Adam8bit`'s arguments, with ``weight_decay`` defaulting to 1e-2 and
    decoupled weight decay.

    Example:
        >>> optimizer = fused_ops.optim.AdamW8bit(model.parameters(), lr=1e-3, weight_decay=0.1)
        >>> torch.save(optimizer.state_dict(torch_format=True), "adamw.pt")  # torch.optim.AdamW loads it
    """

    _always_decoupled = True

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )
