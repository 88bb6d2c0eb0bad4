"""MoCo v3's two asymmetric views of one windowed CT slice, on tensors with torchvision transforms v2.

MoCo v3 (following BYOL) augments the two views differently:

=====================  =========================  ==================================
step                   view 1                     view 2
=====================  =========================  ==================================
random resized crop    scale (crop_min, 1)        scale (crop_min, 1)
colour jitter          p=0.8                      p=0.8
Gaussian blur          p=1.0, σ in [0.1, 2]       p=0.1, σ in [0.1, 2]
solarize               never                      p=0.2 (threshold 0.5)
horizontal flip        p=0.5                      p=0.5
=====================  =========================  ==================================

A CT slice is grey, so colour jitter keeps only brightness 0.4 and contrast 0.4: MoCo v3's saturation and hue
jitter and its random grayscale are exact no-ops on a grey image replicated to three channels, and are
left out. Everything runs on one channel ``[1, H, W]`` in [0, 1]; the channel replication and ImageNet
normalisation happen on the training device (:func:`to_model_input`), which keeps the loader 3x lighter.
The blur kernel is 13 px, wide enough for ±3σ at σ = 2 (PIL's blur radius, as in MoCo v3, is σ); it runs
as two 1-D passes (:class:`SeparableGaussianBlur`), which makes it 7x cheaper than torchvision's 2-D
convolution: the blur was 85 % of the loader's work per view at 224 px.

For LECL, a lesion slice skips the random resized crop: view 1 is the whole slice resized to the output
size, view 2 a lesion-centred crop (:func:`clearbench.pretraining.lecl.lesion_crop`) resized likewise. View 2
gets the second pipeline, as in CLEAR's code. With MoCo v3's symmetric loss, ``ctr(q1, k2)`` is the
paper's "momentum encoder sees the lesion crop, base encoder the full slice"; ``ctr(q2, k1)`` is its mirror.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from clearbench.pretraining.lecl import lesion_crop

BLUR_KERNEL = 13
BLUR_SIGMA = (0.1, 2.0)


@dataclass(frozen=True)
class AugmentConfig:
    """Output size and crop ranges (area fractions of the slice) of the two views."""

    size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    lesion_scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        for name in ("crop_scale", "lesion_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"{name} must satisfy 0 < min <= max <= 1, got {(lo, hi)}")
        if self.size < 8:
            raise ValueError(f"image size must be at least 8 px, got {self.size}")


class SeparableGaussianBlur(v2.GaussianBlur):
    """torchvision's GaussianBlur (same σ draw, kernel and reflect padding), as a row then a column pass.

    A Gaussian kernel is the outer product of two 1-D kernels, so the result equals the 2-D convolution up
    to float rounding, at ``2k`` instead of ``k²`` multiplications per pixel. Tensors ``[..., C, H, W]`` only.
    """

    def transform(self, inpt: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        sigma = float(params["sigma"][0])
        size = self.kernel_size[0]
        half = (size - 1) / (2.0 * math.sqrt(2.0))  # torchvision's kernel: exp(-(i - c)² / (2σ²)), normalised
        x = torch.linspace(-half, half, size, dtype=inpt.dtype, device=inpt.device)
        kernel = torch.softmax(-((x / sigma) ** 2), dim=0)
        shape = inpt.shape
        image = inpt.reshape(-1, *shape[-3:])
        channels, pad = shape[-3], size // 2
        image = F.pad(image, [pad, pad, pad, pad], mode="reflect")
        image = F.conv2d(image, kernel.view(1, 1, 1, size).expand(channels, 1, 1, size), groups=channels)
        image = F.conv2d(image, kernel.view(1, 1, size, 1).expand(channels, 1, size, 1), groups=channels)
        return image.reshape(shape)


def _photometric(blur_p: float, solarize_p: float) -> v2.Compose:
    steps: list[v2.Transform] = [
        v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8),
        v2.RandomApply([SeparableGaussianBlur(BLUR_KERNEL, sigma=BLUR_SIGMA)], p=blur_p),
    ]
    if solarize_p > 0:
        steps.append(v2.RandomSolarize(threshold=0.5, p=solarize_p))
    steps.append(v2.RandomHorizontalFlip(p=0.5))
    return v2.Compose(steps)


class TwoViews:
    """``(view1, view2)``, each ``[1, size, size]`` float32 in [0, 1], from one windowed slice.

    Randomness comes from torch's global generator, so a caller that seeds it per sample (the pretraining
    dataset does) gets the same views on every run and after a resume.
    """

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config
        self.crop = v2.RandomResizedCrop(config.size, scale=config.crop_scale, ratio=config.ratio, antialias=True)
        self.view1 = _photometric(blur_p=1.0, solarize_p=0.0)
        self.view2 = _photometric(blur_p=0.1, solarize_p=0.2)

    def __call__(
        self, image: torch.Tensor, lesion_box: Sequence[float] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if image.ndim != 3 or image.shape[0] != 1:
            raise ValueError(f"expected a windowed slice [1, H, W], got shape {tuple(image.shape)}")
        if lesion_box is None:
            a, b = self.crop(image), self.crop(image)
        else:
            size = [self.config.size, self.config.size]
            a = TF.resize(image, size, antialias=True)
            x1, y1, x2, y2 = lesion_box
            top, left, h, w = lesion_crop(
                (x1, y1, x2, y2), image.shape[-2], image.shape[-1], self.config.lesion_scale, self.config.ratio
            )
            b = TF.resized_crop(image, top, left, h, w, size, antialias=True)
        # Antialiased resampling can overshoot [0, 1] slightly; a PIL image could not.
        return self.view1(a.clamp_(0.0, 1.0)), self.view2(b.clamp_(0.0, 1.0))


def to_model_input(
    views: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """``[N, 1, H, W]`` grey views in [0, 1] -> ``[N, C, H, W]`` normalised, grey replicated to C channels."""
    mean_t = torch.as_tensor(mean, dtype=views.dtype, device=views.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=views.dtype, device=views.device).view(1, -1, 1, 1)
    return (views.expand(-1, mean_t.shape[1], -1, -1) - mean_t) / std_t
