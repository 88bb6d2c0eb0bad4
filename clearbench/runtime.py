"""Where this process runs: its device, and its rank in a ``torchrun`` job. One owner for embed, run and pretrain.

``--device`` means the same in every command: ``auto`` (this rank's GPU when torch sees one, else the CPU),
``cpu``, ``cuda`` (this rank's GPU, ``cuda:LOCAL_RANK``, so one command line serves every rank of a job) or
``cuda:N``. Asking for a GPU that torch does not see is one error with one message, whichever command asks.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; a plain command sees none of them and runs as a
world of one, with no process group. Inside a job the group uses nccl on GPUs and gloo on CPUs (the tests run
two gloo processes on one machine); it is created here only if the caller has not made one already, and
destroyed only if it was made here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from clearbench.errors import ClearbenchError


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job: a world of one outside torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ClearbenchError(
            f"{name}={value!r} is not an integer; torchrun sets it, so unset it or run under torchrun"
        ) from None


def env_ranks() -> Ranks:
    """``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as torchrun sets them (0, 1, 0 outside torchrun)."""
    return Ranks(_env_int("RANK", 0), max(1, _env_int("WORLD_SIZE", 1)), _env_int("LOCAL_RANK", 0))


def resolve_device(device: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """The torch device ``--device`` names for this rank; a GPU that torch does not see is a ClearbenchError.

    ``auto`` is this rank's GPU when there is one, else the CPU. A bare ``cuda`` (or ``auto`` on a GPU
    machine) is GPU ``local_rank`` (by default ``LOCAL_RANK``) modulo the GPUs this machine has.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ClearbenchError(
            f"--device {device}: not a torch device; use --device cpu, cuda, cuda:N or auto"
        ) from None
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        raise ClearbenchError(
            f"--device {device}: no CUDA device is available to torch; use --device cpu (or auto), "
            "and see `clearbench doctor`"
        )
    if dev.index is None:
        rank = env_ranks().local_rank if local_rank is None else local_rank
        dev = torch.device("cuda", rank % torch.cuda.device_count())
    return dev


@dataclass(frozen=True)
class DistContext:
    """This process in its job: rank, world size, and the device it computes on.

    In a world of one every collective below is the identity, so callers never test for torchrun themselves.
    """

    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool = False  # the group was created here, so :func:`close` destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there are other ranks to talk to."""
        return self.world > 1


def start(device: str | torch.device = "auto") -> DistContext:
    """Resolve ``device`` for this rank, make it current, and join torchrun's process group when in a job."""
    ranks = env_ranks()
    dev = resolve_device(device, ranks.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if ranks.world == 1:
        return DistContext(0, 1, ranks.local_rank, dev)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), ranks.local_rank, dev, owns)


def close(ctx: DistContext) -> None:
    """Leave the process group, if :func:`start` made it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order, on every rank (``[obj]`` in a world of one)."""
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
