"""Kernel launches bound once per signature: the host path of every compiled launch.

``kernel[grid](...)`` goes through Triton's ``JITFunction.run`` on every call: it binds
the arguments, specializes each one, hashes the options and looks the compiled kernel up,
6-11 µs of Python per launch (Triton 3.9). :class:`BoundKernel` does that work once per
signature. Its cache is keyed on exactly what Triton specializes on:

- each tensor's dtype and whether its address is a multiple of 16 (unless the parameter
  is in ``do_not_specialize``/``do_not_specialize_on_alignment``);
- each int's width (int32 or int64), and, unless in ``do_not_specialize``, whether it
  equals 1 or is a multiple of 16; bools and floats by type; ``None`` as itself;
- the value of every ``tl.constexpr``, ``num_warps``, and the current device.

A miss launches through ``kernel[grid](...)``, which compiles (or finds) the kernel, and
stores the ``CompiledKernel`` it returns. A hit calls ``compiled.run(...)`` with the same
arguments ``JITFunction.run`` passes: the stream, the function handle, the packed
metadata, ``launch_metadata`` and Triton's ``launch_enter_hook``/``launch_exit_hook``
(read on every call, so tools that count launches through the hooks see every launch).

``BoundKernel.planned`` goes one step further for launches whose trailing arguments
(sizes, strides) repeat for every call of a shape: their part of the key is worked out
once, when a launch plan is made, and each launch keys only its leading arguments.

What Triton reads from its knobs and the environment at compile time (debug mode,
instrumentation, a stages-inspection hook) is fixed at a signature's first launch; with a
``pre_run_hook`` or a stages-inspection hook installed, every launch goes through
``JITFunction.run``. Under Triton's interpreter (``TRITON_INTERPRET=1``) every launch is
``kernel[grid](...)``, so the interpreter's hooks (KernelTrace's byte counting) see it.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from typing import Any

import torch
from triton import knobs
from triton.knobs import HookChain
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

# Triton's runtime knobs (launch hooks), one object for the life of the process.
_runtime = knobs.runtime

# Triton's specialization of one runtime argument, as an expression of `{a}`, for the key
# function generated per kernel (generated, because a Python call per argument would cost
# more than the lookup it saves). Tensors: dtype, and address % 16 == 0. Ints: int32 or
# int64, == 1, % 16 == 0. bool, float, None: the type alone.
# Ints come first: most arguments are sizes and strides.
_SPECIALIZED = (
    "((-2147483648 <= {a} <= 2147483647, {a} == 1, not {a} & 15) if {a}.__class__ is int else "
    "(({a}.dtype, not {a}.data_ptr() & 15) if isinstance({a}, Tensor) else {a}.__class__))"
)
# A do_not_specialize parameter: only the type (and an int's width) can change the kernel.
_UNSPECIALIZED = (
    "((-2147483648 <= {a} <= 2147483647) if {a}.__class__ is int else "
    "({a}.dtype if isinstance({a}, Tensor) else {a}.__class__))"
)
# A do_not_specialize_on_alignment parameter: a tensor's dtype; other types as specialized.
_UNALIGNED = (
    "((-2147483648 <= {a} <= 2147483647, {a} == 1, not {a} & 15) if {a}.__class__ is int else "
    "({a}.dtype if isinstance({a}, Tensor) else {a}.__class__))"
)


def _specialization(param) -> str:
    """The key expression (a template of ``{a}``) for one of the kernel's runtime parameters."""
    if param.do_not_specialize:
        return _UNSPECIALIZED
    if param.do_not_specialize_on_alignment:
        return _UNALIGNED
    return _SPECIALIZED


# The body of a generated launch, after its runtime arguments are unpacked into a0, a1, ...:
# key, cache lookup, then Triton's launcher, as JITFunction.run calls it. Placeholders:
# {key_head} (what the key holds besides the arguments' specializations), {parts} (those),
# {all_args} (every runtime argument, as a tuple) and {run_args} (the same, then the
# constexprs, as call arguments).
_LAUNCH_BODY = """
active = driver.active
device = active.get_current_device()
try:
    key = (device, {key_head}, {parts})
except RuntimeError:
    # A tensor without storage (data_ptr raises): torch.compile is tracing a
    # torch.library.triton_op, which must see the kernel through wrap_triton.
    return traced_launch((programs, grid_1, grid_2), {all_args}, num_warps, constants)
entry = cache_get(key)
if entry is None or kernel.pre_run_hooks or runtime.add_stages_inspection_hook is not None:
    return first_launch(key, (programs, grid_1, grid_2), {all_args}, num_warps, constants)
run, function, packed_metadata, compiled = entry
stream = active.get_current_stream(device)
enter_hook = runtime.launch_enter_hook
exit_hook = runtime.launch_exit_hook
if (enter_hook is None or (enter_hook.__class__ is HookChain and not enter_hook.calls)) and (
    exit_hook is None or (exit_hook.__class__ is HookChain and not exit_hook.calls)
):
    # No hook to call: Triton's launcher skips None hooks, and launch_metadata exists
    # only for hooks (JITFunction.run builds it on every launch, for nothing).
    run(programs, grid_1, grid_2, stream, function, packed_metadata, None, None, None, {run_args})
    return
metadata = compiled.launch_metadata((programs, grid_1, grid_2), stream, {run_args})
run(programs, grid_1, grid_2, stream, function, packed_metadata, metadata, enter_hook, exit_hook, {run_args})
"""


def _generate_launch(bound: BoundKernel, params, n_keyed: int, planned: bool) -> Any:
    """Generate a launch function for one kernel, with the specialization key inlined.

    Generated, because every Python call, nested tuple and attribute lookup on this path
    is paid on every launch (about 1 µs saved against a key function called from a
    generic launch method).

    - ``planned=False``: ``launch(programs, args, constants, num_warps, grid_1=1, grid_2=1)``,
      every runtime argument keyed at every launch.
    - ``planned=True``: ``make(fixed, fixed_key, constants, num_warps)``, which returns
      ``launch(programs, leading, grid_1=1, grid_2=1)`` for the first ``n_keyed`` runtime
      arguments; the ``fixed`` rest was keyed once, as ``fixed_key`` (see
      ``BoundKernel.planned``).
    """
    names = [f"a{i}" for i in range(n_keyed)]
    parts = [_specialization(param).format(a=name) for name, param in zip(names, params[:n_keyed], strict=True)]
    unpack = "".join(f"{name}, " for name in names)
    received = "leading" if planned else "args"
    body = _LAUNCH_BODY.format(
        key_head="fixed_key" if planned else "num_warps, constants",
        parts=", ".join(parts),
        all_args="(*leading, *fixed)" if planned else "args",
        run_args=f"{unpack}*fixed, *constants" if planned else f"{unpack}*constants",
    )
    function = f"""
def launch(programs, {received}, {"" if planned else "constants, num_warps, "}grid_1=1, grid_2=1):
    try:
        ({unpack}) = {received}
    except ValueError:
        raise TypeError(usage_error) from None
{textwrap.indent(body, "    ")}
"""
    source = function
    if planned:
        # The launch closes over one plan's fixed arguments, key part, constexprs and warps.
        source = (
            f"def make(fixed, fixed_key, constants, num_warps):{textwrap.indent(function, '    ')}    return launch\n"
        )
    namespace = {
        "Tensor": torch.Tensor,
        "HookChain": HookChain,
        "driver": driver,
        "runtime": _runtime,
        "kernel": bound.kernel,
        "cache_get": (bound._planned_cache if planned else bound._cache).get,
        "first_launch": bound._first_planned_launch if planned else bound._first_launch,
        "traced_launch": bound._traced_launch,
        "usage_error": bound._usage_error,
    }
    # The source is built from the kernel's parameter list only.
    exec(source, namespace)
    return namespace["make" if planned else "launch"]


# Planned launches per kernel, at most (each holds a closure and its arguments).
MAX_FIXED_PLANS = 4096


class BoundKernel:
    """A ``@triton.jit`` kernel launched through a per-signature cache of compiled kernels.

    Call it as ``bound(grid, *args, num_warps=..., **constexprs)``, or, on hot paths, as
    ``bound.launch(programs, args, constants, num_warps)`` (no keyword arguments):
    ``args`` are the kernel's runtime parameters in order, and the constexprs its
    trailing ``tl.constexpr`` parameters, by name in the kernel's order or as a tuple of
    values in that order (checked at each signature's first launch).

    Args:
        kernel: the ``@triton.jit`` function (an ``InterpretedFunction`` under
            ``TRITON_INTERPRET=1``, which is then always launched as ``kernel[grid]``).
        num_stages: the software-pipelining stages of every launch, or None for Triton's
            default (a launch option like ``num_warps``, but fixed per bound kernel).

    Example:
        >>> _sigmoid = BoundKernel(sigmoid_forward_kernel)
        >>> _sigmoid((n // 1024 + 1,), x, out, n, num_warps=4, BLOCK_SIZE=1024)
        >>> _sigmoid.launch(n // 1024 + 1, (x, out, n), (1024,), 4)
    """

    def __init__(self, kernel, num_stages: int | None = None) -> None:
        self.kernel = kernel
        # Passed to Triton with num_warps wherever it launches or compiles the kernel.
        self._options = {} if num_stages is None else {"num_stages": num_stages}
        self.compiled_mode = isinstance(kernel, JITFunction)
        self._cache: dict[tuple, tuple] = {}
        # (name, is_constexpr) per parameter, read the way Triton reads the annotation.
        params = [
            (name, "constexpr" in str(param.annotation))
            for name, param in inspect.signature(kernel.fn).parameters.items()
        ]
        self._n_params = sum(1 for _, is_constexpr in params if not is_constexpr)
        self._constexpr_names = [name for name, is_constexpr in params if is_constexpr]
        trailing = all(is_constexpr for _, is_constexpr in params[self._n_params :])
        self._usage_error = (
            f"{kernel.__name__}: pass the {self._n_params} runtime parameters positionally, then every "
            f"constexpr {self._constexpr_names} by name, in order (constexprs must be the kernel's last parameters)"
        )
        if not trailing:
            raise TypeError(self._usage_error)
        # Planned launches (see ``planned``): their own cache, since their keys hold an id
        # for the fixed arguments' part instead of that part itself.
        self._planned_cache: dict[tuple, tuple] = {}
        self._fixed_key_ids: dict[tuple, int] = {}
        self._planned_factories: dict[int, Any] = {}
        self._fixed_plans: dict[tuple, Callable[..., None]] = {}
        if self.compiled_mode:
            self._runtime_params = [p for p in kernel.params if not p.is_constexpr]
            # An instance attribute, which takes precedence over the method below.
            self.launch = _generate_launch(self, self._runtime_params, self._n_params, planned=False)

    def _check_usage(self, args: tuple, constexprs: dict) -> None:
        if len(args) != self._n_params or list(constexprs) != self._constexpr_names:
            raise TypeError(self._usage_error)

    @property
    def __name__(self) -> str:
        return self.kernel.__name__

    def __call__(self, grid: tuple[int, ...], *args: Any, num_warps: int, **constexprs: Any) -> None:
        if not self.compiled_mode:
            # The interpreter takes milliseconds a launch: checking every call is free, and
            # catches under test what a compiled launch checks at its first call.
            self._check_usage(args, constexprs)
            self.kernel[grid](*args, num_warps=num_warps, **self._options, **constexprs)
            return
        if list(constexprs) != self._constexpr_names:
            raise TypeError(self._usage_error)
        grid_1 = grid[1] if len(grid) > 1 else 1
        grid_2 = grid[2] if len(grid) > 2 else 1
        self.launch(grid[0], args, tuple(constexprs.values()), num_warps, grid_1, grid_2)

    def launch(
        self, programs: int, args: tuple, constants: tuple, num_warps: int, grid_1: int = 1, grid_2: int = 1
    ) -> None:
        """Launch a (``programs``, ``grid_1``, ``grid_2``) grid: ``__call__`` without keywords.

        This method serves interpreted kernels; compiled ones get a generated function of
        the same signature (``_generate_launch``).
        """
        if len(constants) != len(self._constexpr_names):
            raise TypeError(self._usage_error)
        constexprs = dict(zip(self._constexpr_names, constants, strict=True))
        grid = (programs,) if grid_1 == grid_2 == 1 else (programs, grid_1, grid_2)
        self(grid, *args, num_warps=num_warps, **constexprs)

    def planned(self, fixed: tuple, constants: tuple, num_warps: int) -> Callable[..., None]:
        """A launch whose trailing runtime arguments ``fixed`` are bound: ``launch(programs, leading)``.

        For the sizes, strides and options of a shape seen before (softmax's and
        cross-entropy's launch plans): what Triton specializes on in ``fixed`` is worked
        out once, so each launch keys only ``leading`` (the tensors, usually). The launches
        are the same as ``launch(programs, (*leading, *fixed), constants, num_warps)``.
        Made once per distinct ``(fixed, constants, num_warps)``: values that compare equal
        share a launch, which passes the first call's values, so give each parameter one
        type (ints for int parameters, floats for float ones). Launches are dropped once
        there are more than ``MAX_FIXED_PLANS`` (inputs of ever-changing shapes).

        Args:
            fixed: the kernel's last runtime arguments: ints, floats, bools or None (not
                tensors, whose addresses change from call to call).
            constants: the constexprs' values, in the kernel's order.
            num_warps: warps per program.

        Returns:
            ``launch(programs, leading, grid_1=1, grid_2=1)``, ``leading`` being the
            kernel's first runtime arguments.
        """
        key = (fixed, constants, num_warps)
        launch = self._fixed_plans.get(key)
        if launch is None:
            if len(self._fixed_plans) >= MAX_FIXED_PLANS:
                self._fixed_plans.clear()
            launch = self._fixed_plans[key] = self._make_planned(fixed, constants, num_warps)
        return launch

    def _make_planned(self, fixed: tuple, constants: tuple, num_warps: int) -> Callable[..., None]:
        """``planned``'s launch, made anew."""
        n_leading = self._n_params - len(fixed)
        if n_leading < 0 or len(constants) != len(self._constexpr_names):
            raise TypeError(self._usage_error)
        if any(isinstance(value, torch.Tensor) for value in fixed):
            raise TypeError(f"{self.__name__}: a planned launch's fixed arguments cannot be tensors")
        if not self.compiled_mode:

            def launch_interpreted(programs: int, leading: tuple, grid_1: int = 1, grid_2: int = 1) -> None:
                self.launch(programs, (*leading, *fixed), constants, num_warps, grid_1, grid_2)

            return launch_interpreted
        # The same expressions the per-launch key evaluates, once per plan.
        specializations = [
            eval(_specialization(param).format(a="value"), {"Tensor": torch.Tensor}, {"value": value})
            for value, param in zip(fixed, self._runtime_params[n_leading:], strict=True)
        ]
        fixed_key = (num_warps, tuple(constants), *specializations)
        fixed_key_id = self._fixed_key_ids.setdefault(fixed_key, len(self._fixed_key_ids))
        make = self._planned_factories.get(n_leading)
        if make is None:
            make = self._planned_factories[n_leading] = _generate_launch(
                self, self._runtime_params, n_leading, planned=True
            )
        return make(tuple(fixed), fixed_key_id, tuple(constants), num_warps)

    def launch_fixed(
        self, programs: int, leading: tuple, fixed: tuple, constants: tuple, num_warps: int, grid_1: int = 1
    ) -> None:
        """``planned(fixed, constants, num_warps)(programs, leading, grid_1)``, in one call.

        For kernels with many size, stride and option arguments (cross-entropy's have up to
        17) whose values repeat from call to call: a launch costs a dict lookup of those
        values instead of specializing each one.
        """
        launch = self._fixed_plans.get((fixed, constants, num_warps))
        if launch is None:
            launch = self.planned(fixed, constants, num_warps)
        launch(programs, leading, grid_1)

    def _first_launch(self, key: tuple, grid, args: tuple, num_warps: int, constants: tuple) -> None:
        """Launch through Triton (compiling if needed) and remember the compiled kernel."""
        self._cache[key] = self._launch_through_triton(grid, args, num_warps, constants)

    def _first_planned_launch(self, key: tuple, grid, args: tuple, num_warps: int, constants: tuple) -> None:
        """``_first_launch`` for planned launches."""
        self._planned_cache[key] = self._launch_through_triton(grid, args, num_warps, constants)

    def _launch_through_triton(self, grid, args: tuple, num_warps: int, constants: tuple) -> tuple:
        """Launch with ``kernel[grid](...)``: returns the cache entry of the compiled kernel it ran."""
        if len(constants) != len(self._constexpr_names):
            raise TypeError(self._usage_error)
        constexprs = dict(zip(self._constexpr_names, constants, strict=True))
        self._check_usage(args, constexprs)
        compiled = self.kernel[grid](*args, num_warps=num_warps, **self._options, **constexprs)
        # compiled.run is the driver's launcher, created when the kernel first ran.
        return (compiled.run, compiled.function, compiled.packed_metadata, compiled)

    def _traced_launch(self, grid, args: tuple, num_warps: int, constants: tuple) -> None:
        """The launch as torch.compile records it inside a ``torch.library.triton_op``."""
        constexprs = dict(zip(self._constexpr_names, constants, strict=True))
        torch.library.wrap_triton(self.kernel)[grid](*args, num_warps=num_warps, **self._options, **constexprs)

    def cache_size(self) -> int:
        """Signatures bound so far, by plain and by planned launches (for tests)."""
        return len(self._cache) + len(self._planned_cache)


def next_power_of_2(n: int) -> int:
    """``triton.next_power_of_2`` for host code (Triton's is a ConstexprFunction: ~3 µs a call)."""
    return 1 << (n - 1).bit_length() if n > 0 else 0
