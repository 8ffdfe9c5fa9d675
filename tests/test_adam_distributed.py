"""fused_ops.optim.AdamW and SGD under torch.distributed (gloo, 2 CPU processes) against torch.optim's.

Each test starts two worker processes that run this file as a script. A worker trains
the same tiny model twice in the same distributed setup, once with torch's AdamW and
once with ours, and exits non-zero unless every parameter agrees and our Triton kernel
ran. The parent waits with a timeout, so a hang fails the test instead of blocking CI.
"""

import os

# Workers import fused_ops below: the interpreter must be chosen before that.
os.environ.setdefault("TRITON_INTERPRET", "1")

import socket
import subprocess
import sys
from datetime import timedelta

import pytest
import torch

WORLD_SIZE = 2
STEPS = 3
TIMEOUT_SECONDS = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_workers(setup: str, name: str) -> None:
    port = _free_port()
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, setup, name, str(rank), str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(WORLD_SIZE)
    ]
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=TIMEOUT_SECONDS)[0])
    except subprocess.TimeoutExpired:
        for worker in workers:
            worker.kill()
        pytest.fail(f"{setup}: workers did not finish within {TIMEOUT_SECONDS} s")
    for rank, (worker, output) in enumerate(zip(workers, outputs, strict=True)):
        assert worker.returncode == 0, f"{setup} rank {rank} failed:\n{output[-6000:]}"


OPTIMIZERS = ["AdamW", "SGD", "AdamW-bf16", "AdamW8bit"]
KWARGS = {
    "AdamW": {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True},
    "SGD": {"lr": 1e-2, "weight_decay": 0.1, "momentum": 0.9, "nesterov": True},
    "AdamW-bf16": {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True},
    "AdamW8bit": {"lr": 1e-2, "weight_decay": 0.1},
}
# torch's class for each (torch has no 8-bit AdamW: fp32 AdamW, within TOLERANCES).
TORCH_CLASSES = {"AdamW8bit": "AdamW"}
# Only ours gets these: bf16 moments, against torch's fp32 AdamW (hence TOLERANCES).
OURS_ONLY = {"AdamW-bf16": {"state_dtype": torch.bfloat16}}
TOLERANCES = {"AdamW-bf16": {"rtol": 1e-3, "atol": 1e-3}, "AdamW8bit": {"rtol": 0, "atol": 5e-3}}
KERNELS = {"AdamW": "adam_kernel", "SGD": "sgd_kernel", "AdamW-bf16": "adam_kernel", "AdamW8bit": "adam8bit_kernel"}
# 8-bit moments: an element whose v sits low in its block's range moves up to ~lr/10
# away from fp32 AdamW's over 3 steps (lr = 1e-2; each parameter moves ~3e-2).
# Models with a weight of 8,192 elements (4,096 per rank under FSDP2): quantized moments.
WIDE = {"AdamW8bit"}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_ddp(name):
    _run_workers("ddp", name)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fsdp2_fully_shard_updates_local_shards(name):
    _run_workers("fsdp2", name)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_zero_redundancy_optimizer(name):
    _run_workers("zero", name)


def _model(wide: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    if wide:
        return torch.nn.Sequential(
            torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 3)
        )
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def _wrap(setup: str, optimizer_class, kwargs, wide: bool = False):
    """(model, optimizer) for one setup; the same initial weights on every rank and for both optimizers."""
    import torch.distributed as dist

    model = _model(wide)
    if setup == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)
        return model, optimizer_class(model.parameters(), **kwargs)
    if setup == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        fully_shard(model)
        return model, optimizer_class(model.parameters(), **kwargs)
    if setup == "zero":
        from torch.distributed.optim import ZeroRedundancyOptimizer

        model = torch.nn.parallel.DistributedDataParallel(model)
        return model, ZeroRedundancyOptimizer(model.parameters(), optimizer_class=optimizer_class, **kwargs)
    raise ValueError(f"unknown setup {setup!r} (world size {dist.get_world_size()})")


def _train(setup: str, optimizer_class, kwargs, rank: int, wide: bool = False) -> list[torch.Tensor]:
    model, optimizer = _wrap(setup, optimizer_class, kwargs, wide)
    torch.manual_seed(100 + rank)  # each rank its own batch, as in data-parallel training
    for _ in range(STEPS):
        x, y = torch.randn(6, 4), torch.randn(6, 3)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    # FSDP2 parameters are DTensors: compare the shard this rank updated.
    return [p.to_local().detach().clone() if hasattr(p, "to_local") else p.detach().clone() for p in model.parameters()]


def _worker(setup: str, name: str, rank: int, port: int) -> None:
    import torch.distributed as dist

    import fused_ops.optim
    from fused_ops.profiling import KernelTrace

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=timedelta(seconds=TIMEOUT_SECONDS // 2),
    )
    try:
        class_name = name.split("-")[0]
        wide = name in WIDE
        torch_class = getattr(torch.optim, TORCH_CLASSES.get(class_name, class_name))
        expected = _train(setup, torch_class, KWARGS[name], rank, wide)
        with KernelTrace() as trace:
            ours_kwargs = {**KWARGS[name], **OURS_ONLY.get(name, {})}
            actual = _train(setup, getattr(fused_ops.optim, class_name), ours_kwargs, rank, wide)
        # ZeRO shards the optimizer: each rank steps only the parameters it owns.
        assert trace.launch_count(KERNELS[name]) == STEPS, trace.launch_count()
        for ours, theirs in zip(actual, expected, strict=True):
            torch.testing.assert_close(ours, theirs, **TOLERANCES.get(name, {"rtol": 1e-4, "atol": 1e-6}))
        if setup == "ddp":
            # Data parallel: every rank holds the same parameters after each step.
            gathered = [torch.empty_like(actual[0]) for _ in range(WORLD_SIZE)]
            dist.all_gather(gathered, actual[0])
            assert torch.equal(gathered[0], gathered[1])
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
