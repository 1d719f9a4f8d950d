"""This process's place in a ``torchrun`` job, and each rank's share of a split."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

__all__ = ["Dist", "epoch_indices"]


class Dist:
    """This process's place in a ``torchrun`` job (world size 1 without one).

    Args:
        device_arg: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, device_arg: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device_arg == "cuda" or (device_arg == "auto" and torch.cuda.is_available())
        if use_cuda and not torch.cuda.is_available():
            raise SystemExit("--device cuda was asked for but CUDA is not available")
        if use_cuda:
            torch.cuda.set_device(local_rank)
            self.device = torch.device("cuda", local_rank)
        else:
            self.device = torch.device("cpu")
        if self.world > 1:
            dist.init_process_group("nccl" if use_cuda else "gloo")

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the one that writes files and logs."""
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (a collective call)."""
        if self.world == 1:
            return [obj]
        objects: list[Any] = [None] * self.world
        dist.all_gather_object(objects, obj)
        return objects

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks (a collective call)."""
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Tear the process group down (after a final :meth:`barrier` of every rank)."""
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def epoch_indices(size: int, seed: int, epoch: int, world: Dist, shuffle: bool) -> list[int]:
    """This rank's sample order: a DistributedSampler (padded to equal shares) for any world."""
    sampler = DistributedSampler(range(size), num_replicas=world.world, rank=world.rank,
                                 shuffle=shuffle, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return list(sampler)
