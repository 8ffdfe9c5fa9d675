"""Adam and AdamW whose step is one Triton kernel launch per (param group, device, dtype).

Drop-in replacements for :class:`torch.optim.Adam` and :class:`torch.optim.AdamW` (torch
2.13): the same constructor, hyperparameter checks, state layout, ``state_dict`` and
numbers. Only the update differs: instead of a loop of torch ops (or torch's foreach /
fused kernels) it runs :func:`fused_ops.kernels.adam.adam_step`, which reads each
parameter, gradient and moment once and writes each once.

    >>> model = torch.nn.Linear(4, 2)
    >>> optimizer = fused_ops.optim.AdamW(model.parameters(), lr=1e-3)  # was torch.optim.AdamW
    >>> model(torch.randn(8, 4)).sum().backward()
    >>> optimizer.step()

The kernel finds the tensors through a table of int64 addresses, cached between steps
and rebuilt only when an address changes (a new gradient tensor, a loaded state).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .. import reference
from .._dispatch import use_triton
from .._validation import is_dense

try:
    from torch.distributed.tensor import DTensor as _DTensor
except ImportError:  # torch built without distributed
    _DTensor = None

_OPTIONAL_FLAGS = {
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": None,
    "decoupled_weight_decay": False,
}


def _to_scalar(value: float | torch.Tensor) -> float | torch.Tensor:
    """A 1-element tensor hyperparameter as a 0-d tensor, anything else unchanged (torch's rule)."""
    if isinstance(value, torch.Tensor) and value.dim() != 0:
        return value.reshape(())
    return value


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor a kernel can address: a DTensor's local shard (FSDP2), else the tensor."""
    if _DTensor is not None and isinstance(tensor, _DTensor):
        # Under no_grad, to_local() is the shard itself, so the kernel updates it in place.
        return tensor.to_local()
    return tensor


def _real(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """Complex tensors as their real view: Adam's math is elementwise on real and imaginary parts."""
    if tensor is not None and tensor.is_complex():
        return torch.view_as_real(tensor)
    return tensor


class _AdamBase(torch.optim.Optimizer):
    """Validation, lazy state, grouping by (device, dtype) and the fused step of Adam and AdamW.

    Attributes:
        last_step_skipped: 0-d bool tensor, True when the last :meth:`step` was skipped
            because GradScaler found an inf/NaN gradient (``found_inf``). It stays on the
            device, so reading it is the caller's choice of when to sync; LR schedulers
            stepped unconditionally otherwise advance on skipped steps, as with torch::

                scaler.step(optimizer)
                scaler.update()
                if not optimizer.last_step_skipped:  # reading it waits for the GPU
                    scheduler.step()
    """

    # GradScaler then hands us grad_scale and found_inf instead of unscaling the grads
    # itself and skipping step() on the host (which needs a sync).
    _step_supports_amp_scaling = True

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
            "betas": tuple(map(_to_scalar, betas)),
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
        self._launch_tables: dict[tuple, tuple] = {}
        self.last_step_skipped = torch.tensor(False)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # load_state_dict() and unpickling both end here, before anything is replaced, so
        # a state that cannot be used is refused while the optimizer is still intact.
        _check_loaded_state(state)
        super().__setstate__(state)
        for group in self.param_groups:
            for flag, default in _OPTIONAL_FLAGS.items():
                group.setdefault(flag, default)
            for p in group["params"]:
                p_state = self.state.get(p)
                if p_state and "step" in p_state:
                    # torch.optim.Adam keeps step on the CPU (and fp64 under a float64
                    # default dtype); the kernel reads a float32 step on the parameter's device.
                    step = p_state["step"]
                    step = step if isinstance(step, torch.Tensor) else torch.tensor(float(step))
                    p_state["step"] = step.to(dtype=torch.float32, device=p.device).reshape(())
        self._launch_tables = {}
        if "last_step_skipped" not in self.__dict__:
            self.last_step_skipped = torch.tensor(False)

    def _init_group(self, group: dict[str, Any]) -> list[tuple[torch.Tensor, ...]]:
        """(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq | None, step) for params with a grad."""
        entries = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("Adam does not support sparse gradients, please consider SparseAdam instead")
            state = self.state[p]
            if len(state) == 0:
                # step is a float32 0-d tensor on the parameter's device, as in torch's
                # fused Adam, so the kernel reads and writes it without a host sync.
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            entries.append(
                (
                    p,
                    p.grad,
                    state["exp_avg"],
                    state["exp_avg_sq"],
                    state["max_exp_avg_sq"] if group["amsgrad"] else None,
                    state["step"],
                )
            )
        return entries

    @torch._disable_dynamo
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): A closure that reevaluates the model and
                returns the loss.

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Set by torch.amp.GradScaler.step() for optimizers with _step_supports_amp_scaling.
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        # The first kernel launch stores found_inf != 0 here, saving a launch of its own.
        skip_flags: list[torch.Tensor] = []
        for index, group in enumerate(self.param_groups):
            self._step_group(index, group, grad_scale, found_inf, skip_flags)
        if found_inf is None:
            # No step is skipped: a host constant, not a zeros() kernel per step.
            self.last_step_skipped = torch.tensor(False)
        else:
            self.last_step_skipped = skip_flags[0] if skip_flags else found_inf != 0
        return loss

    def _step_group(
        self,
        index: int,
        group: dict[str, Any],
        grad_scale: torch.Tensor | None,
        found_inf: torch.Tensor | None,
        skip_flags: list[torch.Tensor],
    ) -> None:
        buckets: dict[tuple[torch.device, torch.dtype], list[tuple[torch.Tensor, ...]]] = {}
        eager: list[tuple[torch.Tensor, ...]] = []
        for entry in self._init_group(group):
            p, g, m, v, vmax, step = (_real(_local(t)) if t is not None else None for t in entry)
            if not (is_dense(p) and all(t.stride() == p.stride() for t in (m, v, vmax) if t is not None)):
                # A parameter with gaps (a slice), whose zeros_like state is contiguous, or a
                # loaded state in another layout than its parameter: the reference walks
                # any strides, the kernel only one shared dense layout.
                eager.append((p, g, m, v, vmax, step))
                continue
            if g.stride() != p.stride():
                # A gradient assigned in another layout: one copy into the parameter's.
                g = torch.empty_like(p).copy_(g)
            buckets.setdefault((p.device, p.dtype), []).append((p, g, m, v, vmax, step))

        for (device, dtype), tensors in buckets.items():
            if use_triton("adam", tensors[0][0]):
                self._launch(index, device, dtype, group, tensors, grad_scale, found_inf, skip_flags)
            else:
                eager.extend(tensors)
        if eager:
            self._reference_step(group, eager, grad_scale, found_inf)

    def _launch(
        self,
        index: int,
        device: torch.device,
        dtype: torch.dtype,
        group: dict[str, Any],
        tensors: list[tuple[torch.Tensor, ...]],
        grad_scale: torch.Tensor | None,
        found_inf: torch.Tensor | None,
        skip_flags: list[torch.Tensor],
    ) -> None:
        """One kernel launch for one (param group, device, dtype).

        With found_inf, the step's first launch also writes the step's skip flag, which it
        appends to ``skip_flags``.
        """
        # Imported here, not at the top: fused_ops imports (and runs on the reference)
        # where Triton is not installed.
        from ..kernels import adam as kernels

        tensor_table, program_table, arrivals, aligned = self._tables(index, device, dtype, tensors)
        beta1, beta2 = group["betas"]
        skipped = None
        if found_inf is not None and not skip_flags:
            skipped = torch.empty((), dtype=torch.bool, device=device)
            skip_flags.append(skipped)
        kernels.adam_step(
            tensor_table,
            program_table,
            arrivals,
            tensors[0][0],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            amsgrad=group["amsgrad"],
            maximize=group["maximize"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            grad_scale=_on(grad_scale, device),
            found_inf=_on(found_inf, device),
            skipped=skipped,
            chunk_size=kernels.ADAM_CHUNK_SIZE,
            aligned=aligned,
        )

    def _tables(
        self, index: int, device: torch.device, dtype: torch.dtype, tensors: list[tuple[torch.Tensor, ...]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """(tensor table, program table, arrivals, aligned) for these tensors, reused while no address changes.

        The program table and the arrival counters depend only on how many programs each
        parameter gets, so a new address (a gradient that set_to_none=True reallocated)
        rebuilds just the tensor table: one host-to-device copy, no kernel. The kernel
        leaves the counters at zero, and launches on one stream run in order, so the next
        step can use them as they are.
        """
        from ..kernels import adam as kernels

        rows: list[int] = []
        programs: list[int] = []
        first_program = 0
        for p, g, m, v, vmax, step in tensors:
            rows += kernels.table_row(p, g, m, v, vmax, step, first_program)
            programs.append(kernels.programs_for(p.numel(), kernels.ADAM_CHUNK_SIZE))
            first_program += programs[-1]
        key = (index, device, dtype)
        cached = self._launch_tables.get(key)
        if cached is not None and cached[0] == rows:
            return cached[1:5]
        tensor_table = kernels.host_to_device(
            torch.tensor(rows, dtype=torch.int64).view(len(tensors), kernels.TABLE_COLUMNS), device
        )
        if cached is not None and cached[5] == programs:
            program_table, arrivals = cached[2:4]
        else:
            program_table = kernels.host_to_device(
                torch.repeat_interleave(torch.arange(len(tensors), dtype=torch.int32), torch.tensor(programs)), device
            )
            arrivals = torch.zeros(len(tensors), dtype=torch.int32, device=device)
        tables = (tensor_table, program_table, arrivals, kernels.aligned(rows))
        self._launch_tables[key] = (rows, *tables, programs)
        return tables

    def _reference_step(
        self,
        group: dict[str, Any],
        tensors: list[tuple[torch.Tensor, ...]],
        grad_scale: torch.Tensor | None,
        found_inf: torch.Tensor | None,
    ) -> None:
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = (
            list(column) for column in zip(*tensors, strict=True)
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
        )


def _on(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """GradScaler's scalars as fp32 on the parameters' device (a copy only when they are elsewhere)."""
    if tensor is None:
        return None
    return tensor.to(device=device, dtype=torch.float32, non_blocking=True)


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
        )


class AdamW(_AdamBase):
    """Drop-in for :class:`torch.optim.AdamW`: Adam with decoupled weight decay, fused.

    Takes :class:`Adam`'s arguments except ``decoupled_weight_decay`` (always True), with
    ``weight_decay`` defaulting to 1e-2: each step first scales the parameter by
    ``1 - lr * weight_decay``.

    Example:
        >>> optimizer = fused_ops.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    """

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

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # As torch's AdamW: any state loaded into AdamW decays decoupled.
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
