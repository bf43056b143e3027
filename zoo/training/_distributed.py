"""Data-parallel training with torch.distributed, as launched by `torchrun` (`zoo train NAME --nproc N`).

Every rank loads the same data, splits it and fits the preprocessing the same way (all deterministic), builds the
same model and wraps it in DistributedDataParallel. Each epoch a DistributedSampler (seeded like the
single-process shuffle, with the epoch set) gives every rank its share of the same permutation, so the global
batches are exactly the single-process ones at the same global batch size: with gradients averaged across
ranks, the weights match single-process training. Validation runs on shards and torchmetrics reduces the
metrics across ranks. Only rank 0 writes checkpoints, cards and plots."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from zoo.errors import ZooError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def start(device: str) -> Ranks:
    """Join the process group torchrun set up (RANK, WORLD_SIZE, MASTER_ADDR... in the environment): gloo on
    CPU, nccl on CUDA. A process torchrun did not start is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    import torch.distributed as dist

    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        torch.cuda.set_device(ranks.local_rank)
    return ranks


def stop(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def wrap(model, ranks: Ranks, device: torch.device):
    """The model to train: itself, or wrapped in DistributedDataParallel."""
    if not ranks.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None)


def local_batch_size(batch_size: int, ranks: Ranks) -> int:
    if batch_size % ranks.world:
        raise ZooError(f"--nproc {ranks.world}: the global batch size {batch_size} must divide evenly among the "
                       f"processes (each takes batch_size / nproc samples a step)")
    return batch_size // ranks.world


def epoch_indices(n: int, seed: int, epoch: int, ranks: Ranks, limit: int | None) -> torch.Tensor:
    """This rank's samples for `epoch`, in order: its DistributedSampler share of the permutation that a
    single process draws with generator seed `seed + epoch` (of its first `limit` samples)."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=ranks.world, rank=ranks.rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    indices = torch.tensor(list(sampler), dtype=torch.int64)
    return indices[: math.ceil(limit / ranks.world)] if limit else indices


def shard(n: int, ranks: Ranks) -> torch.Tensor:
    """This rank's part of an evaluation set of `n` samples."""
    return torch.arange(ranks.rank, n, ranks.world)


def sum_across(values: list[float], ranks: Ranks) -> list[float]:
    if not ranks.distributed:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()
