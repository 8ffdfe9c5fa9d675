"""The base of the fused optimizers: lazy state, launch tables cached between steps, GradScaler, clipping.

Every fused optimizer (Adam, AdamW, SGD) updates all parameters of one (device, dtype)
in ONE kernel launch, across param groups: the kernel reads each parameter's addresses
from a tensor table, its gradient's from a grad table and its group's hyperparameters
from a small group table (see kernels/adam.py). This module builds those tables once,
keeps them on the device between steps, and on each step only checks, without
per-parameter Python beyond a few C-level ``map`` calls, that nothing moved:

- same parameters in the groups, same parameters with a gradient, same state object;
- same parameter addresses (``p.data = ...`` moves one);
- same gradient addresses. New gradient tensors (``zero_grad(set_to_none=True)``, the
  default) only rebuild the grad table: one list of addresses and one host-to-device copy.

A family subclass says how to create its state (:meth:`_FusedOptimizer._state_row`), how
to encode a group (:meth:`_FusedOptimizer._group_row`), and how to launch
(:meth:`_FusedOptimizer._launch`) or run its eager reference
(:meth:`_FusedOptimizer._reference_step`).
"""

from __future__ import annotations

import array
import itertools
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .._dispatch import use_triton
from .._validation import is_dense

if TYPE_CHECKING:
    from ..kernels._optim_common import TableLayout

try:
    from torch.distributed.tensor import DTensor as _DTensor
except ImportError:  # torch built without distributed
    _DTensor = None

_GRAD = operator.attrgetter("grad")
_DATA_PTR = torch.Tensor.data_ptr
_STRIDE = torch.Tensor.stride
_IS_CONTIGUOUS = torch.Tensor.is_contiguous
_IS_NEG = torch.Tensor.is_neg

_COMPILE_MESSAGE = (
    "fused_ops.optim optimizers launch their Triton kernel from launch tables cached in Python, "
    "which torch.compile does not trace. Compile the model's forward and backward only and "
    "call optimizer.step() outside the compiled function (or torch.compile(..., fullgraph=False)); "
    "for a step inside the graph use torch.optim with fused=True."
)


def to_scalar(value: float | torch.Tensor) -> float | torch.Tensor:
    """A 1-element tensor hyperparameter as a 0-d tensor, anything else unchanged (torch's rule)."""
    if isinstance(value, torch.Tensor) and value.dim() != 0:
        return value.reshape(())
    return value


def local(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor a kernel can address: a DTensor's local shard (FSDP2), else the tensor."""
    if _DTensor is not None and isinstance(tensor, _DTensor):
        # Under no_grad, to_local() is the shard itself, so the kernel updates it in place.
        return tensor.to_local()
    return tensor


def real(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """Complex tensors as their real view: the updates are elementwise on real and imaginary parts."""
    if tensor is not None and tensor.is_complex():
        return torch.view_as_real(tensor)
    return tensor


def on_device(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """GradScaler's scalars as fp32 on the parameters' device (a copy only when they are elsewhere)."""
    if tensor is None:
        return None
    return tensor.to(device=device, dtype=torch.float32, non_blocking=True)


def hyperparameter_address(value: torch.Tensor, device: torch.device) -> tuple[int, bool, torch.Tensor]:
    """(address, is_fp64, tensor) of a tensor hyperparameter, as the kernel reads it on ``device``.

    An fp32 or fp64 tensor already there is used as it is (no copy, no kernel), so a
    scheduler that updates it in place reaches the kernel without a host sync; anything
    else is copied to fp32 on the device. Keep the returned tensor alive until the launch.
    """
    dtype = torch.float64 if value.dtype == torch.float64 else torch.float32
    tensor = value.to(device=device, dtype=dtype, non_blocking=True)
    return tensor.data_ptr(), dtype == torch.float64, tensor


def encode_hyperparameter(
    value: float | torch.Tensor, device: torch.device, keepalive: list[torch.Tensor]
) -> tuple[float, int, bool]:
    """A float-or-tensor hyperparameter as a group-table row holds it: ``(float, address, is_fp64)``.

    A float is ``(value, 0, False)``; a tensor is ``(0.0, address, is_fp64)`` of its copy
    on ``device`` (see :func:`hyperparameter_address`), which is appended to ``keepalive``.
    """
    if not isinstance(value, torch.Tensor):
        return value, 0, False
    address, fp64, tensor = hyperparameter_address(value, device)
    keepalive.append(tensor)
    return 0.0, address, fp64


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small host tensor to ``device`` without waiting for the GPU.

    A blocking copy (``.to(device)``) synchronizes with the stream; from pinned memory a
    non-blocking copy does not, and torch's pinned-memory allocator keeps the source
    alive until the copy has run.
    """
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def _int64_tensor(values: list[int]) -> torch.Tensor:
    """A CPU int64 tensor of ``values``: through an array, 4x cheaper than torch.tensor(list)."""
    # The tensor shares the array's memory and keeps it alive (frombuffer holds the buffer).
    return torch.frombuffer(array.array("q", values), dtype=torch.int64)


def _holds_tensor(value: Any) -> bool:
    """True for a tensor hyperparameter, or a tuple of them (betas)."""
    return isinstance(value, torch.Tensor) or (isinstance(value, tuple) and any(map(_holds_tensor, value)))


def _misaligned(addresses: list[int]) -> bool:
    """True when some address is not a multiple of 16 bytes (C-level loop, no Python per address)."""
    return any(map((15).__and__, addresses))


class Plan:
    """The cached launch tables of one (device, dtype): every parameter of it, across groups.

    Attributes:
        device, dtype: of the parameters (the real dtype for complex ones).
        positions: index of each row's parameter in the optimizer's flat parameter list.
        params: the parameters themselves (the objects whose ``.grad`` is read).
        groups: the param-group index of each row.
        group_indices: the groups that have rows here, in order (the group table's rows).
        param_ptrs, grad_ptrs, grad_strides: what the tables were built from.
        all_positions: the rows are the optimizer's flat parameter list, in order (the
            step then reads the gradients without picking this plan's out).
        contiguous: every parameter is contiguous (new gradients then need only
            ``is_contiguous()``, a cached flag, instead of a stride comparison).
        fast: the tables can be revalidated with addresses only (no DTensor, complex or
            gradient that needed a layout copy).
        rows: per-row state as the family built it (its tensor-table rows, as a list).
        tensor_table, grad_table, program_table, arrivals: the device tables.
        group_values, group_table, group_keepalive: the group table and what it came from.
        group_snapshot: the groups' values when they were last encoded (None: encode again).
        aligned_static, aligned_grads: 16-byte alignment of the state and grad addresses.
        element: a tensor of the bucket's dtype on its device (the kernel's pointer type).
        keepalive: tensors the tables point to that nothing else holds (gradient copies).
    """

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype
        self.positions: list[int] = []
        self.params: list[torch.Tensor] = []
        self.groups: list[int] = []
        self.views: list[tuple[torch.Tensor, ...]] = []
        self.param_ptrs: list[int] = []
        self.grad_ptrs: list[int] = []
        self.grad_strides: list[tuple[int, ...]] = []
        self.fast = True
        self.all_positions = False
        self.contiguous = False
        self.group_indices: list[int] = []
        self.tensor_table: torch.Tensor | None = None
        self.grad_table: torch.Tensor | None = None
        self.program_table: torch.Tensor | None = None
        self.arrivals: torch.Tensor | None = None
        self.group_values: list[Any] | None = None
        self.group_table: torch.Tensor | None = None
        self.group_keepalive: list[torch.Tensor] = []
        self.group_snapshot: list[Any] | None = None
        self.any_flags: dict[str, bool] = {}
        self.aligned_static = True
        self.aligned_grads = True
        self.element: torch.Tensor | None = None
        self.keepalive: list[torch.Tensor] = []
        self.extra: dict[str, Any] = {}

    @property
    def aligned(self) -> bool:
        return self.aligned_static and self.aligned_grads


class _Cache:
    """What the plans were built from, so that a step can tell whether they still hold."""

    def __init__(self) -> None:
        self.param_ids: list[int] = []
        self.has_grad: list[bool] = []
        self.all_grads = False
        self.state_id = 0
        self.state_len = 0
        self.plans: list[Plan] = []
        # (group index, rows of per-parameter tensors) that the eager reference steps.
        self.eager: list[tuple[int, list[tuple[torch.Tensor, ...]]]] = []
        self.fast = True


class FusedOptimizer(torch.optim.Optimizer):
    """Lazy state, cached launch tables, GradScaler and clip coefficients for the fused optimizers.

    Attributes:
        last_step_skipped: 0-d bool tensor, True when the last :meth:`step` was skipped
            because GradScaler found an inf/NaN gradient (``found_inf``). It stays on the
            device, so reading it is the caller's choice of when to sync; LR schedulers
            stepped unconditionally otherwise advance on skipped steps, as with torch::

                scaler.step(optimizer)
                scaler.update()
                if not optimizer.last_step_skipped:  # reading it waits for the GPU
                    scheduler.step()
        plan_builds: how many times the launch tables were rebuilt from the parameters
            (per-parameter Python work); a step whose tensors did not move adds nothing.
    """

    # GradScaler then hands us grad_scale and found_inf instead of unscaling the grads
    # itself and skipping step() on the host (which needs a sync).
    _step_supports_amp_scaling = True
    # The name of the kernel family, for the dispatch decision and its log line.
    _family = ""
    # State keys that a loaded state must have (besides the family's own checks).
    _optional_flags: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)
        self._reset_plans()
        self._not_skipped = torch.tensor(False)
        self.last_step_skipped = self._not_skipped
        self.plan_builds = 0

    def _reset_plans(self) -> None:
        self._cache: _Cache | None = None
        # The clip coefficient the next step applies (see clip_grad_norm_), per device.
        self._pending_clip: dict[torch.device, torch.Tensor] | None = None
        # The norm kernel's arrival counter per device, which its last program leaves at 0.
        self._clip_arrivals: dict[torch.device, torch.Tensor] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # load_state_dict() and unpickling both end here, before anything is replaced, so
        # a state that cannot be used is refused while the optimizer is still intact.
        self._check_loaded_state(state)
        super().__setstate__(state)
        for group in self.param_groups:
            for flag, default in self._optional_flags.items():
                group.setdefault(flag, default)
        self._after_load()
        self._reset_plans()
        if "_not_skipped" not in self.__dict__:
            self._not_skipped = torch.tensor(False)
        if "last_step_skipped" not in self.__dict__:
            self.last_step_skipped = self._not_skipped
        if "plan_builds" not in self.__dict__:
            self.plan_builds = 0

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        # Device tables are rebuilt after a copy: they point at the original's tensors.
        return {key: value for key, value in state.items() if key not in ("_cache", "_pending_clip", "_clip_arrivals")}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group (torch's checks and defaults); its parameters join the same launches."""
        super().add_param_group(param_group)
        self._cache = None

    def _check_loaded_state(self, state: dict[str, Any]) -> None:
        """Refuse a loaded state the kernel cannot use (families override)."""

    def _after_load(self) -> None:
        """Bring loaded state tensors into the form the kernel reads (families override)."""

    def _state_row(self, group: dict[str, Any], p: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """The state tensors of ``p`` that the kernel reads, created on first use (families override)."""
        raise NotImplementedError

    @torch.compiler.disable(reason=_COMPILE_MESSAGE)
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform a single optimization step: one kernel launch per (device, dtype).

        Parameters that the kernel cannot address (sparse gradients, layouts with gaps)
        take the family's eager reference step after the launches.

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
        clip = self._pending_clip
        self._pending_clip = None
        cache = self._current_cache()
        # The first kernel launch stores found_inf != 0 here, saving a launch of its own.
        skip_flags: list[torch.Tensor] = []
        for plan in cache.plans:
            self._refresh_group_table(plan)
            skipped = None
            if found_inf is not None and not skip_flags:
                skipped = torch.empty((), dtype=torch.bool, device=plan.device)
                skip_flags.append(skipped)
            self._launch(
                plan,
                on_device(grad_scale, plan.device),
                on_device(found_inf, plan.device),
                None if clip is None else clip[plan.device],
                skipped,
            )
        for index, rows in cache.eager:
            group_clip = None if clip is None else clip.get(rows[0][0].device)
            self._reference_step(self.param_groups[index], rows, grad_scale, found_inf, group_clip)
        if not cache.fast:
            # Gradients were copied or viewed for this step only: look again next step.
            self._cache = None
        if found_inf is None:
            # No step is skipped: one host constant per optimizer, not a tensor per step.
            self.last_step_skipped = self._not_skipped
        else:
            self.last_step_skipped = skip_flags[0] if skip_flags else found_inf != 0
        return loss

    def _flat_params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _current_cache(self) -> _Cache:
        """The plans for this step: the cached ones when nothing moved, else rebuilt."""
        cache = self._cache
        params = self._flat_params()
        grads = list(map(_GRAD, params))
        if (
            cache is None
            or not cache.fast
            or list(map(id, params)) != cache.param_ids
            or id(self.state) != cache.state_id
            or len(self.state) != cache.state_len
        ):
            return self._build(params, grads)
        if not cache.all_grads and [g is not None for g in grads] != cache.has_grad:
            return self._build(params, grads)
        for plan in cache.plans:
            plan_grads = grads if plan.all_positions else [grads[i] for i in plan.positions]
            try:
                # One C-level pass per column. With every parameter holding a gradient last
                # time, a None here raises TypeError: no separate pass looks for it.
                grad_ptrs = list(map(_DATA_PTR, plan_grads))
            except TypeError:
                return self._build(params, grads)
            if list(map(_DATA_PTR, plan.params)) != plan.param_ptrs or not use_triton(self._family, plan.element):
                return self._build(params, grads)
            if grad_ptrs != plan.grad_ptrs:
                # New gradient tensors. torch's .grad setter already checked that each has
                # its parameter's shape, dtype and device; only the layout can differ, and
                # a wrong one would make the kernel read the wrong elements. Contiguous
                # parameters (the usual case) need contiguous gradients: one cached flag
                # each, read in C; other layouts compare strides.
                try:
                    if plan.contiguous:
                        same_layout = all(map(_IS_CONTIGUOUS, plan_grads))
                    else:
                        same_layout = list(map(_STRIDE, plan_grads)) == plan.grad_strides
                    same_layout = same_layout and not any(map(_IS_NEG, plan_grads))
                except RuntimeError:  # a sparse gradient has no strides: the build raises torch's error
                    return self._build(params, grads)
                if not same_layout:
                    return self._build(params, grads)
                # Only gradient addresses moved: one new grad table, nothing else.
                plan.grad_ptrs = grad_ptrs
                plan.grad_table = host_to_device(_int64_tensor(grad_ptrs), plan.device)
                plan.aligned_grads = not _misaligned(grad_ptrs)
        return cache

    def _build(self, params: list[torch.Tensor], grads: list[torch.Tensor | None]) -> _Cache:
        """Rebuild every plan from the param groups: the per-parameter Python path."""
        self.plan_builds += 1
        cache = _Cache()
        cache.param_ids = list(map(id, params))
        cache.has_grad = [g is not None for g in grads]
        cache.all_grads = all(cache.has_grad)
        plans: dict[tuple[torch.device, torch.dtype, Any], Plan] = {}
        eager: dict[int, list[tuple[torch.Tensor, ...]]] = {}
        position = 0
        for index, group in enumerate(self.param_groups):
            for p in group["params"]:
                g = grads[position]
                position += 1
                if g is None:
                    continue
                sparse = g.is_sparse
                if sparse:
                    self._sparse_gradient(group, p)
                state_row = self._state_row(group, p)
                views = [real(local(t)) if t is not None else None for t in (p, g, *state_row)]
                p_view, g_view, *state_views = views
                fast = p_view is p and g_view is g
                dense = is_dense(p_view) and all(
                    t.stride() == p_view.stride() for t in state_views if t is not None and t.shape == p_view.shape
                )
                if sparse or not dense or not use_triton(self._family, p_view):
                    # A parameter with gaps (a slice), whose zeros_like state is contiguous, or a
                    # loaded state in another layout than its parameter: the reference walks
                    # any strides, the kernel only one shared dense layout.
                    eager.setdefault(index, []).append(tuple(views))
                    # The rows hold this step's gradients: build them again next step.
                    cache.fast = False
                    continue
                if g_view.stride() != p_view.stride() or g_view.is_neg():
                    # A gradient assigned in another layout (or a lazily negated view, whose
                    # memory holds -g): one copy into the parameter's layout, per step.
                    g_view = torch.empty_like(p_view).copy_(g_view)
                    fast = False
                key = (p_view.device, p_view.dtype, self._plan_variant(group, p_view))
                plan = plans.get(key)
                if plan is None:
                    plan = plans[key] = Plan(p_view.device, p_view.dtype)
                    plan.element = p_view
                plan.positions.append(position - 1)
                plan.params.append(p)
                plan.groups.append(index)
                plan.views.append((p_view, g_view, *state_views))
                plan.fast &= fast
        for plan in plans.values():
            plan.all_positions = plan.positions == list(range(len(params)))
            self._build_tables(plan)
            cache.fast &= plan.fast
        cache.plans = list(plans.values())
        cache.eager = list(eager.items())
        cache.state_id, cache.state_len = id(self.state), len(self.state)
        self._cache = cache
        return cache

    def _build_tables(self, plan: Plan) -> None:
        """The plan's device tables from its rows (families fill the tensor table)."""
        plan.param_ptrs = [p.data_ptr() for p in plan.params]
        grad_views = [views[1] for views in plan.views]
        plan.grad_ptrs = [g.data_ptr() for g in grad_views]
        plan.grad_strides = [p.grad.stride() for p in plan.params] if plan.fast else []
        plan.contiguous = all(p.is_contiguous() for p in plan.params)
        plan.grad_table = host_to_device(_int64_tensor(plan.grad_ptrs), plan.device)
        plan.aligned_grads = not _misaligned(plan.grad_ptrs)
        plan.keepalive = grad_views
        plan.group_indices = sorted(set(plan.groups))
        self._build_tensor_table(plan)
        plan.group_values = None

    def _build_tensor_table(self, plan: Plan) -> None:
        """The plan's tensor table, program table and arrival counters (families override).

        A family lays its rows out with :meth:`_program_layout` and installs them with
        :meth:`_set_tensor_table`.
        """
        raise NotImplementedError

    @staticmethod
    def _program_layout(plan: Plan, chunk_size: int) -> tuple[list[int], list[int], list[int]]:
        """Per row of the plan: its program count, its first program and its row of the group table.

        Every parameter gets one program per ``chunk_size`` elements, and at least one (an
        empty parameter's step still counts); its programs follow the previous row's.
        """
        from ..kernels._optim_common import programs_for

        programs = [programs_for(views[0].numel(), chunk_size) for views in plan.views]
        first_programs = list(itertools.accumulate(programs, initial=0))[:-1]
        group_rows = [plan.group_indices.index(index) for index in plan.groups]
        return programs, first_programs, group_rows

    @staticmethod
    def _set_tensor_table(
        plan: Plan, rows: list[int], programs: list[int], layout: TableLayout, chunk_size: int
    ) -> None:
        """Copy a family's tensor table to the device, with the program table and arrival counters.

        Args:
            plan: the plan whose tables these are.
            rows: the tensor table, row after row, as one flat list of int64s.
            programs: each row's program count (from :meth:`_program_layout`).
            layout: the family's table layout (its kernels module's ``TABLE_LAYOUT``).
            chunk_size: elements per program, the one given to :meth:`_program_layout`.
        """
        n = len(programs)
        plan.tensor_table = host_to_device(torch.tensor(rows, dtype=torch.int64).view(n, layout.columns), plan.device)
        plan.program_table = host_to_device(
            torch.repeat_interleave(torch.arange(n, dtype=torch.int32), torch.tensor(programs)), plan.device
        )
        plan.arrivals = torch.zeros(n, dtype=torch.int32, device=plan.device)
        plan.aligned_static = bool(layout.aligned_columns) and all(
            rows[start + column] % 16 == 0
            for start in range(0, len(rows), layout.columns)
            for column in layout.aligned_columns
        )
        # The clip's norm pass reads each row's element count and first program.
        plan.extra["norm_columns"] = (layout.columns, layout.numel, layout.first_program)
        plan.extra["chunk_size"] = chunk_size

    def _refresh_group_table(self, plan: Plan) -> None:
        """Re-encode the plan's groups; copy the group table to the device only if a value changed.

        When the groups hold the very same objects as at the last encoding (a scheduler that
        changes lr assigns a new float), nothing is encoded: identity, checked in C, cannot
        be fooled by a reused address, since the snapshot keeps the old objects alive.
        Groups with tensor hyperparameters are encoded every step, because a tensor's
        device copy (a CPU lr for CUDA parameters) must follow in-place changes.
        """
        groups = [self.param_groups[index] for index in plan.group_indices]
        snapshot = [value for group in groups for value in group.values()]
        previous = plan.group_snapshot
        if previous is not None and len(previous) == len(snapshot) and all(map(operator.is_, snapshot, previous)):
            return
        values = []
        keepalive: list[torch.Tensor] = []
        for group in groups:
            values.append(self._group_row(group, plan.device, keepalive))
        plan.group_snapshot = None if any(map(_holds_tensor, snapshot)) else snapshot
        if values != plan.group_values:
            plan.group_values = values
            plan.group_table = host_to_device(torch.tensor(values, dtype=torch.int64), plan.device)
            plan.group_keepalive = keepalive
            self._group_flags(plan)

    def _group_row(self, group: dict[str, Any], device: torch.device, keepalive: list[torch.Tensor]) -> list[int]:
        raise NotImplementedError

    def _group_flags(self, plan: Plan) -> None:
        """Launch-wide specializations derived from the group rows (families override)."""

    def _plan_variant(self, group: dict[str, Any], p: torch.Tensor) -> Any:
        """What else than (device, dtype) separates launches (Adam: the moments' dtype)."""
        return None

    def _sparse_gradient(self, group: dict[str, Any], p: torch.Tensor) -> None:
        """Raise torch's error for a sparse gradient, or return to step it on the eager reference."""
        raise NotImplementedError

    def _launch(
        self,
        plan: Plan,
        grad_scale: torch.Tensor | None,
        found_inf: torch.Tensor | None,
        clip_coef: torch.Tensor | None,
        skipped: torch.Tensor | None,
    ) -> None:
        """One kernel launch for the plan's (device, dtype), every param group in it (families override).

        ``grad_scale``, ``found_inf``: GradScaler's, on the plan's device; ``clip_coef``: the
        pending clip coefficient there; ``skipped``: the step's 0-d bool skip flag, for the
        kernel to write from found_inf (only the step's first launch gets one), or None.
        """
        raise NotImplementedError

    def _reference_step(
        self,
        group: dict[str, Any],
        rows: list[tuple[torch.Tensor, ...]],
        grad_scale: torch.Tensor | None,
        found_inf: torch.Tensor | None,
        clip_coef: torch.Tensor | None,
    ) -> None:
        raise NotImplementedError

    def _group_position(self, plan: Plan, index: int) -> int:
        """The row of param group ``index`` in the plan's group table."""
        return plan.group_indices.index(index)

    def clip_grad_norm_(
        self, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False, *, scaler: Any = None
    ) -> torch.Tensor:
        """Compute the gradients' total norm now; the next :meth:`step` scales them as it reads them.

        The fused form of ``torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)``
        followed by ``step()``, over this optimizer's parameters. One norm pass per
        (device, dtype) reads each gradient once (4 B per fp32 parameter) and leaves the
        clip coefficient ``min(max_norm / (total_norm + 1e-6), 1)`` on the device; the
        next step multiplies each gradient by it as it loads it. So clip + AdamW moves 32 B
        per fp32 parameter in 2 launches (torch: 40 B and 8+ launches), clip + SGD with
        momentum 24 B.

        The one difference from torch's: the gradients are NOT rewritten. ``p.grad`` keeps
        its unclipped values; only the update uses the clipped ones. Call it after
        ``backward()`` and before ``step()``, every step you want clipped.

        Args:
            max_norm (float): max norm of the gradients.
            norm_type (float): 1, 2, inf or any p > 0 (default: 2.0).
            error_if_nonfinite (bool): raise if the total norm is nan or inf (this reads
                the norm on the host: a sync, as in torch).
            scaler (torch.amp.GradScaler, optional): the scaler whose scaled gradients
                these are (``scaler.scale(loss).backward()`` without ``unscale_``): the norm
                is then that of the unscaled gradients, and ``scaler.step(optimizer)``
                unscales and skips on inf inside the step kernel.

        Returns:
            The total norm of the (unscaled) gradients, a 0-d tensor on the first
            parameter's device.

        Example:
            >>> loss.backward()
            >>> optimizer.clip_grad_norm_(1.0)
            >>> optimizer.step()
        """
        from .clip_grad_norm import check_finite, fused_norm

        cache = self._current_cache()
        grad_scale = None if scaler is None or not scaler.is_enabled() else scaler._get_scale_async()
        total_norm, coefficients = fused_norm(self, cache, float(max_norm), float(norm_type), grad_scale)
        if error_if_nonfinite:
            check_finite(total_norm, float(norm_type))
        self._pending_clip = coefficients
        return total_norm
