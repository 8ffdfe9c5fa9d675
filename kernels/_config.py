"""Launch configurations: every block size and warp count used by the kernels, in one place."""

# Elementwise kernels: 1024 fp32 elements per program is 8 KB in flight, enough to keep
# the memory pipeline busy on sm_80/sm_90 while leaving registers free (4 warps x 32
# threads x 8 elements each, which the compiler vectorizes into 128-bit accesses).
ELEMENTWISE_BLOCK_SIZE = 1024
ELEMENTWISE_NUM_WARPS = 4
