"""``hu-hist``: a non-learned floor, the intensity histogram and moments of each windowed slice.

Every leaderboard needs a floor: if a foundation model cannot beat "how much of this slice is in the
window, and how bright is it", its features add nothing for that task. It is also the demo's encoder, since
it needs no weights and runs at thousands of slices per second on a CPU.

The embedding of one windowed slice (values in [0, 1], one window per call), over **all** pixels:

- ``bins`` histogram fractions over [0, 1] (pixels clipped by the window fall in the first or last bin);
- mean, standard deviation, skewness and excess kurtosis;
- the fraction of pixels at or below the window's lower end (0) and at or above its upper end (1);
- the mean and standard deviation of the pixels strictly inside the window (0 for a slice with none).

All pixels rather than a body mask, because the encoder only sees windowed values: in the abdomen window air
and lung are both 0, so "body" cannot be told from "outside" without the HU volume. The in-window moments
carry the tissue signal that the clipped air would otherwise drown. No resizing: every feature is a fraction
or a moment, so it does not depend on the slice's pixel count. Slices larger than ``max_side`` pixels are
read on a regular grid (every s-th pixel in both directions, s the smallest step that fits): an unbiased
sample of the same distribution at a quarter of the cost for a 512x512 slice (``max_side = 0`` reads all).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import NonNegativeInt, PositiveInt
from torch import nn

from clearbench.encoders.base import SliceEncoder
from clearbench.encoders.family import EncoderSpec, Family
from clearbench.settings import Settings

N_MOMENTS = 8  # mean, std, skew, kurtosis, fraction low, fraction high, in-window mean, in-window std
_EPS = 1e-6


class HuHistogram(nn.Module):
    """Windowed slices ``[N, H, W]`` -> ``(N, bins + 8)`` histogram and moment features."""

    def __init__(self, bins: int = 32, max_side: int = 256) -> None:
        super().__init__()
        if bins < 2:
            raise ValueError(f"hu-hist needs at least 2 bins, got {bins}")
        self.bins = int(bins)
        self.max_side = int(max_side)

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        if self.max_side > 0 and max(slices.shape[-2:]) > self.max_side:
            step = -(-max(slices.shape[-2:]) // self.max_side)
            slices = slices[:, ::step, ::step]
        x = slices.float().flatten(1)  # (N, P)
        n, p = x.shape
        # One bincount over (row, bin) pairs is a single pass, unlike a scatter of a ones tensor.
        idx = (x * self.bins).clamp_(0, self.bins - 1).to(torch.int32)
        idx += torch.arange(0, n * self.bins, self.bins, device=x.device, dtype=torch.int32)[:, None]
        hist = torch.bincount(idx.flatten(), minlength=n * self.bins).view(n, self.bins).float() / p

        mean = x.mean(1, keepdim=True)
        centred = x - mean
        var = centred.square().mean(1, keepdim=True)
        std = var.sqrt()
        flat = std < _EPS  # a constant slice has no shape: report skew and kurtosis as 0
        z = centred.div_(torch.where(flat, torch.ones_like(std), std))
        z2 = z.square()
        skew = torch.where(flat, 0.0, (z2 * z).mean(1, keepdim=True))
        kurt = torch.where(flat, 0.0, z2.square_().mean(1, keepdim=True) - 3.0)

        low = (x <= 0.0).sum(1, keepdim=True) / p
        high = (x >= 1.0).sum(1, keepdim=True) / p
        inside = (x > 0.0) & (x < 1.0)
        count = inside.sum(1, keepdim=True).clamp_(min=1)
        in_x = x.where(inside, 0.0)
        in_mean = in_x.sum(1, keepdim=True) / count
        in_var = (in_x - in_mean).where(inside, 0.0).square_().sum(1, keepdim=True) / count
        return torch.cat([hist, mean, std, skew, kurt, low, high, in_mean, in_var.sqrt()], dim=1)


def build_hu_hist(bins: int = 32, max_side: int = 256) -> HuHistogram:
    """The feature extractor; it has no parameters and no state-dict keys."""
    return HuHistogram(bins, max_side)


class HuHistEncoder(SliceEncoder):
    """The histogram features need no preprocessing beyond float32 ``[N, H, W]``."""

    def __init__(self, spec: EncoderSpec, model: nn.Module) -> None:
        super().__init__(spec.name, spec.dim, model, spec.device, spec.provenance)

    def preprocess(self, slices: torch.Tensor) -> torch.Tensor:
        if slices.ndim != 3:
            raise ValueError(f"expected windowed slices [N, H, W], got shape {tuple(slices.shape)}")
        return slices.float()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)


class HuHistParams(Settings):
    """A ``hu-hist`` card's ``[params]``."""

    bins: PositiveInt = 32  # histogram bins over the window
    max_side: NonNegativeInt = 256  # larger slices are read on a grid; 0 reads every pixel


class HuHistFamily(Family):
    name: ClassVar[str] = "hu-hist"
    kind: ClassVar = "slice"
    learned: ClassVar[bool] = False
    params_model: ClassVar[type[Settings]] = HuHistParams

    def build(self, params: Mapping[str, Any]) -> nn.Module:
        return build_hu_hist(int(params["bins"]), int(params["max_side"]))

    def output_dim(self, params: Mapping[str, Any]) -> int:
        return int(params["bins"]) + N_MOMENTS

    def wrap(self, model: nn.Module, spec: EncoderSpec) -> SliceEncoder:
        return HuHistEncoder(spec, model)
