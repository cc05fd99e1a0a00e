"""Where a training process runs: its rank among ``torchrun`` workers and its device.

One process (``vsearch train ...``) is rank 0 of 1 on the GPU when there is one, else the CPU. Under ``torchrun``
(``WORLD_SIZE`` set) every process joins one process group, NCCL between GPUs, gloo between CPU processes (what the
tests run), each trains on its slice of every global batch and DistributedDataParallel averages the gradients, so N
processes make the same steps as one process with the whole batch. Only rank 0 writes checkpoints and logs."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Runtime:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def autocast(self) -> AbstractContextManager:
        """Mixed precision on a GPU (bfloat16: no loss scaling needed); full precision on the CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()


def init_runtime() -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Runtime(rank, world, torch.device(f"cuda:{local_rank}" if cuda else "cpu"))


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over every process (itself in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
