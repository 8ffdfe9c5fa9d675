"""The eager path's C++ autograd node (csrc/autograd_node.cpp), built on first use.

A Python ``torch.autograd.Function`` costs about 3 µs of host time per forward and
backward beyond a C++ autograd node: more than a whole small eager op, and the largest
part of fused_ops' host time on activation-sized tensors. ``attach(output, input,
saved, backward, differentiable_backward, args, name)`` records an op whose forward
kernel already ran in the autograd graph the way torch's own ops are recorded:
``output`` gets a node named ``name`` with ``input``'s gradient edge, which saves
``saved`` (``output``, ``input`` or another tensor, or a tuple of tensors and Nones) and
calls ``backward(grad_output, *saved, *args)``, or ``differentiable_backward`` (same
arguments) when the backward runs with ``create_graph=True``. ``input`` may be a tuple
of tensors and Nones too: the node then has an edge per input and the backward returns
a tuple with a gradient (or None) per input.

The extension is compiled with ``torch.utils.cpp_extension.load`` the first time an op
needs it (about a minute, once per machine: torch caches the build in
``~/.cache/torch_extensions``, or ``TORCH_EXTENSIONS_DIR``), then loaded in a second.
``fused-ops check`` builds it ahead of time. Where it cannot be built (no C++ compiler,
no ninja) or ``FUSED_OPS_NATIVE=0`` is set, ``attach`` is None and the ops use their
Python Functions: the same kernels and results, more host time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

_logger = logging.getLogger("fused_ops")

SOURCE = Path(__file__).resolve().parent / "csrc" / "autograd_node.cpp"
ENVIRONMENT_VARIABLE = "FUSED_OPS_NATIVE"


def _load() -> Callable | None:
    """Build (or find the build of) the extension and return its ``attach``; None if it cannot be."""
    if os.environ.get(ENVIRONMENT_VARIABLE, "1") == "0":
        return None
    try:
        import torch
        from torch.utils import cpp_extension

        # torch's build cache is keyed on the name and the sources, not on torch: a build
        # for another torch version must not be loaded, so the version is in the name.
        version = "".join(c if c.isalnum() else "_" for c in torch.__version__)
        module = cpp_extension.load(
            name=f"fused_ops_autograd_node_{version}", sources=[str(SOURCE)], extra_cflags=["-O2"], verbose=False
        )
    except Exception as error:  # no compiler, no ninja, no headers: the Python Functions serve
        _logger.warning(
            "fused_ops: could not build the C++ autograd node (%s: %s); ops use Python autograd "
            "Functions instead (same results, about 3 µs more host time per op). Set %s=0 to skip the build.",
            type(error).__name__,
            str(error).splitlines()[0] if str(error) else "",
            ENVIRONMENT_VARIABLE,
        )
        return None
    return module.attach


UNLOADED = object()
_attach: Callable | object | None = UNLOADED


def attach() -> Callable | None:
    """The C++ ``attach`` function, loading it on the first call; None where it is unavailable."""
    global _attach
    if _attach is UNLOADED:
        _attach = _load()
    return _attach  # type: ignore[return-value]
