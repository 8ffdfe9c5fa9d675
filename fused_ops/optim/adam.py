"""Adam and AdamW whose step is one Triton kernel launch per (device, dtype), across param groups.

Drop-in replacements for :class:`torch.optim.Adam` and :class:`torch.optim.AdamW` (torch
2.13): the same constructor, hyperparameter checks, state layout, ``state_dict`` and
numbers. Only the update differs: instead of a loop of torch ops (or torch's foreach /
fused kernels) it runs :func:`fused_ops.kernels.adam.adam_step`, which reads each
parameter, gradient and moment once and writes each once.

    >>> model = torch.nn.Linear(4, 2)
    >>> optimizer = fused_ops.optim.AdamW(model.parameters(), lr=1e-3)  # was torch.optim.AdamW
    >>> model(torch.randn(8, 4)).sum().backward()
    >>> optimizer.step()

The kernel finds the tensors through tables of int64 addresses and a per-group
hyperparameter table, cached between steps (see :mod:`fused_ops.optim._base`).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import reference
from ._base import FusedOptimizer, Plan, encode_hyperparameter, to_scalar

_OPTIONAL_FLAGS = {
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": None,
    "decoupled_weight_decay": False,
    "state_dtype": None,
}
# The moments' dtypes a group can ask for besides its parameters' own (None): bf16 halves
# the state (4 B per parameter instead of 8 for fp32), fp32 keeps fp32 moments for
# bf16/fp16 parameters. fp16 is refused: exp_avg_sq (squared gradients) leaves its range.
STATE_DTYPES = (None, torch.float32, torch.bfloat16)


class _AdamBase(FusedOptimizer):
    """Validation, lazy state and the fused step of Adam and AdamW (see :class:`FusedOptimizer`).

    The public classes (Adam, AdamW and their 8-bit forms) only spell out torch's
    signature, with its own defaults, and pass it here: an explicit signature is what
    ``inspect.signature``, ``help()`` and editors show, so it is written out per class
    rather than taken as ``**kwargs``.
    """

    _family = "adam"
    _optional_flags = _OPTIONAL_FLAGS
    # AdamW and AdamW8bit: as torch's AdamW, any state loaded into them decays decoupled.
    _always_decoupled = False

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor,
        betas: tuple[float | torch.Tensor, float | torch.Tensor],
        eps: float,
        weight_decay: float,
        amsgrad: bool,
        *,
        foreach: bool | None,
        maximize: bool,
        capturable: bool,
        differentiable: bool,
        fused: bool | None,
        decoupled_weight_decay: bool,
        state_dtype: torch.dtype | None = None,
        stochastic_rounding: bool = False,
    ) -> None:
        # torch's checks, in torch's order, with torch's messages (including its refusals
        # of tensor lr/betas with foreach=True, so code that fails with torch fails here).
        if isinstance(lr, torch.Tensor):
            if foreach and not capturable:
                raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
            if lr.numel() != 1:
                raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not (
            (isinstance(betas[0], float) and isinstance(betas[1], float))
            or (isinstance(betas[0], torch.Tensor) and isinstance(betas[1], torch.Tensor))
        ):
            raise ValueError("betas must be either both floats or both Tensors")
        for index, beta in enumerate(betas):
            if isinstance(beta, torch.Tensor):
                if not capturable and foreach:
                    raise ValueError(
                        f"betas[{index}] as a Tensor is not supported for capturable=False and foreach=True"
                    )
                if beta.numel() != 1:
                    raise ValueError(f"Tensor betas[{index}] must be 1-element")
        defaults = {
            "lr": lr,
            "betas": tuple(map(to_scalar, betas)),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        if state_dtype not in STATE_DTYPES:
            raise ValueError(f"state_dtype must be one of {STATE_DTYPES}, got {state_dtype}")
        if state_dtype is not None:
            # Only when asked: a default optimizer's groups keep exactly torch's keys.
            defaults["state_dtype"] = state_dtype
        if stochastic_rounding:
            # Drawn from torch's default generator: torch.manual_seed(s) before the
            # constructor makes the whole run reproducible.
            defaults["stochastic_rounding_seed"] = int(torch.randint(0, 2**31 - 1, (), device="cpu"))
        super().__init__(params, defaults)
        if differentiable:
            name = type(self).__name__
            raise RuntimeError(
                f"{'`fused` does not support `differentiable`: ' if fused else ''}fused_ops.optim.{name} does not "
                "support differentiable=True, because its update runs in a Triton kernel that autograd cannot "
                f"differentiate through. Use torch.optim.{name}(..., differentiable=True) for that."
            )
        if fused and foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")

    def _after_load(self) -> None:
        for group in self.param_groups:
            if self._always_decoupled:
                group["decoupled_weight_decay"] = True
            for p in group["params"]:
                p_state = self.state.get(p)
                if p_state and "step" in p_state:
                    # torch.optim.Adam keeps step on the CPU (and fp64 under a float64
                    # default dtype); the kernel reads a float32 step on the parameter's device.
                    step = p_state["step"]
                    step = step if isinstance(step, torch.Tensor) else torch.tensor(float(step))
                    p_state["step"] = step.to(dtype=torch.float32, device=p.device).reshape(())
                if p_state:
                    self._load_moments(group, p, p_state)

    def _load_moments(self, group: dict[str, Any], p: torch.Tensor, p_state: dict[str, Any]) -> None:
        """Bring a loaded parameter's moments into the dtype the kernel reads."""
        # A state saved with other moments' dtypes (torch's, fp32) is rounded to this
        # group's (torch's load_state_dict has cast it to p's dtype).
        dtype = group["state_dtype"] or p.dtype
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if key in p_state and p_state[key].dtype != dtype and not p.is_complex():
                p_state[key] = p_state[key].to(dtype)

    def _check_loaded_state(self, state: dict[str, Any]) -> None:
        _check_loaded_state(state)
        # A state_dict without state_dtype (torch's, or from a default optimizer) keeps the
        # moments' dtype this optimizer was built with: loading it quantizes.
        current = self.__dict__.get("param_groups", [])
        for index, group in enumerate(state["param_groups"]):
            if "state_dtype" not in group and index < len(current) and current[index].get("state_dtype"):
                group["state_dtype"] = current[index]["state_dtype"]

    def _plan_variant(self, group: dict[str, Any], p: torch.Tensor) -> Any:
        # One launch has one moments' dtype.
        return group.get("state_dtype") or p.dtype

    def _sparse_gradient(self, group: dict[str, Any], p: torch.Tensor) -> None:
        raise RuntimeError("Adam does not support sparse gradients, please consider SparseAdam instead")

    def _state_row(self, group: dict[str, Any], p: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """(exp_avg, exp_avg_sq, max_exp_avg_sq | None, step), created on first use with torch's keys."""
        state = self.state[p]
        if len(state) == 0:
            dtype = group.get("state_dtype")
            if dtype is not None and p.is_complex():
                raise ValueError(
                    f"state_dtype={dtype} is not supported for complex parameters (there is no complex "
                    "bfloat16); put them in a param group with state_dtype=None"
                )
            # step is a float32 0-d tensor on the parameter's device, as in torch's
            # fused Adam, so the kernel reads and writes it without a host sync.
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
        amsgrad = state["max_exp_avg_sq"] if group["amsgrad"] else None
        return state["exp_avg"], state["exp_avg_sq"], amsgrad, state["step"]

    def _build_tensor_table(self, plan: Plan) -> None:
        from ..kernels import adam as kernels

        programs, first_programs, group_rows = self._program_layout(plan, kernels.ADAM_CHUNK_SIZE)
        rows: list[int] = []
        for (p, _g, m, v, vmax, step), first_program, group in zip(plan.views, first_programs, group_rows, strict=True):
            rows += kernels.table_row(p, m, v, vmax, step, first_program, group)
        self._set_tensor_table(plan, rows, programs, kernels.TABLE_LAYOUT, kernels.ADAM_CHUNK_SIZE)

    def _group_row(self, group: dict[str, Any], device: torch.device, keepalive: list[torch.Tensor]) -> list[int]:
        from ..kernels import adam as kernels

        lr, lr_address, lr_fp64 = encode_hyperparameter(group["lr"], device, keepalive)
        beta1, beta2 = group["betas"]
        betas_address, betas_fp64 = (0, 0), False
        if isinstance(beta1, torch.Tensor) or isinstance(beta2, torch.Tensor):
            # Both are tensors (the constructor's rule), of one dtype for the kernel, which
            # reads them as a pair: not encode_hyperparameter's dtype per tensor.
            dtype = torch.float64 if beta1.dtype == beta2.dtype == torch.float64 else torch.float32
            first = beta1.to(device=device, dtype=dtype, non_blocking=True)
            second = beta2.to(device=device, dtype=dtype, non_blocking=True)
            keepalive += [first, second]
            betas_address, betas_fp64 = (first.data_ptr(), second.data_ptr()), dtype == torch.float64
            beta1 = beta2 = 0.5  # placeholders (the kernel reads the tensors)
        return kernels.group_row(
            lr=lr,
            lr_address=lr_address,
            lr_fp64=lr_fp64,
            beta1=beta1,
            beta2=beta2,
            betas_address=betas_address,
            betas_fp64=betas_fp64,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            amsgrad=group["amsgrad"],
            maximize=group["maximize"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            stochastic_rounding_seed=group.get("stochastic_rounding_seed"),
        )

    def _group_flags(self, plan: Plan) -> None:
        from ..kernels import adam as kernels

        plan.any_flags["amsgrad"] = any(row[kernels.FLAGS] & kernels.AMSGRAD_FLAG for row in plan.group_values)
        # Only bf16 parameters round stochastically (fp32 and fp16 ones round to nearest).
        plan.any_flags["stochastic"] = plan.dtype == torch.bfloat16 and any(
            row[kernels.FLAGS] & kernels.STOCHASTIC_ROUNDING_FLAG for row in plan.group_values
        )

    def _launch(
        self,
        plan: Plan,
        grad_scale: torch.Tensor | None,
        found_inf: torch.Tensor | None,
        clip_coef: torch.Tensor | None,
        skipped: torch.Tensor | None,
    ) -> None:
        # Imported here, not at the top: fused_ops imports (and runs on the reference)
        # where Triton is not installed.
        from ..kernels import adam as kernels

        kernels.adam_step(
            plan.tensor_table,
            plan.grad_table,
            plan.group_table,
            plan.program_table,
            plan.arrivals,
            plan.element,
            any_amsgrad=plan.any_flags["amsgrad"],
            # Any moment of the plan: its dtype (the plan's one) types every moment address.
            state_type=plan.views[0][2],
            any_stochastic_rounding=plan.any_flags["stochastic"],
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
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = (
            list(column) for column in zip(*rows, strict=True)
        )
        beta1, beta2 = group["betas"]
        reference.adam_step_ref(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            max_exp_avg_sqs,
            steps,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            amsgrad=group["amsgrad"],
            maximize=group["maximize"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            grad_scale=grad_scale,
            found_inf=found_inf,
            clip_coef=clip_coef,
        )


def _check_loaded_state(state: dict[str, Any]) -> None:
    """Refuse a loaded state with a missing key or a moment whose shape is not its parameter's."""
    for group in state["param_groups"]:
        required = ["step", "exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group.get("amsgrad") else [])
        for position, p in enumerate(group["params"]):
            p_state = state["state"].get(p)
            if not p_state:
                continue
            missing = [key for key in required if key not in p_state]
            if missing:
                raise ValueError(
                    f"loaded state dict has no {missing} for parameter {position} of a param group "
                    f"(shape {tuple(p.shape)}); an Adam state needs {required}"
                )
            for key in required[1:]:
                value = p_state[key]
                if not isinstance(value, torch.Tensor) or value.shape != p.shape:
                    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                    raise ValueError(
                        f"loaded state dict has {key} of shape {shape} for parameter {position} of a param "
                        f"group, whose shape is {tuple(p.shape)}"
                    )
            step = p_state["step"]
            if isinstance(step, torch.Tensor) and step.numel() != 1:
                raise ValueError(
                    f"loaded state dict has a step of shape {tuple(step.shape)} for parameter {position} "
                    "of a param group; step must be a single number"
                )


class Adam(_AdamBase):
    """Drop-in for :class:`torch.optim.Adam`, one fused Triton kernel launch per step and group.

    Args:
        params: iterable of tensors, of (name, tensor) pairs, or of param-group dicts.
        lr (float, Tensor): learning rate (default: 1e-3). A tensor lr is read on the
            device, so schedulers and CUDA graphs can change it without a host sync.
        betas (tuple[float | Tensor, float | Tensor]): coefficients of the running
            averages of the gradient and its square (default: (0.9, 0.999)).
        eps (float): term added to the denominator (default: 1e-8).
        weight_decay (float): L2 penalty added to the gradient (default: 0).
        amsgrad (bool): use the running maximum of the second moment (default: False).
        foreach, fused, capturable: accepted for compatibility; the step is always one
            fused kernel per (param group, device, dtype) and never syncs with the host.
        maximize (bool): maximize the objective instead of minimizing it (default: False).
        differentiable (bool): must be False; differentiating through the step is not
            supported (``RuntimeError``).
        decoupled_weight_decay (bool): decay the parameter directly, as AdamW (default: False).
        state_dtype (torch.dtype, optional): dtype of the moments (exp_avg, exp_avg_sq,
            max_exp_avg_sq): None (default) for the parameters' own, as torch;
            ``torch.bfloat16`` halves the state of fp32 parameters (4 B per parameter
            instead of 8; a step moves 20 B per fp32 parameter instead of 28), computing in
            fp32 and rounding the moments to bf16 as they are stored; ``torch.float32``
            keeps fp32 moments for bf16/fp16 parameters. A group may set its own. The
            state_dict holds the moments in this dtype, which ``torch.optim.Adam(W)``
            loads (it casts state to each parameter's dtype); a torch (or fp32) state_dict
            loads into this optimizer by rounding its moments to this dtype.
        stochastic_rounding (bool): round updated bf16 parameters stochastically
            instead of to nearest (default: False), so that updates under half a bf16
            ulp still move them in expectation. Reproducible: the random stream comes
            from a seed drawn from torch's default generator at construction (stored in
            the param group as ``stochastic_rounding_seed``), the step and the element.
            Parameters of other dtypes round to nearest; so does the eager fallback.

    Example:
        >>> optimizer = fused_ops.optim.Adam(model.parameters(), lr=1e-3)
        >>> loss_fn(model(x), y).backward()
        >>> optimizer.step()
    """

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float | torch.Tensor, float | torch.Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        state_dtype: torch.dtype | None = None,
        stochastic_rounding: bool = False,
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
            decoupled_weight_decay=decoupled_weight_decay,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
        )


class AdamW(_AdamBase):
    """Drop-in for :class:`torch.optim.AdamW`: Adam with decoupled weight decay, fused.

    Takes :class:`Adam`'s arguments except ``decoupled_weight_decay`` (always True), with
    ``weight_decay`` defaulting to 1e-2: each step first scales the parameter by
    ``1 - lr * weight_decay``. ``state_dtype=torch.bfloat16`` keeps bf16 moments (see
    :class:`Adam`).

    Example:
        >>> optimizer = fused_ops.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    """

    _always_decoupled = True

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float | torch.Tensor, float | torch.Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        state_dtype: torch.dtype | None = None,
        stochastic_rounding: bool = False,
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
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
        )
