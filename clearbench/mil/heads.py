"""The heads trained on frozen embeddings: attention-MIL for slice encoders, an MLP for volume encoders.

Both follow the paper's supplement A (and its code): slice embeddings are projected to 256-d, pooled by
attention (Ilse et al. 2018, the paper's Eq. 5-6), normalised and classified by a one-hidden-layer MLP.

Unlike the paper's code, STAMP and TRIDENT, padding never takes part in the attention softmax: padded
instances get a score of -inf, so a bag gives the same logits whether it is batched with longer bags
or not. A bag with no valid instance at all (which the batch builder never makes) pools to zeros
instead of NaN.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clearbench.mil.head_params import ABMILParams, MLPParams

# The defaults of each head's keyword arguments, from its parameter model (one place for both).
_ABMIL = ABMILParams()
_MLP = MLPParams()


def unpack(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Packed rows ``(n_valid, d)`` laid out as ``(B, K, d)`` by ``mask`` (zeros on padding)."""
    if mask is None:
        raise ValueError("packed instances need the mask that lays them out")
    out = values.new_zeros((*mask.shape, values.shape[-1]))
    out[mask] = values
    return out


def classifier(in_dim: int, hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    """LayerNorm, Linear(in_dim -> hidden), Dropout, SiLU, Linear(hidden -> n_out): the paper's head,
    after the attention pool in ABMIL and on the scan vector in the MLP head."""
    return nn.Sequential(
        nn.LayerNorm(in_dim),
        nn.Linear(in_dim, hidden),
        nn.Dropout(dropout),
        nn.SiLU(),
        nn.Linear(hidden, n_out),
    )


class AttentionPool(nn.Module):
    """``a_k = softmax_k(w^T tanh(V h_k))``, optionally gated: ``w^T (tanh(V h_k) * sigmoid(U h_k))``."""

    def __init__(self, dim: int, attention_dim: int, gated: bool = False) -> None:
        super().__init__()
        self.gated = gated
        # One matmul for V (and U when gated): the two projections share their input.
        self.proj = nn.Linear(dim, attention_dim * (2 if gated else 1))
        self.score = nn.Linear(attention_dim, 1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``h`` ``(B, K, dim)``, ``mask`` ``(B, K)`` True for real instances -> pooled ``(B, dim)``, weights ``(B, K)``."""
        z = self.proj(h)
        if self.gated:
            v, u = z.chunk(2, dim=-1)
            z = torch.tanh(v) * torch.sigmoid(u)
        else:
            z = torch.tanh(z)
        scores = self.score(z).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
            # An all-padding row would softmax to NaN; give it uniform zeros instead.
            empty = ~mask.any(dim=-1, keepdim=True)
            scores = scores.masked_fill(empty, 0.0)
        weights = torch.softmax(scores, dim=-1)
        if mask is not None:
            weights = weights * mask.to(weights.dtype)
        pooled = torch.bmm(weights.unsqueeze(1), h).squeeze(1)
        return pooled, weights


class ABMIL(nn.Module):
    """Attention-MIL head for bags of slice embeddings (docs/ARCHITECTURE.md, "protocol")."""

    def __init__(
        self,
        in_dim: int,
        n_out: int,
        hidden: int = _ABMIL.hidden,
        attention_dim: int = _ABMIL.attention_dim,
        dropout: float = _ABMIL.dropout,
        gated: bool = _ABMIL.gated,
    ) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.attention = AttentionPool(hidden, attention_dim, gated=gated)
        self.classifier = classifier(hidden, hidden, n_out, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, n_out)`` and attention ``(B, K)`` (0 on padding) of a batch of bags.

        ``x`` is either padded, ``(B, K, in_dim)``, or *packed*: ``(n_valid, in_dim)``, the real instances
        only, in the row-major order of ``mask`` ``(B, K)``. The packed form spares the widest layer the
        padding: its instances are projected first and only then laid out as ``(B, K, hidden)``.
        """
        h = unpack(self.encoder(x), mask) if x.dim() == 2 else self.encoder(x)
        pooled, weights = self.attention(h, mask)
        return self.classifier(pooled), weights


class MLPHead(nn.Module):
    """The head for volume encoders, which give one vector per scan (docs/ARCHITECTURE.md, "protocol")."""

    def __init__(self, in_dim: int, n_out: int, hidden: int = _MLP.hidden, dropout: float = _MLP.dropout) -> None:
        super().__init__()
        self.classifier = classifier(in_dim, hidden, n_out, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        """``x`` ``(B, K, in_dim)`` with K == 1 for volume encoders (or packed, as for ABMIL); a longer bag is
        mean-pooled over its mask."""
        if x.dim() == 2:
            x = unpack(x, mask)
        if x.shape[1] == 1:
            pooled = x[:, 0]
        elif mask is None:
            pooled = x.mean(dim=1)
        else:
            m = mask.to(x.dtype).unsqueeze(-1)
            pooled = (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        return self.classifier(pooled), None


def build_head(name: str, in_dim: int, n_out: int, **params: Any) -> nn.Module:
    """A fresh, randomly initialised head by name, with the task card's head parameters (which the card checks)."""
    if name == "abmil":
        return ABMIL(in_dim, n_out, **params)
    if name == "mlp":
        return MLPHead(in_dim, n_out, **params)
    raise ValueError(f"unknown head '{name}': use abmil or mlp")
