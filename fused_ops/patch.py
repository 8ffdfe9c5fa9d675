"""``fused_ops.patch()``: make an unmodified model use fused_ops' kernels, with one line.

    >>> with fused_ops.patch(model):
    ...     loss = model(input_ids, labels=labels).loss
    ...     loss.backward()

Two mechanisms, both undone when the ``with`` block ends (or by ``handle.undo()``):

- **Module swaps** (when a model is given): every submodule that computes what a fused
  module computes is replaced by it, with its hooks. Exact torch.nn classes are matched
  by class (the table of :func:`fused_ops.nn.convert`); any other parameterless leaf
  module, such as transformers' ``NewGELUActivation`` or ``SiLUActivation``, is matched by
  what it computes: its ``forward`` runs once on a probe tensor and its output is
  compared with gelu (erf and tanh forms), silu, sigmoid, tanh and relu. This is what
  reaches activations written as formulas inside a class (GPT-2's ``0.5 * x * (1 +
  tanh(...))``), which no function hook can see.
- **A TorchFunctionMode** on the calling thread's mode stack, which reroutes
  ``F.softmax``/``log_softmax``, ``torch.sigmoid``/``tanh``/``relu`` (and the ``Tensor``
  methods and ``torch.softmax``/``log_softmax``), ``F.gelu``, ``F.silu``, ``F.relu``,
  ``F.mse_loss`` and ``F.cross_entropy`` to fused_ops when their arguments are supported,
  and otherwise lets torch run and records why. Nothing in ``torch`` or
  ``torch.nn.functional`` is reassigned: other threads, and this thread after the
  patch ends, see plain torch.

The scope is the ``with`` block, or from ``patch()`` to ``undo()``: the function hook
catches every call that the calling thread makes in between, inside the model or not (the
loss computed next to it too). Backward needs nothing: the fused ops' backward are fused
kernels already.

Host cost: while the function hook is on, every torch call the thread makes (``x.view``,
``a + b``, ...) goes through its Python ``__torch_function__``. Measured with ``timeit`` on
the 2-core development machine (CPU tensors, noisy): about 3-5 µs more per torch call
than without a mode, the same as an empty TorchFunctionMode, so the routing itself adds
next to nothing to the mechanism's own cost. For eager models bound by host time that
matters; ``patch(model, functions=False)`` swaps modules only and adds nothing per call,
and under ``torch.compile`` the mode is traced away (only its guards remain).

``torch.compile`` (checked with torch 2.13 and dynamo's ``aot_eager`` backend, tested):
dynamo traces a TorchFunctionMode that is active when compiled code runs, so a model or
function compiled with ``fullgraph=True`` and called inside a patch runs the fused ops,
with no graph break, and gives the eager patched results. Dynamo guards on the mode stack
and on the modules, so the same compiled object called outside the patch (before it, or
after ``undo()``) recompiles to plain torch, and one compiled before the patch recompiles
with the fused ops inside it. Patches entered one after another around one compiled
function do not each recompile it (four patches gave two graphs in our check).

A dry run (``dry_run=True``) changes nothing: torch computes every result and the
handle's :meth:`Patch.report` lists which call sites would be caught, which would not and
why, with the bytes the caught ones would save.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from . import activations
from . import nn as fused_nn
from ._validation import FLOATING_DTYPES
from .cross_entropy import cross_entropy as _cross_entropy
from .mse import mse_loss as _mse_loss_fn
from .profiling import TorchTrace, minimum_bytes
from .softmax import log_softmax as _log_softmax_fn
from .softmax import softmax as _softmax_fn

OPS = ("sigmoid", "tanh", "relu", "softmax", "log_softmax", "gelu", "silu", "mse_loss", "cross_entropy")
"""The op names that ``ops=`` and ``exclude=`` take."""

_PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)

# How many patch() decisions this thread is inside. While one patch decides a call
# (running fused_ops or torch for it), every torch call beneath it is part of that
# decision: an enclosing patch must not reroute it again, and fused_ops' own code (its
# reference fallback calls torch.softmax, for example) must never come back into a patch.
_state = threading.local()


def _deciding() -> bool:
    return getattr(_state, "depth", 0) > 0


class _Deciding:
    def __enter__(self) -> None:
        _state.depth = getattr(_state, "depth", 0) + 1

    def __exit__(self, *exc_info) -> None:
        _state.depth -= 1


def _check_tensor(input: Any, name: str = "input", check_dtype: bool = True) -> str | None:
    """None when fused_ops takes ``input``; else why not."""
    if not isinstance(input, torch.Tensor):
        return f"{name} is not a tensor"
    if type(input) not in _PLAIN_TENSOR_TYPES:
        return f"{name} is a tensor subclass ({type(input).__name__})"
    if check_dtype and input.dtype not in FLOATING_DTYPES:
        return f"{name} dtype {input.dtype} (fused_ops takes float32, float64, float16 and bfloat16)"
    return None


# A plan binds one torch call's arguments the way torch does and returns either the fused
# call as (function, args, kwargs), or a string saying why fused_ops does not take it.


def _unary(fused: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
    def plan(input, *, out=None):
        if out is not None:
            return "out= argument"
        return _check_tensor(input) or (fused(), (input,), {})

    return plan


def _relu_functional(input, inplace=False):
    return _check_tensor(input) or (activations.relu_ if inplace else activations.relu, (input,), {})


def _relu_inplace(input):
    return _check_tensor(input) or (activations.relu_, (input,), {})


def _softmax_plan(log: bool, input, dim, dtype) -> Any:
    if dim is None:
        return "dim=None (torch's deprecated implicit dim)"
    if not isinstance(dim, int):
        return f"dim={dim!r} (fused_ops takes an int dim)"
    if dtype is not None and dtype not in FLOATING_DTYPES:
        return f"dtype={dtype} (fused_ops takes float32, float64, float16 and bfloat16)"
    # With dtype=, fused_ops casts the input itself, as torch does; without it the input
    # must be a float tensor.
    reason = _check_tensor(input, check_dtype=dtype is None)
    fused = _log_softmax_fn if log else _softmax_fn
    return reason or (fused, (input, dim), {"dtype": dtype})


def _softmax_torch(log: bool) -> Callable[..., Any]:
    # torch.softmax(input, dim, dtype=None) and Tensor.softmax(dim, dtype=None).
    def plan(input, dim, dtype=None, *, out=None):
        return "out= argument" if out is not None else _softmax_plan(log, input, dim, dtype)

    return plan


def _softmax_functional(log: bool) -> Callable[..., Any]:
    # F.softmax(input, dim=None, _stacklevel=3, dtype=None).
    def plan(input, dim=None, _stacklevel=3, dtype=None):
        return _softmax_plan(log, input, dim, dtype)

    return plan


def _gelu(input, approximate="none"):
    if approximate not in ("none", "tanh"):
        return f"approximate={approximate!r} (torch raises its own error)"
    return _check_tensor(input) or (activations.gelu, (input,), {"approximate": approximate})


def _silu(input, inplace=False):
    return _check_tensor(input) or (activations.silu, (input,), {"inplace": inplace})


def _mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    for tensor, name in ((input, "input"), (target, "target")):
        if not isinstance(tensor, torch.Tensor) or type(tensor) not in _PLAIN_TENSOR_TYPES:
            return f"{name} is not a plain tensor"
    if torch.promote_types(input.dtype, target.dtype) not in FLOATING_DTYPES:
        return f"dtypes {input.dtype} and {target.dtype} (fused_ops takes float losses)"
    kwargs = {"size_average": size_average, "reduce": reduce, "reduction": reduction, "weight": weight}
    return (_mse_loss_fn, (input, target), kwargs)


def _cross_entropy_plan(
    input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean", label_smoothing=0.0
):
    reason = _check_tensor(input)
    if reason is None and (not isinstance(target, torch.Tensor) or type(target) not in _PLAIN_TENSOR_TYPES):
        reason = "target is not a plain tensor"
    kwargs = {
        "weight": weight,
        "size_average": size_average,
        "ignore_index": ignore_index,
        "reduce": reduce,
        "reduction": reduction,
        "label_smoothing": label_smoothing,
    }
    return reason or (_cross_entropy, (input, target), kwargs)


@dataclasses.dataclass(frozen=True)
class _Route:
    op: str  # an entry of OPS
    name: str  # how the report names the torch call
    plan: Callable[..., Any]


def _routes() -> dict[Any, _Route]:
    """torch callable (as a TorchFunctionMode receives it) -> its route to fused_ops."""
    table = [
        (torch.sigmoid, "sigmoid", "torch.sigmoid", _unary(lambda: activations.sigmoid)),
        (torch.Tensor.sigmoid, "sigmoid", "Tensor.sigmoid", _unary(lambda: activations.sigmoid)),
        (torch.tanh, "tanh", "torch.tanh", _unary(lambda: activations.tanh)),
        (torch.Tensor.tanh, "tanh", "Tensor.tanh", _unary(lambda: activations.tanh)),
        (torch.relu, "relu", "torch.relu", _unary(lambda: activations.relu)),
        (torch.Tensor.relu, "relu", "Tensor.relu", _unary(lambda: activations.relu)),
        (F.relu, "relu", "F.relu", _relu_functional),
        (torch.relu_, "relu", "torch.relu_", _relu_inplace),
        (torch.Tensor.relu_, "relu", "Tensor.relu_", _relu_inplace),
        (torch.softmax, "softmax", "torch.softmax", _softmax_torch(log=False)),
        (torch.Tensor.softmax, "softmax", "Tensor.softmax", _softmax_torch(log=False)),
        (F.softmax, "softmax", "F.softmax", _softmax_functional(log=False)),
        (torch.log_softmax, "log_softmax", "torch.log_softmax", _softmax_torch(log=True)),
        (torch.Tensor.log_softmax, "log_softmax", "Tensor.log_softmax", _softmax_torch(log=True)),
        (F.log_softmax, "log_softmax", "F.log_softmax", _softmax_functional(log=True)),
        (F.gelu, "gelu", "F.gelu", _gelu),
        (F.silu, "silu", "F.silu", _silu),
        (F.mse_loss, "mse_loss", "F.mse_loss", _mse_loss),
        (F.cross_entropy, "cross_entropy", "F.cross_entropy", _cross_entropy_plan),
    ]
    return {func: _Route(op, name, plan) for func, op, name, plan in table}


_ROUTES = _routes()

# Calls that do what a fused op family does, which patch() leaves to torch: reported by
# a dry run so that the gap is visible, never rerouted.
_NOT_COVERED = {
    F.scaled_dot_product_attention: (
        "F.scaled_dot_product_attention",
        "attention (SDPA) is one torch kernel with its own softmax inside; fused_ops has no attention "
        "kernel (use attn_implementation='eager' to expose the softmax)",
    ),
    torch.sigmoid_: ("torch.sigmoid_", "in-place sigmoid: fused_ops has no in-place sigmoid"),
    torch.Tensor.sigmoid_: ("Tensor.sigmoid_", "in-place sigmoid: fused_ops has no in-place sigmoid"),
    torch.tanh_: ("torch.tanh_", "in-place tanh: fused_ops has no in-place tanh"),
    torch.Tensor.tanh_: ("Tensor.tanh_", "in-place tanh: fused_ops has no in-place tanh"),
    F.nll_loss: ("F.nll_loss", "nll_loss alone: fused_ops fuses log_softmax + nll_loss as cross_entropy only"),
}

# aten ops that do the work of an op family. A dry run reports those that run where
# patch() cannot see them: inside a torch call that it does not reroute (C++ composites
# such as nn.MultiheadAttention's, Python functions of torch that it passes through).
_ATEN_WORK = {
    "_softmax": "softmax",
    "_log_softmax": "log_softmax",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "gelu": "gelu",
    "silu": "silu",
    "mse_loss": "mse_loss",
    "nll_loss_forward": "cross_entropy",
    "nll_loss2d_forward": "cross_entropy",
}

# Fused module class name -> op family, for ops=/exclude= on module swaps.
_MODULE_OPS = {
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "ReLU": "relu",
    "Softmax": "softmax",
    "LogSoftmax": "log_softmax",
    "GELU": "gelu",
    "SiLU": "silu",
    "MSELoss": "mse_loss",
    "CrossEntropyLoss": "cross_entropy",
}


# What a probe compares an unknown activation module with: (op, description, torch's
# function, the fused module that replaces it).
def _probe_targets() -> list[tuple[str, str, Callable, Callable[[], torch.nn.Module]]]:
    return [
        ("gelu", "gelu", F.gelu, lambda: fused_nn.GELU()),
        (
            "gelu",
            "gelu(approximate='tanh')",
            lambda x: F.gelu(x, approximate="tanh"),
            lambda: fused_nn.GELU(approximate="tanh"),
        ),
        ("silu", "silu", F.silu, lambda: fused_nn.SiLU()),
        ("sigmoid", "sigmoid", torch.sigmoid, lambda: fused_nn.Sigmoid()),
        ("tanh", "tanh", torch.tanh, lambda: fused_nn.Tanh()),
        ("relu", "relu", torch.relu, lambda: fused_nn.ReLU()),
    ]


# fp32 agreement a probe needs: a formula of the same function (NewGELUActivation
# against gelu-tanh) differs by about 2e-7; gelu and gelu-tanh differ by 5e-4.
_PROBE_RTOL, _PROBE_ATOL = 1e-5, 1e-5


def _probe_candidate(module: torch.nn.Module) -> bool:
    """Parameterless leaf modules from outside torch.nn, or subclasses of a converted torch.nn class."""
    if module._modules or module._parameters or module._buffers:
        return False
    if any(isinstance(module, cls) for cls in fused_nn._FUSED_COUNTERPARTS):
        return True
    return not type(module).__module__.startswith("torch.")


def _probe(module: torch.nn.Module, ops: frozenset[str]) -> tuple[torch.nn.Module, str] | str | None:
    """Run ``module.forward`` on a probe tensor and match its output with the fused activations.

    ``forward`` is called directly, so the module's hooks do not see the probe; the RNG
    state is restored afterwards, so a probe never shifts the random stream of training.
    """
    # A 2-D probe (so that a module reducing along a dim is told apart): dense over [-8, 8],
    # where the activations differ from one another, plus large magnitudes, where a clipped
    # variant (transformers' ClippedGELUActivation clamps to [-10, 10]) differs from the
    # plain one. A probe tests values, it cannot prove a formula: a module that branches on
    # something else (the input's dtype, a global) could still be mismatched; exclude= or
    # modules=False turn the swap off.
    dense = torch.linspace(-8.0, 8.0, 161, dtype=torch.float32, device="cpu")
    large = torch.tensor([-1e4, -100.0, -30.0, -12.0, 12.0, 30.0, 100.0], device="cpu")
    x = torch.cat([dense, large]).reshape(7, 24)
    original = x.clone()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]), _Deciding():
            y = module.forward(x)
            references = [(op, what, fn(original), make) for op, what, fn, make in _probe_targets()]
    except Exception:  # not a one-tensor module: nothing to match
        return None
    if not isinstance(y, torch.Tensor) or y.shape != x.shape or y.dtype != x.dtype:
        return None
    if not torch.equal(x, original):
        return "writes its input in place (the fused activations do not)"
    closest, closest_error = "", float("inf")
    for op, what, reference, make in references:
        if torch.allclose(y, reference, rtol=_PROBE_RTOL, atol=_PROBE_ATOL):
            if op not in ops:
                return f"computes {what}, excluded by ops=/exclude="
            return make(), f"computes {what} on a probe"
        error = (y - reference).abs().max().item()
        if error < closest_error:
            closest, closest_error = what, error
    return f"computes no fused activation on a probe (closest: {closest}, max error {closest_error:.2g})"


def _match_module(module: torch.nn.Module, ops: frozenset[str]) -> tuple[torch.nn.Module, str] | str | None:
    """patch()'s rule: convert()'s class table, then a probe of parameterless leaf modules."""
    if isinstance(module, fused_nn._Fused):
        return None
    counterpart = fused_nn._FUSED_COUNTERPARTS.get(type(module))
    if counterpart is not None:
        op = _MODULE_OPS[counterpart[0].__name__]
        return fused_nn._match_class(module) if op in ops else None
    if _probe_candidate(module):
        return _probe(module, ops)
    return None


@dataclasses.dataclass
class CallSite:
    """A torch call that patch() saw, summed over every time it ran at one place.

    Attributes:
        where: qualified name of the innermost module of the model that made the call
            (dry runs only; ``"(model)"`` for the model's own forward, ``""`` outside the
            model or when not tracked).
        call: the torch call (``"F.softmax"``, ``"Tensor.tanh"``, ``"aten._softmax"``).
        op: the fused_ops op family it belongs to, or ``None``.
        fused: whether it ran (in a dry run: would run) through fused_ops.
        reason: why not, when not fused.
        count: how many times it ran.
        eager_bytes: dry runs: bytes torch's forward moves, as modeled by
            :class:`fused_ops.profiling.TorchTrace` (on a GPU), summed over the calls.
        eager_kernels: dry runs: the kernels torch's forward launches, same model.
        fused_bytes: dry runs, fused sites: the minimum bytes of the op (each input read
            once, each output written once, :func:`fused_ops.profiling.minimum_bytes`),
            which fused_ops' kernels are tested to stay within 1.05x of.
    """

    where: str
    call: str
    op: str | None
    fused: bool
    reason: str = ""
    count: int = 0
    eager_bytes: int = 0
    eager_kernels: int = 0
    fused_bytes: int = 0

    @property
    def bytes_saved(self) -> int:
        return self.eager_bytes - self.fused_bytes if self.fused else 0


@dataclasses.dataclass
class ModuleSite:
    """A module that patch() replaced (or, in a dry run, would replace), or looked at and left alone."""

    name: str
    module_class: str
    replacement: str | None
    reason: str
    hooks: int = 0
    count: int = 0
    eager_bytes: int = 0
    eager_kernels: int = 0
    fused_bytes: int = 0

    @property
    def bytes_saved(self) -> int:
        return self.eager_bytes - self.fused_bytes if self.replacement else 0


@dataclasses.dataclass
class PatchReport:
    """What a patch did or, for a dry run, would do. ``str(report)`` renders it as text.

    Bytes are forward-pass bytes of dry runs only: torch's are modeled by
    :class:`fused_ops.profiling.TorchTrace` for a GPU, fused_ops' are the minimum.
    """

    dry_run: bool
    modules: list[ModuleSite]
    calls: list[CallSite]

    @property
    def bytes_saved(self) -> int:
        return sum(site.bytes_saved for site in (*self.modules, *self.calls))

    def fused_calls(self) -> list[CallSite]:
        return [site for site in self.calls if site.fused]

    def unfused_calls(self) -> list[CallSite]:
        return [site for site in self.calls if not site.fused]

    def __str__(self) -> str:
        verb = "would replace" if self.dry_run else "replaced"
        lines = []
        swapped = [m for m in self.modules if m.replacement]
        lines.append(f"modules: {verb} {len(swapped)}")
        for m in swapped:
            lines.append(f"  {m.name}: {m.module_class} -> {m.replacement} ({m.reason}){_bytes_text(m)}")
        for m in self.modules:
            if not m.replacement:
                lines.append(f"  left alone {m.name}: {m.module_class}: {m.reason}")
        caught = "would run fused" if self.dry_run else "ran fused"
        lines.append(f"calls that {caught}:")
        lines.extend(f"  {_site_text(c)}{_bytes_text(c)}" for c in self.fused_calls())
        lines.append("calls left to torch:")
        lines.extend(f"  {_site_text(c)}: {c.reason}" for c in self.unfused_calls())
        if not self.unfused_calls():
            lines.append("  (none)")
        if self.dry_run:
            lines.append(
                f"forward bytes saved: {self.bytes_saved:,} (torch modeled by TorchTrace for a GPU, "
                "fused_ops at the minimum; forward only)"
            )
        return "\n".join(lines)


def _site_text(site: CallSite) -> str:
    where = f"{site.where}: " if site.where else ""
    return f"{where}{site.call} x{site.count}"


def _bytes_text(site: CallSite | ModuleSite) -> str:
    if not site.eager_bytes:
        return ""
    return f" [torch {site.eager_bytes:,} B in {site.eager_kernels} kernel(s), fused minimum {site.fused_bytes:,} B]"


def _tensors(values: Iterable[Any]) -> list[torch.Tensor]:
    return [v for v in values if isinstance(v, torch.Tensor)]


class _PatchMode(TorchFunctionMode):
    """Reroutes supported torch calls to fused_ops (or, in a dry run, only records them)."""

    def __init__(self, handle: Patch) -> None:
        super().__init__()
        self.handle = handle

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handle = self.handle
        route = _ROUTES.get(func)
        if route is None or _deciding():
            if handle.dry_run and not _deciding():
                return handle._pass_through(func, args, kwargs)
            return func(*args, **kwargs)
        if handle._suppressed:
            # Inside a module that the patch replaces (dry runs only): the module is the site.
            with _Deciding():
                return func(*args, **kwargs)
        if route.op not in handle.ops:
            plan = "excluded by ops=/exclude="
        else:
            try:
                plan = route.plan(*args, **kwargs)
            except TypeError:
                plan = "arguments torch does not accept (torch raises its own error)"
            if not isinstance(plan, str) and any(t not in _PLAIN_TENSOR_TYPES for t in types):
                plan = "tensor subclass arguments"
        if isinstance(plan, str):
            if not torch.compiler.is_compiling():
                handle._record(route.name, route.op, False, plan)
            with _Deciding():
                return func(*args, **kwargs)
        fused, fused_args, fused_kwargs = plan
        if handle.dry_run:
            with _Deciding(), TorchTrace() as trace:
                out = func(*args, **kwargs)
            fused_bytes = minimum_bytes(_tensors((*fused_args, *fused_kwargs.values())), _tensors([out]))
            handle._record(route.name, route.op, True, "", trace.bytes_moved, trace.kernel_count(), fused_bytes)
            return out
        if not torch.compiler.is_compiling():
            handle._record(route.name, route.op, True, "")
        with _Deciding():
            return fused(*fused_args, **fused_kwargs)


class _AtenWatcher(TorchDispatchMode):
    """Dry runs: records aten ops of an op family that run where the function hook cannot see."""

    def __init__(self, handle: Patch) -> None:
        super().__init__()
        self.handle = handle

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handle = self.handle
        op = _ATEN_WORK.get(func.overloadpacket.__name__) if func.namespace == "aten" else None
        # Inside a call the patch decides (fused or recorded why not) or a module it
        # replaces, the site is already reported; outside the model's forward it is not
        # the model's (backward, for one).
        if op is not None and not _deciding() and not handle._suppressed and handle._in_model():
            inside = handle._outer_calls[-1] if handle._outer_calls else None
            reason = (
                f"runs inside {inside}, which patch() does not reroute"
                if inside
                else "runs in C++ beneath a call patch() cannot see"
            )
            handle._record(f"aten.{func.overloadpacket.__name__}", op, False, reason)
        return func(*args, **kwargs)


def _call_name(func: Any) -> str:
    module = getattr(func, "__module__", None) or ""
    name = getattr(func, "__name__", repr(func))
    if module.startswith("torch.nn.functional") or module == "torch._C._nn":
        return f"F.{name}"
    if isinstance(func, type(torch.Tensor.add)) or module == "":
        return f"Tensor.{name}"
    return f"{module.replace('torch._C._VariableFunctions', 'torch')}.{name}" if module else name


def _active_patch_modes() -> list[_PatchMode]:
    return [mode for mode in torch.overrides._get_current_function_mode_stack() if isinstance(mode, _PatchMode)]


def _remove_function_mode(mode: TorchFunctionMode) -> None:
    """Pop ``mode`` from this thread's stack even when others were pushed after it."""
    above = []
    while True:
        top = torch._C._pop_torch_function_stack()
        if top is mode:
            break
        above.append(top)
    for other in reversed(above):
        torch._C._push_on_torch_function_stack(other)


class Patch:
    """The handle :func:`patch` returns: a context manager, with :meth:`undo` and :meth:`report`.

    Attributes:
        model: the patched model (``None`` for a functions-only patch).
        ops: the op families rerouted.
        dry_run: whether this patch only records.
        active: ``True`` until :meth:`undo`.
        replaced: the module replacements made (:class:`fused_ops.nn.Replacement`).
    """

    def __init__(
        self,
        model: torch.nn.Module | None,
        ops: frozenset[str],
        *,
        modules: bool,
        functions: bool,
        dry_run: bool,
    ) -> None:
        self.model = model
        self.ops = ops
        self.dry_run = dry_run
        self.active = True
        self.replaced: list[fused_nn.Replacement] = []
        self._module_sites: dict[int, ModuleSite] = {}
        self._call_sites: dict[tuple[str, str, bool, str], CallSite] = {}
        self._mode: _PatchMode | None = None
        self._watcher: _AtenWatcher | None = None
        self._hooks: list[Any] = []
        self._names: dict[int, str] = {}
        self._module_stack: list[str] = []
        self._outer_calls: list[str] = []
        self._suppressed = 0
        self._traces: list[TorchTrace] = []
        self._owner = threading.get_ident()
        if model is not None and modules:
            self._swap_modules(model)
        if functions:
            self._push_mode()
        if dry_run and model is not None:
            self._track_model(model)

    def _swap_modules(self, model: torch.nn.Module) -> None:
        def match(module):
            return None if module is model else _match_module(module, self.ops)

        if self.dry_run:
            for name, module in model.named_modules():
                matched = match(module)
                if matched is None:
                    continue
                if isinstance(matched, tuple):
                    replacement, why = matched
                    site = ModuleSite(name, type(module).__qualname__, replacement._get_name(), why)
                else:
                    site = ModuleSite(name, type(module).__qualname__, None, matched)
                self._module_sites[id(module)] = site
            return
        report = fused_nn.replace_modules(model, match)
        self.replaced = report.replaced
        for r in report.replaced:
            self._module_sites[id(r.replacement)] = ModuleSite(
                r.name, type(r.original).__qualname__, r.replacement._get_name(), r.matched, r.hooks
            )
        for s in report.skipped:
            self._module_sites[id(s.module)] = ModuleSite(s.name, type(s.module).__qualname__, None, s.reason)

    def _push_mode(self) -> None:
        # Idempotent: an enclosing patch with the same ops and mode already does the work.
        for mode in _active_patch_modes():
            if mode.handle.ops == self.ops and mode.handle.dry_run == self.dry_run:
                return
        self._mode = _PatchMode(self)
        self._mode.__enter__()
        if self.dry_run:
            self._watcher = _AtenWatcher(self)
            self._watcher.__enter__()

    def _track_model(self, model: torch.nn.Module) -> None:
        # Dry runs name each call site after the innermost module that makes it, and measure
        # the modules the patch would replace, from global forward hooks on the model's modules.
        self._names = {id(m): name or "(model)" for name, m in model.named_modules(remove_duplicate=False)}

        def pre_hook(module, args):
            name = self._names.get(id(module))
            if name is None:
                return
            self._module_stack.append(name)
            site = self._module_sites.get(id(module))
            if site is not None and site.replacement:
                self._suppressed += 1
                trace = TorchTrace()
                trace.__enter__()
                self._traces.append(trace)
                site.fused_bytes += minimum_bytes(_tensors(args), [])

        def post_hook(module, args, output):
            name = self._names.get(id(module))
            if name is None:
                return
            self._module_stack.pop()
            site = self._module_sites.get(id(module))
            if site is not None and site.replacement:
                self._suppressed -= 1
                trace = self._traces.pop()
                trace.__exit__(None, None, None)
                site.count += 1
                site.eager_bytes += trace.bytes_moved
                site.eager_kernels += trace.kernel_count()
                site.fused_bytes += minimum_bytes([], _tensors([output]))

        self._hooks.append(torch.nn.modules.module.register_module_forward_pre_hook(pre_hook))
        self._hooks.append(torch.nn.modules.module.register_module_forward_hook(post_hook, always_call=True))

    def _in_model(self) -> bool:
        return self.model is None or bool(self._module_stack)

    def _where(self) -> str:
        return self._module_stack[-1] if self._module_stack else ""

    def _record(
        self,
        call: str,
        op: str | None,
        fused: bool,
        reason: str,
        eager_bytes: int = 0,
        eager_kernels: int = 0,
        fused_bytes: int = 0,
    ) -> None:
        key = (self._where(), call, fused, reason)
        site = self._call_sites.get(key)
        if site is None:
            site = self._call_sites[key] = CallSite(self._where(), call, op, fused, reason)
        site.count += 1
        site.eager_bytes += eager_bytes
        site.eager_kernels += eager_kernels
        site.fused_bytes += fused_bytes

    def _pass_through(self, func, args, kwargs):
        """Dry runs: a call with no route. Report the known gaps; name the call for the aten watcher."""
        if self._suppressed:
            return func(*args, **kwargs)
        gap = _NOT_COVERED.get(func)
        if gap is not None and self._in_model():
            self._record(gap[0], None, False, gap[1])
        self._outer_calls.append(gap[0] if gap else _call_name(func))
        try:
            return func(*args, **kwargs)
        finally:
            self._outer_calls.pop()

    def report(self) -> PatchReport:
        """What this patch replaced and rerouted so far (in a dry run: would have).

        Calls are recorded in eager mode; calls traced by torch.compile are not counted.
        """
        return PatchReport(self.dry_run, list(self._module_sites.values()), list(self._call_sites.values()))

    def undo(self) -> None:
        """Put back the original modules (the same objects, with their hooks) and end the function hook.

        Idempotent. A module that was replaced again since the patch is left as it is, with a warning.
        """
        if not self.active:
            return
        if (self._mode is not None or self._watcher is not None) and threading.get_ident() != self._owner:
            # Mode stacks are per thread: only the patching thread's stack holds them.
            raise RuntimeError("fused_ops.patch: undo() must run on the thread that called patch()")
        self.active = False
        for hook in self._hooks:
            hook.remove()
        while self._traces:
            self._traces.pop().__exit__(None, None, None)
        if self._watcher is not None:
            _remove_dispatch_mode(self._watcher)
        if self._mode is not None:
            _remove_function_mode(self._mode)
        for r in reversed(self.replaced):
            for parent, key in r.sites:
                if parent._modules.get(key) is r.replacement:
                    setattr(parent, key, r.original)
                else:
                    warnings.warn(f"fused_ops.patch: {r.name} was changed after the patch; left as it is", stacklevel=2)

    def __enter__(self) -> Patch:
        return self

    def __exit__(self, *exc_info) -> None:
        self.undo()


def _remove_dispatch_mode(mode: TorchDispatchMode) -> None:
    from torch.utils._python_dispatch import _pop_mode, _push_mode

    above = []
    while True:
        top = _pop_mode()
        if top is mode:
            break
        above.append(top)
    for other in reversed(above):
        _push_mode(other)


def patch(
    model: torch.nn.Module | None = None,
    *,
    ops: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    modules: bool = True,
    functions: bool = True,
    dry_run: bool = False,
) -> Patch:
    """Make ``model`` (and every torch call this thread makes) use fused_ops, until undone.

    Args:
        model: replace its submodules that compute what a fused module computes (by class,
            or for parameterless leaf modules such as transformers' activations, by running
            them on a probe tensor). ``None``: functions only.
        ops: the op families to reroute (default: all of :data:`OPS`).
        exclude: op families not to reroute (per-op opt-out).
        modules: swap modules (needs ``model``).
        functions: reroute torch calls (``F.softmax``, ``torch.tanh``, ``Tensor.relu``,
            ``F.gelu``, ``F.silu``, ``F.mse_loss``, ``F.cross_entropy``, ...) with a
            TorchFunctionMode on this thread.
        dry_run: change nothing; record what would be rerouted, what would not and why,
            and the bytes saved (see :meth:`Patch.report`).

    Returns:
        A :class:`Patch`: use it as a context manager, or call ``undo()``. Patching again
        with the same options inside a patch changes nothing (the inner handle relies on
        the outer one, and its ``undo()`` does nothing); a nested patch with other options
        decides the calls made inside it (its exclusions hold there), while modules that
        an enclosing patch swapped stay swapped until that patch ends.

    Example:
        >>> with fused_ops.patch(model, exclude=["softmax"]):
        ...     loss = model(input_ids, labels=labels).loss
        >>> with fused_ops.patch(model, dry_run=True) as dry:
        ...     model(input_ids)
        >>> print(dry.report())
    """
    chosen = frozenset(OPS if ops is None else ops)
    excluded = frozenset(exclude)
    unknown = (chosen | excluded) - set(OPS)
    if unknown:
        raise ValueError(f"fused_ops.patch: unknown op(s) {sorted(unknown)}; the ops are {', '.join(OPS)}")
    return Patch(model, chosen - excluded, modules=modules, functions=functions, dry_run=dry_run)
