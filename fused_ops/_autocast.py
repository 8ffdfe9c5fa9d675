"""torch's autocast policy for fused_ops' ops, per device type: one table, two small helpers.

Under ``torch.autocast(device_type, ...)`` torch runs each op by its policy for that
device type (aten/src/ATen/autocast_mode.cpp). For fused_ops' ops there are three:

- ``"fp32"``: floating inputs other than fp64 are cast to float32 first, so the op computes
  and returns float32; fp64 stays fp64. The casts are autograd ops, so each gradient comes
  back in its operand's own dtype.
- ``"fp32_set_opt_dtype"``: the op gets ``dtype=torch.float32`` unless the caller gave a
  ``dtype`` (CUDA's softmax and log_softmax). fused_ops' softmax reads fp16/bf16 and
  writes fp32 in its kernel, so this costs no extra pass.
- no entry: the op runs in its input's dtype (the activations on both device types).

The table was checked against torch 2.13: for CPU by running each torch op under
``torch.autocast("cpu", bfloat16 / float16)`` on fp32, bf16, fp16 and fp64 inputs (CPU's
list has ``mse_loss`` and ``cross_entropy_loss`` but not softmax); for CUDA from torch's
documented list of "CUDA Ops that can autocast to float32" (softmax, log_softmax,
cross_entropy via nll_loss and log_softmax, mse_loss) and the fp32_set_opt_dtype
registration of softmax and log_softmax. tests/test_autocast.py checks both.

With autocast off, each helper costs one dict lookup and one ``torch.is_autocast_enabled``.
"""

from __future__ import annotations

import torch

FP32 = "fp32"
FP32_SET_OPT_DTYPE = "fp32_set_opt_dtype"

# device type -> {op: policy}. Ops absent from a device's table run in their input dtype.
POLICIES: dict[str, dict[str, str]] = {
    "cpu": {
        "mse_loss": FP32,
        "cross_entropy": FP32,
    },
    "cuda": {
        "mse_loss": FP32,
        "cross_entropy": FP32,
        "softmax": FP32_SET_OPT_DTYPE,
        "log_softmax": FP32_SET_OPT_DTYPE,
    },
}

_LOWER_PRECISION = (torch.float16, torch.bfloat16)


def policy(op: str, device_type: str) -> str | None:
    """The autocast policy torch applies to ``op`` on ``device_type``, or None (input dtype)."""
    return POLICIES.get(device_type, {}).get(op)


def _active_policy(op: str, tensor: torch.Tensor) -> str | None:
    table = POLICIES.get(tensor.device.type)
    # Only device types in the table: torch.is_autocast_enabled raises for others ("meta").
    if table is None or not torch.is_autocast_enabled(tensor.device.type):
        return None
    return table.get(op)


def autocast_inputs(op: str, *tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """``tensors`` as torch's autocast passes them to ``op`` (the first one sets the device type).

    Under an enabled autocast whose policy for ``op`` is ``"fp32"``, float16 and bfloat16
    tensors are cast to float32; anything else (fp32, fp64, integer targets, None) is
    returned as it is. Outside autocast, or for ops that run in their input dtype, the
    tensors come back unchanged.

    Example:
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     logits, _, _ = autocast_inputs("cross_entropy", logits_bf16, labels, None)
        >>> logits.dtype
        torch.float32
    """
    if not isinstance(tensors[0], torch.Tensor) or _active_policy(op, tensors[0]) != FP32:
        return tensors
    return tuple(t.float() if isinstance(t, torch.Tensor) and t.dtype in _LOWER_PRECISION else t for t in tensors)


def autocast_dtype(op: str, input: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype | None:
    """The ``dtype`` argument torch's autocast gives ``op`` (policy ``"fp32_set_opt_dtype"``).

    Returns ``torch.float32`` when autocast is enabled for the input's device type, the
    policy applies, the caller gave no ``dtype`` and the input is a float other than fp64;
    otherwise ``dtype`` unchanged.
    """
    if dtype is not None or not isinstance(input, torch.Tensor) or _active_policy(op, input) != FP32_SET_OPT_DTYPE:
        return dtype
    return torch.float32 if input.is_floating_point() and input.dtype != torch.float64 else dtype
