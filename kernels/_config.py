"""Launch configurations: every block size and warp count used by the kernels, in one place."""

# Elementwise kernels: 1024 fp32 elements per program is 8 KB in flight, enough to keep
# the memory pipeline busy on sm_80/sm_90 while leaving registers free (4 warps x 32
# threads x 8 elements each, which the compiler vectorizes into 128-bit accesses).
ELEMENTWISE_BLOCK_SIZE = 1024
ELEMENTWISE_NUM_WARPS = 4

# MSE loss (kernels/losses.py): 1024-element blocks, as the elementwise kernels above (the
# loss is elementwise too, with two inputs). The reduction's first stage caps its grid at
# MSE_MAX_PARTIALS programs, each striding over blocks, so the second stage sums every
# partial in ONE block load and the summation order depends only on the element count
# (bitwise deterministic, no atomics). 1024 programs are ~8 per SM of a 132-SM H100.
MSE_BLOCK_SIZE = 1024
MSE_NUM_WARPS = 4
MSE_MAX_PARTIALS = 1024
MSE_PARTIALS_NUM_WARPS = 4
