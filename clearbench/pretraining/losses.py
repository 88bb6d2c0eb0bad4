"""MoCo v3's contrastive loss, and the all-gather that lets every rank contrast against every key.

Conventions (MoCo v3, ``moco/builder.py``), kept so that temperatures and loss curves compare with the
paper's runs:

- ``q`` and ``k`` are L2-normalised; the logits are ``q @ k.T / tau`` (cosine similarity over ``tau``, the
  paper's Eq. 2 inside an exp).
- The keys are gathered from all ranks, so the ``N`` local queries are contrasted against ``world * N`` keys;
  the positive of local query ``i`` is global key ``rank * N + i``.
- The cross-entropy is multiplied by ``2 * tau``. MoCo v3 does this so that the gradient's scale does not
  change with the temperature; every loss value clearbench logs carries this factor.
- The gathered keys carry no gradient: keys come from the momentum encoder, which is never trained by
  backpropagation, so nothing is lost and no autograd-aware all-gather is needed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` outside torchrun."""
    if distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, in rank order; no gradient flows through it.

    Every rank must pass the same shape (the loader drops the last incomplete batch for this reason).
    """
    if not distributed() or dist.get_world_size() == 1:
        return tensor.detach()
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts, dim=0)


def contrastive_logits(q: torch.Tensor, keys: torch.Tensor, tau: float) -> torch.Tensor:
    """Cosine similarities over ``tau``, ``(N, M)``, computed in float32 even under autocast."""
    q = F.normalize(q.float(), dim=1)
    keys = F.normalize(keys.float(), dim=1)
    return q @ keys.T / tau


def positive_index(n: int, offset: int, device: torch.device) -> torch.Tensor:
    """The column of each local query's positive key among the gathered keys."""
    return torch.arange(n, device=device) + offset


def info_nce(q: torch.Tensor, keys: torch.Tensor, tau: float, offset: int = 0) -> torch.Tensor:
    """InfoNCE (paper Eq. 1) of local queries ``q`` ``(N, C)`` against all keys ``(M, C)``, times ``2 * tau``.

    ``keys`` are already gathered; the positive of ``q[i]`` is ``keys[offset + i]`` (``offset = rank * N``).
    """
    logits = contrastive_logits(q, keys, tau)
    labels = positive_index(q.shape[0], offset, logits.device)
    return F.cross_entropy(logits, labels) * (2.0 * tau)
