"""``torch.nn`` modules backed by fused_ops, with torch.nn's constructor arguments."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch

from . import activations, mse
from . import softmax as _softmax
from .cross_entropy import cross_entropy as _cross_entropy_fn
from .linear_cross_entropy import linear_cross_entropy as _linear_cross_entropy_fn

logger = logging.getLogger("fused_ops")


class _Fused:
    """Mixin of every fused module: ``print(model)`` shows ``fused_ops.ReLU()``, not ``ReLU()``.

    The fused classes subclass torch's and keep their names, so without this a converted
    model would print exactly like the original one.
    """

    def _get_name(self) -> str:
        return f"fused_ops.{type(self).__name__}"


class Sigmoid(_Fused, torch.nn.Sigmoid):
    """Drop-in for :class:`torch.nn.Sigmoid`, computed by :func:`fused_ops.sigmoid`.

    A subclass, so ``isinstance(module, torch.nn.Sigmoid)`` still holds in code that checks.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return activations.sigmoid(input)


class Tanh(_Fused, torch.nn.Tanh):
    """Drop-in for :class:`torch.nn.Tanh`, computed by :func:`fused_ops.tanh`.

    A subclass, so ``isinstance(module, torch.nn.Tanh)`` still holds in code that checks.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return activations.tanh(input)


class ReLU(_Fused, torch.nn.ReLU):
    """Drop-in for :class:`torch.nn.ReLU` (same ``inplace`` argument), computed by :func:`fused_ops.relu`.

    With ``inplace=True`` the kernel writes into the input, which is returned, exactly as
    torch's ``ReLU(inplace=True)`` does: autograd sees the write, so a leaf that requires
    grad raises ``RuntimeError`` and a stale saved copy of the input is caught in backward.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return activations.relu_(input) if self.inplace else activations.relu(input)


class GELU(_Fused, torch.nn.GELU):
    """Drop-in for :class:`torch.nn.GELU` (same ``approximate`` argument), computed by :func:`fused_ops.gelu`.

    A subclass, so ``isinstance(module, torch.nn.GELU)`` still holds in code that checks.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return activations.gelu(input, approximate=self.approximate)


class SiLU(_Fused, torch.nn.SiLU):
    """Drop-in for :class:`torch.nn.SiLU` (same ``inplace`` argument), computed by :func:`fused_ops.silu`.

    With ``inplace=True`` the kernel writes into the input, which is returned, as torch's
    ``SiLU(inplace=True)`` does, with autograd seeing the write.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return activations.silu(input, inplace=self.inplace)


class MSELoss(_Fused, torch.nn.MSELoss):
    """Drop-in for :class:`torch.nn.MSELoss` (same constructor), computed by :func:`fused_ops.mse_loss`.

    A subclass, so ``isinstance(module, torch.nn.MSELoss)`` still holds in code that checks.
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mse.mse_loss(input, target, reduction=self.reduction)


class Softmax(_Fused, torch.nn.Softmax):
    """Drop-in for :class:`torch.nn.Softmax` (same constructor), computed by :func:`fused_ops.softmax`.

    ``dim=None`` keeps torch's deprecated implicit choice and its warning.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = _softmax.implicit_softmax_dim("softmax", input.dim(), 5) if self.dim is None else self.dim
        return _softmax.softmax(input, dim)


class LogSoftmax(_Fused, torch.nn.LogSoftmax):
    """Drop-in for :class:`torch.nn.LogSoftmax` (same constructor), computed by :func:`fused_ops.log_softmax`.

    ``dim=None`` keeps torch's deprecated implicit choice and its warning.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = _softmax.implicit_softmax_dim("log_softmax", input.dim(), 5) if self.dim is None else self.dim
        return _softmax.log_softmax(input, dim)


class CrossEntropyLoss(_Fused, torch.nn.CrossEntropyLoss):
    """Drop-in for :class:`torch.nn.CrossEntropyLoss` (same constructor), computed by :func:`fused_ops.cross_entropy`.

    A subclass, so ``isinstance(module, torch.nn.CrossEntropyLoss)`` still holds. The one
    extra, keyword-only argument ``inplace_grad`` selects the opt-in mode described in
    :func:`fused_ops.cross_entropy` (the gradient written over the logits).
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        inplace_grad: bool = False,
    ) -> None:
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.inplace_grad = inplace_grad

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _cross_entropy_fn(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            inplace_grad=self.inplace_grad,
        )


# torch.nn class -> (its fused counterpart, the constructor arguments to carry over).
# One line per class; `convert` consults nothing else.
_FUSED_COUNTERPARTS: dict[type[torch.nn.Module], tuple[type[torch.nn.Module], Callable[[Any], dict[str, Any]]]] = {
    torch.nn.Sigmoid: (Sigmoid, lambda m: {}),
    torch.nn.Tanh: (Tanh, lambda m: {}),
    torch.nn.ReLU: (ReLU, lambda m: {"inplace": m.inplace}),
    torch.nn.GELU: (GELU, lambda m: {"approximate": m.approximate}),
    torch.nn.SiLU: (SiLU, lambda m: {"inplace": m.inplace}),
    torch.nn.Softmax: (Softmax, lambda m: {"dim": m.dim}),
    torch.nn.LogSoftmax: (LogSoftmax, lambda m: {"dim": m.dim}),
    torch.nn.MSELoss: (MSELoss, lambda m: {"reduction": m.reduction}),
    torch.nn.CrossEntropyLoss: (
        CrossEntropyLoss,
        lambda m: {
            "weight": m.weight,
            "ignore_index": m.ignore_index,
            "reduction": m.reduction,
            "label_smoothing": m.label_smoothing,
        },
    ),
}


# Every per-module hook dict, and the flag that goes with full backward hooks. A
# replacement gets these very dicts, not copies: a handle from ``register_forward_hook``
# on the original then removes the hook from both, and hooks added to the replacement
# are still there if the original is put back (``fused_ops.patch(...).undo()``).
_HOOK_ATTRIBUTES = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_pre_hooks",
    "_backward_hooks",
    "_is_full_backward_hook",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
# The dicts that hold hook functions (the others map ids to flags).
_HOOK_FUNCTIONS = (
    "_forward_pre_hooks",
    "_forward_hooks",
    "_backward_pre_hooks",
    "_backward_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def carry_hooks(original: torch.nn.Module, replacement: torch.nn.Module) -> int:
    """Give ``replacement`` the hooks of ``original`` (shared, not copied); return how many.

    The hook dicts are shared, so a hook later removed through its handle leaves both. A
    full backward hook registered on ``original`` *after* the replacement is not seen by
    ``replacement`` (torch keeps a per-module flag for those): register it on the module
    that is in the model.

    Args:
        original: the module being replaced.
        replacement: the module taking its place.

    Returns:
        The number of hooks ``original`` had (forward, backward and state-dict hooks).
    """
    for attribute in _HOOK_ATTRIBUTES:
        if hasattr(original, attribute):
            setattr(replacement, attribute, getattr(original, attribute))
    return sum(len(getattr(original, attribute, ())) for attribute in _HOOK_FUNCTIONS)


@dataclasses.dataclass
class Replacement:
    """One module replaced by a fused one.

    Attributes:
        name: the module's qualified name in the model (``"0.act"``; ``""`` for the model itself).
        original: the module that was there.
        replacement: the fused module put in its place.
        matched: why it was replaced (``"class torch.nn.ReLU"``, or what a probe showed).
        hooks: how many hooks were carried over from ``original``.
        sites: every ``(parent, key)`` that held ``original`` (a shared module has several).
    """

    name: str
    original: torch.nn.Module
    replacement: torch.nn.Module
    matched: str
    hooks: int = 0
    sites: list[tuple[torch.nn.Module, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Skipped:
    """A module that looked convertible and was left alone, with the reason."""

    name: str
    module: torch.nn.Module
    reason: str


@dataclasses.dataclass
class ConvertReport:
    """What :func:`convert_with_report` did: ``model``, and the lists of replaced and skipped modules.

    ``str(report)`` is a short human-readable summary; :meth:`counts` gives the number of
    replacements per fused class.
    """

    model: torch.nn.Module
    replaced: list[Replacement] = dataclasses.field(default_factory=list)
    skipped: list[Skipped] = dataclasses.field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Replacements per fused class name, e.g. ``{"fused_ops.ReLU": 2}``."""
        counts: dict[str, int] = {}
        for replacement in self.replaced:
            name = replacement.replacement._get_name()
            counts[name] = counts.get(name, 0) + 1
        return counts

    def __str__(self) -> str:
        counts = ", ".join(f"{count} {name}" for name, count in self.counts().items()) or "nothing"
        lines = [f"replaced {len(self.replaced)} module(s): {counts}"]
        for r in self.replaced:
            hooks = f", {r.hooks} hook(s) carried over" if r.hooks else ""
            lines.append(
                f"  {r.name or '(model)'}: {type(r.original).__qualname__} -> {r.replacement._get_name()}"
                f" ({r.matched}{hooks})"
            )
        if self.skipped:
            lines.append(f"left alone {len(self.skipped)} module(s):")
            lines.extend(f"  {s.name or '(model)'}: {type(s.module).__qualname__}: {s.reason}" for s in self.skipped)
        return "\n".join(lines)


Match = Callable[[torch.nn.Module], "tuple[torch.nn.Module, str] | str | None"]


def _match_class(module: torch.nn.Module) -> tuple[torch.nn.Module, str] | str | None:
    """convert's rule: exact torch.nn classes of the table; subclasses are reported, not replaced."""
    if isinstance(module, _Fused):
        return None
    counterpart = _FUSED_COUNTERPARTS.get(type(module))
    if counterpart is not None:
        fused_class, arguments = counterpart
        return fused_class(**arguments(module)), f"class torch.nn.{type(module).__name__}"
    base = next((cls for cls in _FUSED_COUNTERPARTS if isinstance(module, cls)), None)
    if base is not None:
        return (
            f"a subclass of torch.nn.{base.__name__}, whose forward may differ "
            "(fused_ops.patch(model) matches modules by what they compute)"
        )
    return None


def replace_modules(model: torch.nn.Module, match: Match) -> ConvertReport:
    """Replace, in place, every module for which ``match`` returns a replacement.

    ``match(module)`` returns ``(replacement, why)``, a reason string for a module it
    leaves alone and wants reported, or ``None``. Replacements take the original's
    train/eval mode and hooks (:func:`carry_hooks`). Children of a replaced module are not
    visited; a module held in several places is matched once and replaced everywhere.

    Returns:
        A :class:`ConvertReport` whose ``model`` is ``model``, or its replacement when
        ``model`` itself matched.
    """
    report = ConvertReport(model)
    results: dict[int, torch.nn.Module] = {}
    by_original: dict[int, Replacement] = {}

    def visit(module: torch.nn.Module, name: str) -> torch.nn.Module:
        if id(module) in results:
            return results[id(module)]
        matched = match(module)
        result = module
        if isinstance(matched, tuple):
            result, why = matched
            result.train(module.training)
            hooks = carry_hooks(module, result)
            by_original[id(module)] = Replacement(name, module, result, why, hooks)
            report.replaced.append(by_original[id(module)])
        else:
            if isinstance(matched, str):
                report.skipped.append(Skipped(name, module, matched))
            # _modules rather than named_children(), which lists a child held twice only once.
            for key, child in list(module._modules.items()):
                if child is None:
                    continue
                new_child = visit(child, f"{name}.{key}" if name else key)
                if new_child is not child:
                    setattr(module, key, new_child)
                    by_original[id(child)].sites.append((module, key))
        results[id(module)] = result
        return result

    report.model = visit(model, "")
    return report


def convert_with_report(model: torch.nn.Module) -> ConvertReport:
    """:func:`convert`, returning a :class:`ConvertReport` of what it replaced and left alone.

    Example:
        >>> report = fused_ops.nn.convert_with_report(model)
        >>> print(report)
        replaced 2 module(s): 1 fused_ops.ReLU, 1 fused_ops.Softmax
          1: ReLU -> fused_ops.ReLU (class torch.nn.ReLU)
          2: Softmax -> fused_ops.Softmax (class torch.nn.Softmax)
        >>> report.model is model
        True
    """
    report = replace_modules(model, _match_class)
    if report.skipped:
        listed = "; ".join(f"{s.name or '(model)'} ({type(s.module).__qualname__})" for s in report.skipped)
        warnings.warn(
            f"fused_ops.nn.convert left {len(report.skipped)} module(s) alone: {listed}. Each is a subclass of a "
            "torch.nn class it converts and may compute something else; fused_ops.patch(model) replaces such "
            "modules when a probe shows they compute what a fused op computes.",
            stacklevel=3,
        )
    logger.info("fused_ops.nn.convert: %s", report)
    return report


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """Replace, in place, every torch.nn module that has a fused counterpart, and return the model.

    Converted classes: Sigmoid, Tanh, ReLU, GELU, SiLU, Softmax, LogSoftmax, MSELoss, CrossEntropyLoss.
    Each replacement gets the original's constructor arguments (``dim``, ``inplace``, ``approximate``,
    ``reduction``, ``ignore_index``, ``label_smoothing``, and the ``weight`` buffer itself,
    shared rather than copied), its train/eval mode and its hooks (the same hook dicts, so
    existing hook handles still remove them), so outputs are unchanged. Modules nested at
    any depth are converted, inside ``nn.Sequential``, ``nn.ModuleList`` and
    ``nn.ModuleDict`` too; a module used in several places gets one replacement used in
    all of them. Only exact classes are replaced: a subclass of, say, ``torch.nn.ReLU``
    may override ``forward``, so it is left alone, with a warning that names it (fused
    modules are left alone silently, so converting twice changes nothing). Fused modules
    print as ``fused_ops.ReLU()``. What was done is logged (logger ``"fused_ops"``, level
    INFO); :func:`convert_with_report` returns it as a :class:`ConvertReport`.

    Args:
        model: any module. It is modified in place.

    Returns:
        ``model``; or, when ``model`` is itself one of the converted classes, its replacement.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Softmax(dim=-1))
        >>> fused_ops.nn.convert(model)
        Sequential(
          (0): Linear(in_features=4, out_features=8, bias=True)
          (1): fused_ops.ReLU()
          (2): fused_ops.Softmax(dim=-1)
        )
        >>> type(model[1])
        <class 'fused_ops.nn.ReLU'>
    """
    return convert_with_report(model).model


class LinearCrossEntropyLoss(_Fused, torch.nn.LinearCrossEntropyLoss):
    """Drop-in for :class:`torch.nn.LinearCrossEntropyLoss` (same constructor), computed by
    :func:`fused_ops.linear_cross_entropy`: the logits of ``self.linear`` are never stored.

    A subclass, so ``isinstance`` checks and ``state_dict`` keys (``linear.weight``,
    ``linear.bias``, ``weight``) are torch's.
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        linear_weight = self.linear.weight.reshape((self.num_classes, *self.out_features, self.linear.in_features))
        bias = self.linear.bias
        linear_bias = bias.reshape((self.num_classes, *self.out_features)) if bias is not None else None
        return _linear_cross_entropy_fn(
            input,
            linear_weight,
            target,
            linear_bias=linear_bias,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            options=self.options,
        )
