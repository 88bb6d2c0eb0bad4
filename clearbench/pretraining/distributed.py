"""Running under ``torchrun``: the process group, the device of each rank, and replica checks.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; a plain
``clearbench pretrain`` sees none of them and runs as a world of one. NCCL is used on GPUs and gloo on CPUs
(the tests run two gloo processes on one machine).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from clearbench.errors import ClearbenchError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool  # we created the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device: str = "auto") -> DistContext:
    """Join torchrun's process group when there is one, and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ClearbenchError("--device cuda was asked for, but torch sees no GPU (see `clearbench doctor`)")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank, world, local_rank, dev, owns)


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order, on every rank."""
    if not ctx.active:
        return [obj]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def all_mean(ctx: DistContext, value: torch.Tensor) -> float:
    """The mean of a scalar over ranks (for logging)."""
    value = value.detach().float().reshape(1)
    if ctx.active:
        dist.all_reduce(value)
        value /= ctx.world
    return float(value.item())


def fingerprint(*modules: nn.Module) -> str:
    """A digest of every parameter's bytes, to check that all replicas hold the same weights."""
    h = hashlib.sha256()
    for module in modules:
        for name, p in module.named_parameters():
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_replicas(ctx: DistContext, *modules: nn.Module) -> list[str]:
    """The fingerprint of each rank; raises when the replicas diverged (a DDP bug, never expected)."""
    prints = gather_objects(ctx, fingerprint(*modules))
    if len(set(prints)) > 1:
        raise ClearbenchError(
            "the model replicas on different ranks hold different weights "
            f"({', '.join(p[:12] for p in prints)}); the run is stopped to avoid training a corrupt model"
        )
    return prints
