"""Where this process stands in a ``torchrun`` job: rank, world size, its device, and a barrier.

Outside torchrun (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) everything degrades to a single process and no
process group is created. Inside, the group uses gloo on CPU and nccl on GPU; it is created here only if
the caller has not made one already, and torn down only if it was made here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> Ranks:
        """Join the torchrun job described by the environment, if any."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        owns = False
        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            owns = True
        return cls(rank, world, local_rank, owns)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` from every rank, in rank order (just ``[obj]`` in a single process)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def rank_device(device: str | torch.device | None, current: torch.device | None = None) -> torch.device:
    """The device this process embeds on: ``device``, else ``current``, else its GPU if any, else the CPU.

    A bare ``cuda`` means this rank's GPU (``cuda:LOCAL_RANK``), so one command line serves every rank.
    """
    if device is None and current is not None:
        return current
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(1, torch.cuda.device_count()))
    return dev


def env_rank() -> int:
    """This process's rank in a torchrun job (0 outside one)."""
    return int(os.environ.get("RANK", "0"))
