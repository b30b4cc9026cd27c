"""Multi-process training through PyTorch's own engine (``torchrun``): DDP, gloo on CPU, NCCL on GPU.

``torchrun --nproc_per_node N -m attnseg train DATA --out RUN`` sets ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``; :func:`init_from_env` joins the process group.
Every rank builds the same global batch plan and takes its own slice (DistributedSampler's job,
done so that a global batch is the same set of patches for any number of processes); only rank 0
writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device_type: str = "cpu") -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank only if ``flag`` is True on every rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([0 if flag else 1], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item()) == 0


def mean_over_ranks(value: float, info: DistInfo, device: torch.device) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / info.world_size


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_model(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """DDP over the parameters that currently require grad (re-wrap after freezing changes)."""
    if not info.enabled:
        return model

    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids)
