"""Small ``@triton.jit`` helpers shared by several kernel families."""

import triton
import triton.language as tl


@triton.jit
def upcast(x):
    """Return ``x`` in its compute dtype: fp64 stays fp64 (for gradcheck), others go to fp32."""
    if x.dtype == tl.float64:
        return x
    else:
        return x.to(tl.float32)
