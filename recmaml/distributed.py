"""Data-parallel meta-training with torch.distributed: gloo on CPUs, nccl on GPUs.

Every rank draws the same meta-batch (the task sampler is seeded alike). The batch's users are cut into
meta.gradient_groups fixed groups (user i in group i mod groups), whether one process trains or several;
rank r of N adapts and scores groups r, r + N, ..., each group's loss divided by the whole batch's users,
and the ranks sum a (groups x parameters) table of the groups' gradients (GroupTable), whose rows are
then added in group order, as one process adds them. Every rank therefore takes the one-process
optimizer step bit for bit (tests/test_distributed.py checks the weights of whole fits for equality),
in about 1/N of the time of the inner loops, which dominate.

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


class GroupTable:
    """The meta-batch's gradient groups (recmaml.meta.batch_gradient) as one (groups x parameters) table:
    a rank fills the rows of its groups, the others stay zero; summed over the ranks, every entry is one
    rank's value plus zeros, which is that value exactly (but for the sign of a zero: -0 + 0 is +0, which no
    later step tells apart), and the rows are then added in group order as one process adds its groups'
    gradients: N ranks make the one-process gradient bit for bit."""

    def __init__(self, groups: int, params: list[torch.Tensor]):
        self.sizes = [p.numel() for p in params]
        self.shapes = [p.shape for p in params]
        device = params[0].device
        assert all(p.dtype == params[0].dtype for p in params), "one table holds one dtype"
        self.rows = torch.zeros(groups, sum(self.sizes), dtype=params[0].dtype, device=device)
        self.reached = torch.zeros(groups, len(params), device=device)
        self.losses = torch.zeros(groups, dtype=torch.float64, device=device)

    def put(self, group: int, grads, loss: float) -> None:
        for i, (piece, grad) in enumerate(zip(self.rows[group].split(self.sizes), grads)):
            if grad is not None:
                piece.copy_(grad.reshape(-1))
                self.reached[group, i] = 1.0
        self.losses[group] = loss

    def summed_over_ranks(self) -> tuple[list[torch.Tensor | None], list[float]]:
        """Every rank's (gradients, group losses): a parameter that no group reached has None."""
        for tensor in (self.rows, self.reached, self.losses):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        grads = [None] * len(self.sizes)
        for group in range(self.rows.shape[0]):
            hits = self.reached[group].tolist()
            for i, piece in enumerate(self.rows[group].split(self.sizes)):
                if hits[i]:
                    grads[i] = piece.clone() if grads[i] is None else grads[i].add_(piece)
        return [None if g is None else g.view(shape) for g, shape in zip(grads, self.shapes)], self.losses.tolist()


def from_rank_zero(value: float, device) -> float:
    """Rank 0's value on every rank (a validation score, a stop decision), so that all ranks agree."""
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


__all__ = ["broadcast_parameters", "from_rank_zero", "init_from_env", "launched", "rank_and_size", "GroupTable"]
