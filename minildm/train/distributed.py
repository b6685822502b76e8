"""Training on several processes with PyTorch's own engine: torchrun starts them, DistributedDataParallel (DDP)
all-reduces the gradients.

    torchrun --standalone --nproc-per-node 2 -m minildm train-ldm --autoencoder runs/ae/autoencoder.pt ...

How minildm splits the work: the profile's batch size is the *global* batch. Batch k of a run is still a function
of (seed, k) only; with P processes, process r computes rows [r·B/P, (r+1)·B/P) of it (renders or reads only its
rows) and DDP averages the gradients, which is the gradient of the whole batch. So the effective batch and the
learning rate are the profile's, whatever P is, a run's loss curve follows the one-process run (up to the order
of floating-point sums), and a run resumes with a different number of processes. Only process 0 writes
checkpoints (atomically, as always), logs and calls the callback. On CPUs the processes talk through gloo
(torchrun then gives each process one thread), on GPUs through NCCL, one GPU per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Dist", "setup_distributed", "wrap_ddp", "main_process", "WORLD_ENV"]

WORLD_ENV = "WORLD_SIZE"           # set by torchrun (with RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)


@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes (rank 0 of 1 when there is no torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """True on the process that writes checkpoints, logs and calls callbacks."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def rows(self, batch_size: int) -> slice | None:
        """This process's rows of a global batch (None: all of it, one process)."""
        if self.world == 1:
            return None
        if batch_size % self.world:
            raise ValueError(f"the global batch of {batch_size} cannot be split evenly over {self.world} processes; "
                             f"use a batch size that is a multiple of {self.world} (profile.replace(...) or "
                             f"another --nproc-per-node)")
        share = batch_size // self.world
        return slice(self.rank * share, (self.rank + 1) * share)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The average of `values` over the processes (itself with one process)."""
        if self.world == 1:
            return values
        out = values.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world

    def any(self, flag: bool, device: torch.device) -> bool:
        """True when `flag` is true on any process (so that every process stops at the same step)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


def setup_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes in the environment (once per process) and pick this process's
    device (CUDA: the GPU of its local rank). Without torchrun: Dist() and the device unchanged."""
    world = int(os.environ.get(WORLD_ENV, "1"))
    if world <= 1:
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"process {rank} has local rank {local} but this machine has "
                               f"{torch.cuda.device_count()} GPUs; start at most that many processes per node")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"multi-process training runs on CUDA GPUs (NCCL) or CPUs (gloo), not on {device}")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise RuntimeError(f"the process group ({dist.get_rank()} of {dist.get_world_size()}) does not match "
                           f"torchrun's environment ({rank} of {world})")
    return Dist(rank, world), device


def main_process() -> bool:
    """False on every process but process 0 of a torchrun job (so that a command prints its summary once)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def wrap_ddp(module: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """`module` inside DistributedDataParallel when there are several processes, else `module` itself."""
    if not d.active:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)
