"""``torch.nn`` modules backed by fused_ops, with torch.nn's constructor arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import activations, mse
from . import softmax as _softmax
from .cross_entropy import cross_entropy as _cross_entropy_fn


class Sigmoid(torch.nn.Sigmoid):
    """Drop-in for :class:`torch.nn.Sigmoid`, computed by :func:`fused_ops.sigmoid`.

    A subclass, so ``isinstance(module, torch.nn.Sigmoid)`` still holds in code that checks.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return activations.sigmoid(input)


class Tanh(torch.nn.Tanh):
    """Drop-in for :class:`torch.nn.Tanh`, computed by :func:`fused_ops.tanh`.

    A subclass, so ``isinstance(module, torch.nn.Tanh)`` still holds in code that checks.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return activations.tanh(input)


class ReLU(torch.nn.ReLU):
    """Drop-in for :class:`torch.nn.ReLU` (same ``inplace`` argument), computed by :func:`fused_ops.relu`.

    With ``inplace=True`` the kernel writes into the input, which is returned, exactly as
    torch's ``ReLU(inplace=True)`` does: autograd sees the write, so a leaf that requires
    grad raises ``RuntimeError`` and a stale saved copy of the input is caught in backward.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return activations.relu_(input) if self.inplace else activations.relu(input)


class MSELoss(torch.nn.MSELoss):
    """Drop-in for :class:`torch.nn.MSELoss` (same constructor), computed by :func:`fused_ops.mse_loss`.

    A subclass, so ``isinstance(module, torch.nn.MSELoss)`` still holds in code that checks.
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mse.mse_loss(input, target, reduction=self.reduction)


class Softmax(torch.nn.Softmax):
    """Drop-in for :class:`torch.nn.Softmax` (same constructor), computed by :func:`fused_ops.softmax`.

    ``dim=None`` keeps torch's deprecated implicit choice and its warning.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = _softmax.implicit_softmax_dim("softmax", input.dim(), 5) if self.dim is None else self.dim
        return _softmax.softmax(input, dim)


class LogSoftmax(torch.nn.LogSoftmax):
    """Drop-in for :class:`torch.nn.LogSoftmax` (same constructor), computed by :func:`fused_ops.log_softmax`.

    ``dim=None`` keeps torch's deprecated implicit choice and its warning.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = _softmax.implicit_softmax_dim("log_softmax", input.dim(), 5) if self.dim is None else self.dim
        return _softmax.log_softmax(input, dim)


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
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


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """Replace, in place, every torch.nn module that has a fused counterpart, and return the model.

    Converted classes: Sigmoid, Tanh, ReLU, Softmax, LogSoftmax, MSELoss, CrossEntropyLoss.
    Each replacement gets the original's constructor arguments (``dim``, ``inplace``,
    ``reduction``, ``ignore_index``, ``label_smoothing``, and the ``weight`` buffer itself,
    shared rather than copied) and its train/eval mode, so outputs are unchanged. Modules
    nested at any depth are converted, inside ``nn.Sequential``, ``nn.ModuleList`` and
    ``nn.ModuleDict`` too; a module used in several places gets one replacement used in
    all of them. Only exact classes are replaced: a subclass of, say, ``torch.nn.ReLU``
    may override ``forward``, so it is left alone (and so are fused modules already).
    Hooks registered on a replaced module are not carried over.

    Args:
        model: any module. It is modified in place.

    Returns:
        ``model``; or, when ``model`` is itself one of the converted classes, its replacement.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Softmax(dim=-1))
        >>> fused_ops.nn.convert(model)
        Sequential(
          (0): Linear(in_features=4, out_features=8, bias=True)
          (1): ReLU()
          (2): Softmax(dim=-1)
        )
        >>> type(model[1])
        <class 'fused_ops.nn.ReLU'>
    """
    return _convert(model, {})


def _convert(module: torch.nn.Module, replaced: dict[int, torch.nn.Module]) -> torch.nn.Module:
    # `replaced` maps id(original) to its result, so shared modules stay shared and each
    # module is visited once.
    if id(module) in replaced:
        return replaced[id(module)]
    counterpart = _FUSED_COUNTERPARTS.get(type(module))
    if counterpart is not None:
        fused_class, arguments = counterpart
        result = fused_class(**arguments(module)).train(module.training)
    else:
        result = module
        # _modules rather than named_children(), which lists a child held twice only once.
        for name, child in list(module._modules.items()):
            new_child = child if child is None else _convert(child, replaced)
            if new_child is not child:
                setattr(module, name, new_child)
    replaced[id(module)] = result
    return result
