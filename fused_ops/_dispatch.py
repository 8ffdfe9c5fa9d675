"""The one place that decides how an op runs: compiled Triton, Triton's interpreter, or eager.

- Tensors on a GPU, with Triton installed: compiled Triton kernels.
- CPU tensors with ``TRITON_INTERPRET=1`` set before Triton was imported: the same
  kernels, run by Triton's interpreter (tests and the demo run this way).
- Anything else (CPU without the interpreter, no Triton at all): the eager PyTorch
  reference in :mod:`fused_ops.reference`. This is logged once per op and reason.

Every autograd Function's forward and backward, and every optimizer step, asks
:func:`use_triton`. Nothing else in the library inspects devices to choose a path.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.autograd import forward_ad as _forward_ad

logger = logging.getLogger("fused_ops")


class Backend(enum.Enum):
    """Where an op's computation runs."""

    TRITON = "triton"
    INTERPRETER = "interpreter"
    REFERENCE = "reference"


def _triton_mode() -> tuple[bool, bool]:
    """(Triton importable, kernels run in the interpreter), read once at import."""
    if importlib.util.find_spec("triton") is None:
        return False, False
    try:
        import triton  # noqa: F401  (only checks that it imports on this platform)
    except ImportError:
        return False, False
    # Triton decides interpreted-or-compiled when a kernel is decorated, from this
    # variable, so its value when fused_ops.kernels is imported is the one that counts.
    return True, os.environ.get("TRITON_INTERPRET", "0") == "1"


TRITON_AVAILABLE, TRITON_INTERPRETED = _triton_mode()
if TRITON_INTERPRETED:
    from ._interpreter import round_bf16_like_the_gpu, silence_numpy_warnings_in_fused_kernels

    round_bf16_like_the_gpu()
    silence_numpy_warnings_in_fused_kernels()

_forced_backend: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("fused_ops_backend", default=None)
_already_logged: set[tuple[str, str]] = set()


def _log_fallback_once(op: str, reason: str) -> None:
    if (op, reason) not in _already_logged:
        _already_logged.add((op, reason))
        logger.warning("fused_ops.%s runs on the eager PyTorch reference: %s", op, reason)


def choose_backend(op: str, *tensors: torch.Tensor | None) -> Backend:
    """Return the backend that ``op`` uses for these tensors (``None`` entries are ignored)."""
    # Asked by every forward and backward: the common answers come first, without a set
    # of device types (this is on the host path of every op call).
    forced = _forced_backend.get()
    if forced is not None:
        return forced
    if TRITON_AVAILABLE:
        if TRITON_INTERPRETED:
            return Backend.INTERPRETER
        on_gpu = False
        for t in tensors:
            if t is not None:
                if not t.is_cuda:
                    on_gpu = False
                    break
                on_gpu = True
        if on_gpu:
            return Backend.TRITON
    device_types = {t.device.type for t in tensors if t is not None}
    if not TRITON_AVAILABLE:
        reason = "Triton is not installed on this platform"
    else:
        reason = f"tensors on {sorted(device_types)} need a GPU, or TRITON_INTERPRET=1 for the interpreter"
    _log_fallback_once(op, reason)
    return Backend.REFERENCE


def use_triton(op: str, *tensors: torch.Tensor | None) -> bool:
    """True when ``op`` should launch its Triton kernels (compiled or interpreted)."""
    # choose_backend's common answers inline: this runs in every forward and backward.
    forced = _forced_backend.get()
    if forced is not None:
        return forced is not Backend.REFERENCE
    if TRITON_INTERPRETED:
        return True
    return choose_backend(op, *tensors) is not Backend.REFERENCE


def needs_autograd(*tensors: torch.Tensor | None) -> bool:
    """True when autograd must record an op on these tensors (``None`` entries are ignored).

    That is: grad mode is on and a tensor requires grad, or forward-mode AD is active
    (a dual tensor does not require grad, but its tangent must not be dropped silently).
    Otherwise an op can skip its autograd Function and call its launcher directly.
    """
    if _forward_ad._current_level >= 0:
        return True
    if not torch.is_grad_enabled():
        return False
    for t in tensors:
        if t is not None and t.requires_grad:
            return True
    return False


def fast_apply(function: type[torch.autograd.Function]):
    """``function.apply`` without the Python wrapper's per-call work, for the ops' eager path.

    ``Function.apply`` inspects ``setup_context``, checks for functorch transforms and
    walks its arguments for dead functorch wrappers (a pytree map) before calling the C++
    apply: about 1 µs a call. These Functions define no ``setup_context``, so with no
    functorch transform active (checked on every call, ~0.1 µs) the C++ apply is what
    ``Function.apply`` would call; under a transform the full ``Function.apply`` runs.

    Args:
        function: a ``torch.autograd.Function`` subclass without ``setup_context``.

    Returns:
        A callable taking ``function.forward``'s arguments (without ``ctx``).
    """
    c_apply = super(torch.autograd.Function, function).apply
    python_apply = function.apply
    functorch_active = torch._C._are_functorch_transforms_active

    def apply(*args):
        if functorch_active():
            return python_apply(*args)
        return c_apply(*args)

    return apply


@contextlib.contextmanager
def force_backend(backend: Backend) -> Iterator[None]:
    """Make every fused op use ``backend`` inside this block, whatever its tensors' device.

    Benchmarks use it: ``force_backend(Backend.TRITON)`` launches compiled kernels on CPU
    tensors (benchmarks/standin_driver.py gives Triton a stand-in GPU whose kernels are
    no-ops, to measure the host path without a GPU). Forcing a Triton backend that this
    process cannot run raises ``RuntimeError`` here rather than on the first op.

    Args:
        backend: the :class:`Backend` to use.

    Example:
        >>> with force_backend(Backend.REFERENCE):
        ...     fused_ops.sigmoid(x)  # eager PyTorch reference
    """
    if backend is not Backend.REFERENCE and not TRITON_AVAILABLE:
        raise RuntimeError(f"cannot force the {backend.value} backend: Triton is not installed on this platform")
    if backend is Backend.TRITON and TRITON_INTERPRETED:
        raise RuntimeError("cannot force the triton backend (compiled): TRITON_INTERPRET=1 was set before import")
    if backend is Backend.INTERPRETER and not TRITON_INTERPRETED:
        raise RuntimeError("cannot force the interpreter backend: TRITON_INTERPRET=1 was not set before import")
    token = _forced_backend.set(backend)
    try:
        yield
    finally:
        _forced_backend.reset(token)


def reference_backend() -> contextlib.AbstractContextManager[None]:
    """Run every fused op on the eager reference inside this block (tests and benchmarks)."""
    return force_backend(Backend.REFERENCE)


def kernel_op(name: str, *, fake: Callable[..., torch.Tensor]) -> Callable[[Callable], Any]:
    """Decorator: the ``torch.library`` op that torch.compile records for a launcher.

    Where kernels are compiled (a GPU, or a stand-in driver), a ``torch.library.triton_op``:
    torch.compile traces through it to the Triton kernels themselves (the launches go
    through ``wrap_triton``, see kernels/_launch.py), so the graph holds the kernels,
    inductor launches them and CUDA graphs can capture them. Under Triton's interpreter,
    which cannot trace a kernel, a ``custom_op`` with ``fake`` as its fake implementation.
    The decorated function's annotations give the op's schema; it mutates nothing.
    """

    def define(implementation: Callable) -> Any:
        if TRITON_AVAILABLE and not TRITON_INTERPRETED:
            return torch.library.triton_op(name, implementation, mutates_args=())
        op = torch.library.custom_op(name, implementation, mutates_args=())
        op.register_fake(fake)
        return op

    return define


def specialize_shapes(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """``tensors`` with int sizes and strides, as views, where torch.compile traced them symbolic.

    Launchers choose tiles and cache launch plans by sizes and strides, which must be
    ints: inside a ``triton_op`` traced with dynamic shapes, ``int()`` specializes each
    symbolic size (the tracer guards on its value) and ``as_strided`` gives a tensor of
    those sizes. Tensors whose sizes are ints come back as they are.
    """
    result = []
    for t in tensors:
        if t is not None and not all(type(v) is int for v in (*t.shape, *t.stride())):
            t = t.as_strided([int(v) for v in t.shape], [int(v) for v in t.stride()], int(t.storage_offset()))
        result.append(t)
    return tuple(result)
