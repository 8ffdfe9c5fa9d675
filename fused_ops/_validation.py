"""Argument checks shared by the ops, raising the error types and messages torch raises."""

from __future__ import annotations

import torch

FLOATING_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

# torch's reduction enum (torch.nn._reduction.get_enum), which the loss kernels take as
# their REDUCTION constexpr (kernels/_common.py): REDUCTIONS[enum] is its name.
REDUCTION_NONE, REDUCTION_MEAN, REDUCTION_SUM = 0, 1, 2
REDUCTIONS = ("none", "mean", "sum")


def check_floating(op: str, tensor: torch.Tensor, name: str = "input") -> None:
    """Raise torch's NotImplementedError for dtypes that have no kernel (integers, complex)."""
    if tensor.dtype not in FLOATING_DTYPES:
        raise NotImplementedError(
            f"\"{op}\" not implemented for '{scalar_type_name(tensor.dtype)}': fused_ops.{op} takes {name} "
            "of dtype float32, float64, float16 or bfloat16"
        )


def promote_to_floating(tensor: torch.Tensor) -> torch.Tensor:
    """Integer and bool inputs become the default float dtype, as torch's unary float ops do."""
    if tensor.dtype in FLOATING_DTYPES or tensor.is_complex():
        return tensor
    return tensor.to(torch.get_default_dtype())


def normalize_dim(dim: int, ndim: int) -> int:
    """Wrap a possibly negative ``dim`` the way torch does; a 0-d tensor accepts -1 and 0."""
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got {dim})")
    return dim % rank


def check_same_device(op: str, *tensors: torch.Tensor | None) -> None:
    """Raise torch's RuntimeError when tensors live on different devices."""
    # One comparison per tensor, no set of devices: this runs on every call of the losses.
    first = None
    for t in tensors:
        if t is None:
            continue
        if first is None:
            first = t.device
        elif t.device != first:
            raise RuntimeError(
                f"Expected all tensors to be on the same device, but found at least two devices, {first} and "
                f"{t.device}! (in fused_ops.{op})"
            )


def scalar_type_name(dtype: torch.dtype) -> str:
    """The name torch's error messages give a dtype: 'Float', 'Long', 'Bool', ..."""
    return {
        torch.float32: "Float",
        torch.float64: "Double",
        torch.float16: "Half",
        torch.bfloat16: "BFloat16",
        torch.int64: "Long",
        torch.int32: "Int",
        torch.int16: "Short",
        torch.int8: "Char",
        torch.uint8: "Byte",
        torch.bool: "Bool",
        torch.complex64: "ComplexFloat",
        torch.complex128: "ComplexDouble",
    }.get(dtype, str(dtype).removeprefix("torch."))


def legacy_reduction(size_average: bool | None, reduce: bool | None) -> str:
    """torch's mapping of the deprecated ``size_average``/``reduce`` arguments to a reduction.

    In eager mode this is torch's own function, with its deprecation warning. Dynamo would
    put it in the graph, where a str result cannot go, and cannot trace warnings.warn, so
    under torch.compile the same rule applies without the warning.
    """
    if not torch.compiler.is_compiling():
        return torch.nn._reduction.legacy_get_string(size_average, reduce)
    if reduce is False:
        return "none"
    return "sum" if size_average is False else "mean"


def dense_layout(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Return the tensors in one shared dense layout that elementwise kernels can walk flat.

    Tensors that already share strides and are dense (contiguous, or a permutation of
    contiguous such as a transpose) are returned as they are, with no copy. Any other
    layout (slices with gaps, expanded or overlapping views, mismatched layouts) is made
    contiguous, which costs one copy but can never address the wrong element.
    """
    first = tensors[0]
    # The common case first, at the cost of one is_contiguous() per tensor.
    for t in tensors:
        if not t.is_contiguous():
            break
    else:
        return tensors
    shared_strides = all(t.stride() == first.stride() for t in tensors)
    if shared_strides and is_dense(first):
        return tensors
    return tuple(t.contiguous() for t in tensors)


def is_dense(tensor: torch.Tensor) -> bool:
    """True when the tensor's elements fill its memory span exactly once (any dim order)."""
    # A tensor is non-overlapping and dense exactly when empty_like keeps its strides.
    return tensor.is_contiguous() or torch.empty_like(tensor, device="meta").stride() == tensor.stride()
