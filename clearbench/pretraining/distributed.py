"""Replica checks for data-parallel pretraining: every rank must hold the same weights.

DDP keeps the replicas in step by averaging gradients; a bug there (or a rank that skipped a step) would
train several diverging models and export one of them. The ranks compare a digest of their weights at
each checkpoint instead. The process group, ranks and devices are :mod:`clearbench.runtime`'s.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from clearbench.errors import ClearbenchError
from clearbench.runtime import DistContext, gather_objects


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
