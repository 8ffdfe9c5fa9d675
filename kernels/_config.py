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

# SGD (kernels/sgd.py): the same chunking as Adam, for the same reasons; it moves fewer
# bytes per element (12-20 for fp32), so the per-program table reads weigh a little more,
# still under 0.2% at a full 64K-element chunk.
SGD_BLOCK_SIZE = 1024
SGD_CHUNK_SIZE = 64 * SGD_BLOCK_SIZE
SGD_NUM_WARPS = 4

# Gradient norms (kernels/clip_grad_norm.py): one program per 64K-element chunk of a
# gradient, summing |g|^p over 1024-element blocks in fp32 (fp64 for fp64 gradients);
# the last program to finish adds every program's partial in a fixed order (no float
# atomics, so bitwise deterministic), over blocks of CLIP_REDUCE_BLOCK_SIZE partials.
CLIP_BLOCK_SIZE = 1024
CLIP_CHUNK_SIZE = 64 * CLIP_BLOCK_SIZE
CLIP_NUM_WARPS = 4
CLIP_REDUCE_BLOCK_SIZE = 1024

# Linear + cross-entropy (kernels/linear_cross_entropy.py): a logits tile is BLOCK_N rows x
# BLOCK_V classes, accumulated by tl.dot over BLOCK_D input features, per dtype. Chosen by
# compiling every launch of the tests for sm_90 and sm_80 and reading ptxas' register and
# spill counts (no GPU to time on): with 64 x 64 tiles, 8 warps (16 fp32 accumulators per
# thread) and BLOCK_D = 32, no kernel spills; 4 warps, or BLOCK_D = 64 for 16-bit types,
# spilled up to 10 KB in the backward kernels, whose logits, gradient tile, int64 pointer
# tiles and partial-sum tile are live together. The backward kernels also spilled with the
# loop software-pipelined (2 stages), so only the forward pipelines its loads. fp64 tiles
# are 32 x 32 x 16 (fp64 exists for gradcheck).
LINEAR_CE_BLOCKS = {  # input dtype name -> (BLOCK_N, BLOCK_V, BLOCK_D)
    "float16": (64, 64, 32),
    "bfloat16": (64, 64, 32),
    "float32": (64, 64, 32),
    "float64": (32, 32, 16),
}
LINEAR_CE_NUM_WARPS = 8
LINEAR_CE_FORWARD_NUM_STAGES = 2
LINEAR_CE_BACKWARD_NUM_STAGES = 1
# The forward splits the classes so that (row blocks) x (splits) reaches this many
# programs: 4 per SM of a 132-SM H100, so that 4096 rows (64 row blocks) still fill the
# GPU. Each split writes 5 floats per row, merged by one finalize program that walks the
# rows in LINEAR_CE_FINALIZE_BLOCK chunks (fixed order: a deterministic loss sum).
LINEAR_CE_FORWARD_PROGRAMS = 528
# A split walks at least 16 class blocks (1024 classes): per row it writes at most 5 floats
# for 1024 logits, so the partials are below 0.5% of the logits they stand for.
LINEAR_CE_MIN_BLOCKS_PER_SPLIT = 16
LINEAR_CE_FINALIZE_BLOCK = 1024

# The forward that also writes the gradient (the default when the logits require grad)
# keeps a whole row in registers between the logsumexp and the gradient, so each logit is
# read once: rows of up to 8192 padded classes, over 16 warps when a tile passes
# CROSS_ENTROPY_TILE_SIZE (16 fp32 per thread, as softmax's SOFTMAX_MAX_FUSED_SIZE).
# Longer rows read the logits twice.
CROSS_ENTROPY_ONE_PASS_MAX_C = 8192
CROSS_ENTROPY_ONE_PASS_NUM_WARPS = 16
