"""Launch configurations: every block size and warp count used by the kernels, in one place."""

# Elementwise kernels: 1024 fp32 elements per program is 8 KB in flight, enough to keep
# the memory pipeline busy on sm_80/sm_90 while leaving registers free (4 warps x 32
# threads x 8 elements each, which the compiler vectorizes into 128-bit accesses).
ELEMENTWISE_BLOCK_SIZE = 1024
ELEMENTWISE_NUM_WARPS = 4

# MSE loss (kernels/mse.py): 1024-element blocks, as the elementwise kernels above (the
# loss is elementwise too, with two inputs). The reduction's first stage caps its grid at
# MSE_MAX_PARTIALS programs, each striding over blocks, so the second stage sums every
# partial in ONE block load and the summation order depends only on the element count
# (bitwise deterministic, no atomics). 1024 programs are ~8 per SM of a 132-SM H100.
MSE_BLOCK_SIZE = 1024
MSE_NUM_WARPS = 4
MSE_MAX_PARTIALS = 1024
MSE_PARTIALS_NUM_WARPS = 4

# Softmax and log_softmax (kernels/softmax.py). A tile is BLOCK_R rows x BLOCK_N columns.
# Rows whose padded length fits in SOFTMAX_MAX_FUSED_SIZE are reduced in one tile held in
# registers (read once, write once): 8192 fp32 over 16 warps is 16 values per thread, and
# the backward's two such tiles still fit without spilling. Short rows are packed so that a
# program handles at least SOFTMAX_MIN_TILE elements. Longer rows loop over tiles of
# SOFTMAX_LOOP_TILE elements (online max and sum, then a normalizing pass).
SOFTMAX_MAX_FUSED_SIZE = 8192
SOFTMAX_MIN_TILE = 2048
SOFTMAX_LOOP_TILE = 4096
# Reducing a non-last dim makes neighbouring ROWS adjacent in memory; a tile then spans at
# least this many rows so each warp's loads cover whole 32-byte sectors (32 x fp32 = 128 B).
SOFTMAX_STRIDED_MIN_ROWS = 32
# One warp per SOFTMAX_ELEMENTS_PER_WARP tile elements (8 per thread), within these bounds.
SOFTMAX_ELEMENTS_PER_WARP = 256
SOFTMAX_MIN_WARPS = 4
SOFTMAX_MAX_WARPS = 16

# Adam/AdamW (kernels/adam.py). A program owns a chunk of ADAM_CHUNK_SIZE elements of one
# parameter and walks it in blocks of ADAM_BLOCK_SIZE: 64 blocks amortize the program's
# table lookups and scalar math (a few dozen bytes) over 64K elements (1.8 MB of fp32
# traffic), while a 100M-element parameter still spreads over ~1500 programs, many waves
# on a 132-SM H100. Small parameters get one program each, with an early end to the loop.
# 1024 elements x 4-5 live fp32 tensors over 4 warps is 32-40 registers of data per thread.
ADAM_BLOCK_SIZE = 1024
ADAM_CHUNK_SIZE = 64 * ADAM_BLOCK_SIZE
ADAM_NUM_WARPS = 4

# Cross-entropy: a program walks its rows' classes in (BLOCK_C, BLOCK_I) tiles of at most
# CROSS_ENTROPY_TILE_SIZE logits: 4096 fp32 over 8 warps is 16 values per thread, enough
# in flight to stream a 128k-class row at full bandwidth without spilling the running
# max/sum registers. With classes contiguous, BLOCK_C goes up to 4096 and small vocabularies
# pack several rows per program; with rows contiguous ((N, C, d1, ...) logits), BLOCK_I
# goes up to 128 adjacent rows, a 512-byte coalesced fp32 run per class. The loss
# reduction's second stage is one program adding 1024 partials per step.
CROSS_ENTROPY_TILE_SIZE = 4096
CROSS_ENTROPY_MAX_BLOCK_C = 4096
CROSS_ENTROPY_MAX_BLOCK_I = 128
CROSS_ENTROPY_NUM_WARPS = 8
CROSS_ENTROPY_REDUCE_BLOCK_SIZE = 1024
# The forward that also writes the gradient (the default when the logits require grad)
# keeps a whole row in registers between the logsumexp and the gradient, so each logit is
# read once: rows of up to 8192 padded classes, over 16 warps when a tile passes
# CROSS_ENTROPY_TILE_SIZE (16 fp32 per thread, as softmax's SOFTMAX_MAX_FUSED_SIZE).
# Longer rows read the logits twice.
CROSS_ENTROPY_ONE_PASS_MAX_C = 8192
CROSS_ENTROPY_ONE_PASS_NUM_WARPS = 16
