"""What several kernel families share: constants and small ``@triton.jit`` helpers.

Naming convention for every kernel's arguments, in this order: tensors as
``<name>_ptr`` (inputs, then outputs), sizes as ``n_<what>`` (``n_rows``, ``n_cols``,
``n_elements``), strides as ``<tensor>_<dim>_stride``, runtime scalars by their torch name
(``ignore_index``, ``label_smoothing``), then ``tl.constexpr`` parameters in UPPER_CASE
(``BLOCK_SIZE``, ``REDUCTION``). Launchers name the tensors as torch's functional does.
"""

import triton
import triton.language as tl

# exp(x) = exp2(x * LOG2E) and log(x) = log2(x) * LN2: exp2/log2 are the GPU's native
# instructions. Against an fp64 tensor these constants are materialized in fp64, so fp64
# keeps full precision.
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)

# torch's reduction enum (torch.nn._reduction.get_enum), as the REDUCTION constexpr of loss kernels
# (fused_ops._validation.REDUCTIONS is the host side's name for each value).
REDUCTION_NONE = tl.constexpr(0)
REDUCTION_MEAN = tl.constexpr(1)
REDUCTION_SUM = tl.constexpr(2)


@triton.jit
def upcast(x):
    """Return ``x`` in its compute dtype: fp64 stays fp64 (for gradcheck), others go to fp32."""
    if x.dtype == tl.float64:
        return x
    else:
        return x.to(tl.float32)
