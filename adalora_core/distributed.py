"""Data-parallel training over a torch.distributed process group: DDP, one process per device.

`train` runs data-parallel by itself when a process group is initialised (torchrun, or
torch.multiprocessing with init_process_group). TrainArgs.batch_size stays the global batch: each process
takes every world-size-th row of each batch, so the run's steps, schedule and batches are those of one
process with the whole batch. DDP averages the gradients in the backward pass, so every process's allocator
scores the same gradients and keeps the same masks without exchanging them. Rank 0 alone reports, evaluates
and writes checkpoints; the loss it reports is the mean over processes and the tokens the sum; a stop request on
rank 0 reaches every process at the next step boundary.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch import nn

from .config import ConfigError


def world() -> tuple[int, int]:
    """(this process's rank, the number of processes); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_batch(batch_size: int, size: int) -> None:
    if batch_size % size:
        raise ConfigError(f"batch_size {batch_size} does not split over {size} processes: use a multiple of {size}")


def shard(rows: list[int], rank: int, size: int) -> list[int]:
    return rows[rank::size]


def data_parallel(model: nn.Module, device: torch.device, size: int) -> nn.Module:
    """The module the steps run through: DDP around `model` across processes, `model` itself alone."""
    if size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None)


def accumulating(net: nn.Module, last: bool):
    """Within grad accumulation, the gradients are averaged across processes once, on the last micro-batch."""
    from torch.nn.parallel import DistributedDataParallel

    return net.no_sync() if isinstance(net, DistributedDataParallel) and not last else nullcontext()


def sum_over_processes(values: torch.Tensor, size: int) -> torch.Tensor:
    """In place: the sum over every process (a step's losses, which the loop then averages, and its tokens)."""
    if size > 1:
        dist.all_reduce(values)
    return values


def rank0_says(flag: bool, device: torch.device, size: int) -> bool:
    """Rank 0's decision (stop now?), the same on every process."""
    if size == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def rank0_value(value: float, device: torch.device, size: int) -> float:
    """Rank 0's number (a probed learning rate), the same on every process."""
    if size == 1:
        return value
    tensor = torch.tensor([value], device=device, dtype=torch.float64)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())
