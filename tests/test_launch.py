"""Bound launches (kernels/_launch.py) pick the kernel Triton would, and launch it as Triton does.

The cache only exists for compiled kernels, so these tests run a fresh process without
``TRITON_INTERPRET``, on the stand-in CUDA driver (benchmarks/standin_driver.py): kernels
compile for sm_90 and the launcher records its arguments instead of launching.
"""

import textwrap

import torch
from fused_ops.kernels._launch import BoundKernel
from fused_ops.kernels.activations import sigmoid_forward_kernel
from helpers import BENCHMARKS, run_compiled_script

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {benchmarks!r})
    import torch
    import triton
    import triton.language as tl
    import standin_driver
    from standin_driver import standin_cuda_driver
    from fused_ops.profiling import KernelTrace
    from triton.knobs import HookChain
    from fused_ops.kernels._launch import BoundKernel
    from fused_ops.kernels.activations import sigmoid_forward_kernel


    @triton.jit(do_not_specialize=["scalar"], do_not_specialize_on_alignment=["y_ptr"])
    def probe_kernel(x_ptr, y_ptr, n, scalar, eps, flag, FLAG: tl.constexpr, BLOCK: tl.constexpr):
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        x = tl.load(x_ptr + offsets, mask=mask)
        if FLAG:
            x = x * eps + scalar
        if flag:
            x = -x
        tl.store(y_ptr + offsets, x, mask=mask)


    calls = []
    original_call = standin_driver.StandinLauncher.__call__


    def recording_call(self, gx, gy, gz, stream, function, packed, metadata, enter, exit_, *args):
        calls.append((gx, gy, gz, stream, function, packed, enter, exit_, args))
        return original_call(self, gx, gy, gz, stream, function, packed, metadata, enter, exit_, *args)


    standin_driver.StandinLauncher.__call__ = recording_call


    def same(a, b):
        # Tensors by identity (the same objects reach the launcher), everything else by value.
        assert len(a) == len(b), (a, b)
        for x, y in zip(a, b):
            if isinstance(x, tuple):
                same(x, y)
            elif isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
                assert x is y, (x, y)
            else:
                assert x == y and type(x) is type(y), (x, y)


    def without_empty_hooks(call):
        # A bound launch passes None for a hook chain with nothing in it, which Triton's
        # launcher treats alike (it calls a hook only when it is not None).
        def hook(h):
            return None if isinstance(h, HookChain) and not h.calls else h

        gx, gy, gz, stream, function, packed, enter, exit_, args = call
        return (gx, gy, gz, stream, function, packed, hook(enter), hook(exit_), args)


    def check(bound, grid, args, num_warps, constexprs):
        # Triton's own launch first: it compiles, so the bound launch below is a cache hit
        # whenever the key is right, and the two launcher calls must match exactly.
        calls.clear()
        bound.kernel[grid](*args, num_warps=num_warps, **constexprs)
        bound(grid, *args, num_warps=num_warps, **constexprs)  # first bound launch: a miss or a hit
        bound(grid, *args, num_warps=num_warps, **constexprs)  # surely a hit
        expected, _, hit = (without_empty_hooks(call) for call in calls[:3])
        same(hit, expected)
        if len(grid) == 1:
            bound.launch(grid[0], args, tuple(constexprs.values()), num_warps)  # the positional form
            same(without_empty_hooks(calls[3]), expected)
        # A planned launch: the two tensors per call, the rest keyed once, when planned.
        planned = bound.planned(args[2:], tuple(constexprs.values()), num_warps)
        planned(grid[0], args[:2], *grid[1:])  # its first launch: a miss (its own cache)
        planned(grid[0], args[:2], *grid[1:])  # a hit
        same(without_empty_hooks(calls[-1]), expected)
        same(without_empty_hooks(calls[-2]), expected)


    x = torch.randn(64)
    y = torch.empty(64)
    misaligned_x, misaligned_y = x[1:], y[1:]
    assert misaligned_x.data_ptr() % 16 and not x.data_ptr() % 16

    with standin_cuda_driver():
        sigmoid = BoundKernel(sigmoid_forward_kernel)
        assert sigmoid.compiled_mode
        cases = [
            (x, y, 64),  # aligned, n % 16 == 0
            (x, y, 63),  # n not a multiple of 16
            (x, y, 1),  # n == 1: Triton makes it a constexpr
            (misaligned_x, y, 48),  # misaligned input
            (x, misaligned_y, 48),  # misaligned output
            (x, y, 2**31 + 16),  # int64 n (nothing runs: the launch is a no-op)
            (x.half(), y.half(), 64),  # another dtype
        ]
        for args in cases:
            check(sigmoid, (4,), args, 4, {{"BLOCK_SIZE": 16}})
        check(sigmoid, (4, 2), (x, y, 64), 8, {{"BLOCK_SIZE": 16}})  # num_warps and a 2-D grid
        check(sigmoid, (4, 2, 3), (x, y, 64), 4, {{"BLOCK_SIZE": 32}})  # constexpr value, 3-D grid
        triton_kernels = len(sigmoid_forward_kernel.device_caches[standin_driver.STANDIN_DEVICE][0])
        # Each signature bound once by plain launches and once by planned ones.
        assert sigmoid.cache_size() == 2 * triton_kernels == 18, (sigmoid.cache_size(), triton_kernels)

        probe = BoundKernel(probe_kernel)
        probe_cases = [
            (x, y, 64, 5, 0.5, True),
            (x, y, 64, 1, 0.5, True),  # do_not_specialize: scalar == 1 stays an i32
            (x, y, 64, 16, 1.0, False),  # ... and a multiple of 16 too; floats and bools by type
            (x, misaligned_y, 64, 5, 0.5, True),  # do_not_specialize_on_alignment
            (x, y, 64, 2**40, 0.5, True),  # an unspecialized int64 is still another kernel
            (misaligned_x, y, 64, 5, 0.5, True),
        ]
        for args in probe_cases:
            check(probe, (2,), args, 4, {{"FLAG": True, "BLOCK": 64}})
        check(probe, (2,), (x, y, 64, 5, 0.5, True), 4, {{"FLAG": False, "BLOCK": 64}})
        triton_kernels = len(probe_kernel.device_caches[standin_driver.STANDIN_DEVICE][0])
        assert probe.cache_size() == 8 and triton_kernels == 4, (probe.cache_size(), triton_kernels)

        # A planned launch's fixed arguments are sizes and flags: a tensor's address changes.
        try:
            probe.planned((y, 64, 5, 0.5, True), (True, 64), 4)
        except TypeError as error:
            assert "tensors" in str(error)
        else:
            raise AssertionError("planned a tensor")

        # A kernel bound with num_stages launches what Triton launches with that option.
        staged = BoundKernel(sigmoid_forward_kernel, num_stages=1)
        calls.clear()
        sigmoid_forward_kernel[(4,)](x, y, 64, num_warps=4, num_stages=1, BLOCK_SIZE=16)
        staged((4,), x, y, 64, num_warps=4, BLOCK_SIZE=16)
        staged((4,), x, y, 64, num_warps=4, BLOCK_SIZE=16)
        staged.planned((64,), (16,), 4)(4, (x, y))
        expected = without_empty_hooks(calls[0])
        for call in calls[1:]:
            same(without_empty_hooks(call), expected)

        # Launch hooks see bound launches, with Triton's launch metadata.
        with KernelTrace() as trace:
            sigmoid((1,), x, y, 64, num_warps=4, BLOCK_SIZE=16)
            sigmoid((1,), x, y, 64, num_warps=4, BLOCK_SIZE=16)
        names = [launch.kernel for launch in trace.launches]
        assert names == ["sigmoid_forward_kernel"] * 2, names

        # Constexprs out of order, or missing, are refused rather than passed misplaced.
        for bad in ({{"BLOCK": 64, "FLAG": True}}, {{"FLAG": True}}):
            try:
                probe((1,), x, y, 64, 5, 0.5, True, num_warps=4, **bad)
            except TypeError as error:
                assert "constexpr" in str(error)
            else:
                raise AssertionError(f"accepted {{bad}}")
    print("ok")
    """
)


def test_bound_launch_matches_triton_on_the_standin_driver(tmp_path):
    run_compiled_script(tmp_path / "bound_launch.py", SCRIPT.format(benchmarks=str(BENCHMARKS)), timeout=600)


def test_interpreted_kernels_launch_through_triton(kernel_launches):
    # Under the interpreter every launch is kernel[grid](...), which KernelTrace counts.
    bound = BoundKernel(sigmoid_forward_kernel)
    assert not bound.compiled_mode
    x = torch.randn(40)
    y = torch.empty_like(x)
    bound((3,), x, y, 40, num_warps=4, BLOCK_SIZE=16)
    torch.testing.assert_close(y, torch.sigmoid(x))
    assert kernel_launches.launch_count("sigmoid_forward_kernel") == 1
    assert bound.cache_size() == 0


COMPILE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {benchmarks!r})
    import torch
    import torch.nn.functional as F
    from torch._dynamo.testing import AotEagerAndRecordGraphs
    from standin_driver import standin_cuda_driver
    import fused_ops

    OPS = {{
        "sigmoid": fused_ops.sigmoid,
        "tanh": fused_ops.tanh,
        "relu": fused_ops.relu,
        "gelu": lambda t: fused_ops.gelu(t, approximate="tanh"),
        "silu": fused_ops.silu,
        "softmax": lambda t: fused_ops.softmax(t, -1),
        "log_softmax": lambda t: fused_ops.log_softmax(t, 0),
        "mse_loss": lambda t: fused_ops.mse_loss(t, torch.zeros(4, 8)),
        "cross_entropy": lambda t: fused_ops.cross_entropy(t, torch.tensor([0, 3, 7, 1])),
    }}
    # The stand-in launches nothing, so cross_entropy's in-bounds flag is never written:
    # deterministic mode fills new int8 tensors with 127 (true), not whatever memory held.
    torch.use_deterministic_algorithms(True)
    with standin_cuda_driver():
        for name, op in OPS.items():
            torch._dynamo.reset()
            backend = AotEagerAndRecordGraphs()
            compiled = torch.compile(lambda t: op(t) * 2, backend=backend, fullgraph=True)
            x = torch.randn(4, 8, requires_grad=True)
            compiled(x).sum().backward()  # the stand-in launches nothing: values are not checked
            (forward,), (backward,) = backend.fw_graphs, backend.bw_graphs
            forward_kernel = "logits_ptr" if name == "cross_entropy" else "input_ptr"
            for graph, kernel in ((forward, forward_kernel), (backward, "grad_output_ptr")):
                code = graph.code
                # The kernel itself, as a Triton kernel node inductor can launch, not an opaque op.
                assert "triton_kernel_wrapper_functional" in code and kernel in code, (name, code)
                assert "fused_ops" not in code, (name, code)
            print(name, "ok")
        # Dynamic shapes (torch.compile's default after a shape changes): launchers choose
        # tiles from sizes, so they specialize symbolic ones rather than fail to hash them.
        for name, op in {{
            "sigmoid": fused_ops.sigmoid,
            "softmax": lambda t: fused_ops.softmax(t, -1),
            "log_softmax": lambda t: fused_ops.log_softmax(t.t(), 0),
            "mse_loss": lambda t: fused_ops.mse_loss(t, torch.zeros_like(t)),
            "cross_entropy": lambda t: fused_ops.cross_entropy(t, torch.zeros(t.shape[0], dtype=torch.long)),
            "cross_entropy none": lambda t: fused_ops.cross_entropy(t, t.softmax(-1).detach(), reduction="none"),
            "linear_cross_entropy": lambda t: fused_ops.linear_cross_entropy(
                t, torch.ones(16, 8), torch.zeros(t.shape[0], dtype=torch.long)
            ),
        }}.items():
            torch._dynamo.reset()
            compiled = torch.compile(lambda t: op(t) * 2, backend="aot_eager", fullgraph=True, dynamic=True)
            for rows in (4, 7):
                compiled(torch.randn(rows, 8, requires_grad=True)).sum().backward()
            print(name, "dynamic ok")
    print("ok")
    """
)


def test_compiled_graphs_hold_the_triton_kernels_on_the_standin_driver(tmp_path):
    # Where kernels are compiled (a GPU, or here the stand-in driver) the ops are
    # torch.library.triton_ops: torch.compile's graph holds their Triton kernels. Under the
    # interpreter they are custom ops instead (wrap_triton needs compiled kernels), which
    # the compile tests of each family check for equality with eager.
    run_compiled_script(tmp_path / "compiled_graphs.py", COMPILE_SCRIPT.format(benchmarks=str(BENCHMARKS)))
