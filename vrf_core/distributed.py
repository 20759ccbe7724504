"""torchrun support: process group setup and rank helpers (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init_distributed() -> bool:
    """Join the process group that torchrun describes in the environment; False when single-process."""
    if world_size() <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return True


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def shard(n: int) -> range:
    """This process's contiguous share of range(n)."""
    per = -(-n // world_size())
    return range(min(n, rank() * per), min(n, (rank() + 1) * per))


class _GatherRows(torch.autograd.Function):
    """Every process's rows, in rank order. Backward: each process's loss depends on this process's rows, so
    their gradient is the sum over processes (an all-reduce) of the gradient each computed for them."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """(world_size * B, ...) from each process's (B, ...) (equal B), differentiable; `x` when single-process.

    With a loss computed on the gathered rows by every process, the gradients DistributedDataParallel
    averages are exactly those of one process computing that loss (the sum in backward undoes the average)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    return _GatherRows.apply(x)
