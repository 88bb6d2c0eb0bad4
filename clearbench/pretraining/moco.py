"""The MoCo v3 network: backbone + projector + predictor, and a momentum copy updated by EMA.

Follows MoCo v3's ViT recipe (``MoCo_ViT`` in facebookresearch/moco-v3), which CLEAR used for all three
backbones: a 3-layer projector and a 2-layer predictor, each ``Linear (no bias) -> BN -> ReLU`` between
layers and a final ``BN`` without affine parameters. The momentum encoder is a copy of backbone + projector
(no predictor), never trained by backpropagation; after each step its parameters move towards the online
ones by ``θ_k <- m θ_k + (1 - m) θ_q`` (paper Eq. 3), with ``m`` raised from 0.99 towards 1 on a half
cosine over training. BatchNorm running statistics are not averaged: both encoders run in training mode
and normalise with batch statistics, as in MoCo v3.

The online part is its own module (:class:`OnlineNetwork`) so that DistributedDataParallel wraps only what
receives gradients, in one forward call for both views.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from clearbench.pretraining.lecl import lecl_info_nce
from clearbench.pretraining.losses import gather_no_grad, rank_and_world


def mlp_head(num_layers: int, in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """MoCo v3's MLP head: bias-free linears, BN + ReLU between them, a last BN without affine."""
    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = in_dim if i == 0 else hidden_dim
        d_out = out_dim if i == num_layers - 1 else hidden_dim
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if i < num_layers - 1:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        else:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


class ProjectedBackbone(nn.Module):
    """A backbone (image batch -> ``(n, feat_dim)``) followed by the 3-layer projector."""

    def __init__(self, backbone: nn.Module, feat_dim: int, proj_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = mlp_head(3, feat_dim, mlp_dim, proj_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))


class OnlineNetwork(nn.Module):
    """The trained branch: queries ``predictor(projector(backbone(view)))`` for both views at once."""

    def __init__(self, encoder: ProjectedBackbone, proj_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.predictor = mlp_head(2, proj_dim, mlp_dim, proj_dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Two separate passes: BatchNorm statistics are per view, as in MoCo v3.
        return self.predictor(self.encoder(x1)), self.predictor(self.encoder(x2))


class MoCo(nn.Module):
    """Online network plus momentum encoder; :meth:`loss` is MoCo v3's symmetric loss (LECL optional)."""

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        proj_dim: int = 256,
        mlp_dim: int = 4096,
        tau: float = 0.2,
    ) -> None:
        super().__init__()
        self.tau = float(tau)
        self.online = OnlineNetwork(ProjectedBackbone(backbone, feat_dim, proj_dim, mlp_dim), proj_dim, mlp_dim)
        self.momentum = copy.deepcopy(self.online.encoder).requires_grad_(False)

    @property
    def backbone(self) -> nn.Module:
        """The online backbone: what pretraining exports as the encoder."""
        return self.online.encoder.backbone

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        """``θ_k <- m θ_k + (1 - m) θ_q`` over the parameters of backbone and projector."""
        ema_update_(self.momentum, self.online.encoder, m)

    @torch.no_grad()
    def keys(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.momentum(x1), self.momentum(x2)

    def loss(
        self,
        q1: torch.Tensor,
        q2: torch.Tensor,
        k1: torch.Tensor,
        k2: torch.Tensor,
        lesion: torch.Tensor | None = None,
        lam: float = 0.0,
    ) -> torch.Tensor:
        """``ctr(q1, k2) + ctr(q2, k1)`` with keys gathered from all ranks.

        ``ctr`` is InfoNCE, or the LECL loss when ``lam > 0`` and ``lesion`` (bool per local sample) is given.
        """
        rank, _ = rank_and_world()
        offset = rank * q1.shape[0]
        k1_all, k2_all = gather_no_grad(k1), gather_no_grad(k2)
        if lesion is None or lam == 0:
            lesion_all = torch.zeros(k1_all.shape[0], dtype=torch.bool, device=k1_all.device)
        else:
            lesion_all = gather_no_grad(lesion.to(device=k1.device, dtype=torch.uint8)).bool()
        return lecl_info_nce(q1, k2_all, self.tau, lesion_all, lam, offset) + lecl_info_nce(
            q2, k1_all, self.tau, lesion_all, lam, offset
        )


@torch.no_grad()
def ema_update_(target: nn.Module, source: nn.Module, m: float) -> None:
    """In place, for matching parameters: ``target <- m * target + (1 - m) * source``."""
    t_params: list[torch.Tensor] = list(target.parameters())
    s_params: list[torch.Tensor] = list(source.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("EMA target and source have different parameter lists")
    torch._foreach_lerp_(t_params, [p.detach() for p in s_params], 1.0 - m)


def momentum_at(epoch: float, epochs: int, base: float = 0.99) -> float:
    """MoCo v3's half-cosine momentum schedule: ``base`` at epoch 0, rising to 1 at the end."""
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)) * (1.0 - base)


def lr_at(epoch: float, epochs: int, peak: float, warmup_epochs: float) -> float:
    """Linear warmup from 0 to ``peak`` over ``warmup_epochs``, then a half cosine to 0 (MoCo v3)."""
    if epoch < warmup_epochs:
        return peak * epoch / warmup_epochs
    span = max(epochs - warmup_epochs, 1e-12)
    return peak * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / span))
