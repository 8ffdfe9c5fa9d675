"""Make Triton's interpreter round like the GPU, and keep it quiet on correct results.

Compiled Triton downcasts fp32 to bf16 with round-to-nearest-even (``cvt.rn.bf16.f32``).
Triton 3.9's interpreter truncates instead (``_convert_float`` with no rounding mode, and
its RTNE branch drops the carry into the exponent), which is up to one bf16 ulp away from
what a GPU stores. Here fp32 -> bf16 casts go through torch, which rounds to nearest even
and keeps NaN a NaN, exactly like the hardware. Nothing changes for compiled kernels.

The interpreter also evaluates every lane in numpy, masked-out ones included, so kernels
that are correct on purpose (an all -inf softmax row, the NaN padding of a masked tail,
gelu(-inf) = -inf * 0) make numpy print RuntimeWarnings ("invalid value encountered in
subtract", "overflow encountered in multiply", "All-NaN slice encountered") that read like
bugs. A GPU raises no such flags. :func:`silence_numpy_warnings_in_fused_kernels` turns
them off for fused_ops' own kernels only.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

_patched = False
_silenced = False

# Where fused_ops' kernels live once installed (setup.py maps kernels/ to fused_ops.kernels).
_KERNELS_PACKAGE = "fused_ops.kernels"


def _fp32_to_bf16_bits(data: np.ndarray) -> np.ndarray:
    as_bf16 = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).to(torch.bfloat16)
    return as_bf16.view(torch.int16).numpy().view(np.uint16).reshape(np.shape(data))


def _bf16_as_fp32(handle):
    import triton.language as tl
    from triton.runtime import interpreter

    bits = np.asarray(handle.data).astype(np.uint32) << np.uint32(16)
    return interpreter.TensorHandle(bits.view(np.float32), tl.float32)


def round_bf16_like_the_gpu() -> None:
    """Patch the interpreter's fp32 -> bf16 conversions to round to nearest even, and its bf16 dot (idempotent)."""
    global _patched
    if _patched:
        return
    import triton.language as tl
    from triton.runtime import interpreter

    builder_cls = interpreter.InterpreterBuilder
    original_cast = builder_cls.cast_impl
    original_fp_to_fp = builder_cls.create_fp_to_fp

    def is_fp32_to_bf16(src, dst_type) -> bool:
        return src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16

    def cast_impl(self, src, dst_type):
        if is_fp32_to_bf16(src, dst_type):
            return interpreter.TensorHandle(_fp32_to_bf16_bits(src.data), dst_type.scalar)
        return original_cast(self, src, dst_type)

    def create_fp_to_fp(self, src, dst_type, rounding_mode):
        # An explicit rtz request keeps the interpreter's truncation, which is exactly rtz.
        if is_fp32_to_bf16(src, dst_type) and rounding_mode != interpreter._ir.ROUNDING_MODE.RTZ:
            return interpreter.TensorHandle(_fp32_to_bf16_bits(src.data), dst_type.scalar)
        return original_fp_to_fp(self, src, dst_type, rounding_mode)

    original_dot = builder_cls.create_dot

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        # The interpreter keeps bf16 as raw uint16 bits and would np.matmul the integers.
        # Widen bf16 operands to fp32 exactly (bits << 16): a GPU's bf16 MMA also forms
        # exact products and accumulates them in fp32.
        if tl.bfloat16 in (a.dtype.scalar, b.dtype.scalar):
            a, b = (_bf16_as_fp32(t) if t.dtype.scalar == tl.bfloat16 else t for t in (a, b))
        return original_dot(self, a, b, d, input_precision, max_num_imprecise_acc)

    builder_cls.cast_impl = cast_impl
    builder_cls.create_fp_to_fp = create_fp_to_fp
    builder_cls.create_dot = create_dot
    # Casts inside the builder's own lambdas (create_fp_trunc, ...) look cast_impl up on
    # the instance at call time, so patching the class covers them too.
    _patched = True


def silence_numpy_warnings_in_fused_kernels() -> None:
    """Run interpreted fused_ops kernels under ``numpy.errstate`` that ignores float flags (idempotent).

    Only launches of kernels defined in ``fused_ops.kernels`` are affected: other Triton
    kernels in the same process (the user's own) keep numpy's warnings. Values are not
    changed, only the warnings numpy would print while computing them. The NaN-slice
    warning of ``numpy.nanmax`` (the interpreter's ``tl.max``) goes through ``warnings``,
    not ``errstate``, so it is filtered for the launch too.
    """
    global _silenced
    if _silenced:
        return
    from triton.runtime import interpreter

    original_run = interpreter.InterpretedFunction.run

    def run(self, *args, **kwargs):
        if not getattr(self.fn, "__module__", "").startswith(_KERNELS_PACKAGE):
            return original_run(self, *args, **kwargs)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="All-NaN (slice|axis) encountered", category=RuntimeWarning)
            return original_run(self, *args, **kwargs)

    interpreter.InterpretedFunction.run = run
    _silenced = True
