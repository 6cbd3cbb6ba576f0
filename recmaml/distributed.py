"""Data-parallel meta-training with torch.distributed: gloo on CPUs, nccl on GPUs.

Every rank draws the same meta-batch (the task sampler is seeded alike), adapts and scores its share of
the users (rank r takes users r, r + N, ...), and the ranks sum their gradients; each share's loss is
divided by the number of users of the whole batch, so the sum is the gradient of the whole batch's mean
loss, and every rank takes the same optimizer step. N ranks with 1/N of the batch each therefore make
the same meta-update as one process with all of it (tests/test_distributed.py checks this), in about
1/N of the time of the inner loops, which dominate.

Launch with `recmaml fit --nproc N ...` (which runs torchrun), or torchrun directly:

    torchrun --standalone --nproc-per-node 2 -m recmaml fit --data log.parquet --out model

or from Spark with pyspark.ml.torch.distributor.TorchDistributor (docs/distributed.md). Inside a process started by
torchrun, `MetaRecommender.fit` joins the process group on its own (init_from_env); rank 0 saves.
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist


def launched() -> bool:
    """Whether this process was started by torchrun (or TorchDistributor) as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device: str = "cpu") -> str:
    """Join the process group that torchrun's environment describes (once) and return the device this
    rank trains on: `device` on CPUs (gloo), cuda:LOCAL_RANK when `device` is a GPU (nccl)."""
    gpu = device.startswith("cuda")
    if gpu:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if gpu else "gloo")
        # left to the interpreter's exit, gloo's threads were sometimes still running when C++ tore them
        # down: "terminate called without an active exception", SIGABRT, a failed rank in torchrun
        atexit.register(_leave)
    return device


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Every rank starts from rank 0's weights (an ALS start or a thread count can differ by rounding)."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def sum_gradients(parameters) -> None:
    """Sum the gradients over the ranks, in one flat buffer. A parameter that no rank's loss reached keeps
    no gradient (as in one process, so that the optimizer skips it, weight decay included); one that some
    rank's share did not reach adds zeros there."""
    params = [p for p in parameters if p.requires_grad]
    reached = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    dist.all_reduce(reached, op=dist.ReduceOp.MAX)
    params = [p for p, hit in zip(params, reached.tolist()) if hit]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def from_rank_zero(value: float, device) -> float:
    """Rank 0's value on every rank (a validation score, a stop decision), so that all ranks agree."""
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def summed(value: float, device) -> float:
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item())


__all__ = ["broadcast_parameters", "from_rank_zero", "init_from_env", "launched", "rank_and_size", "sum_gradients"]
