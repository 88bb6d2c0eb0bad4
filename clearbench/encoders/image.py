"""2D image preprocessing of windowed slices, and the slice encoder most 2D families share.

The CLEAR extraction scripts feed each windowed slice through ``Resize(224) -> CenterCrop(224) -> ToTensor ->
Normalize(ImageNet)`` with the grey value replicated to three channels. :class:`ImageTransform` does the same
in torch, batched, on whatever device the slices are on, so a GPU run never round-trips through PIL. Every
number is a card setting, so BiomedCLIP's CLIP statistics or SAM2's plain 224x224 resize are the same code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from clearbench.encoders.base import SliceEncoder
from clearbench.encoders.family import EncoderSpec, Family
from clearbench.errors import ClearbenchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The paper's 2D scripts; torchvision's Resize defaults to bilinear (with antialiasing on PIL images).
IMAGENET_224: dict[str, Any] = {
    "size": 224,
    "crop": 224,
    "interpolation": "bilinear",
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
    "channels": 3,
}

_MODES = ("bilinear", "bicubic", "nearest", "area")


@dataclass(frozen=True)
class ImageTransform:
    """Windowed slices ``[N, H, W]`` in [0, 1] -> a normalised ``[N, C, crop, crop]`` float32 batch.

    ``size``: an int resizes the shortest side to it (torchvision's ``Resize(int)``); a pair ``[h, w]`` resizes
    to exactly that; None keeps the size. ``crop``: a centre crop to ``crop x crop`` (None: no crop).
    """

    size: int | tuple[int, int] | None = 224
    crop: int | None = 224
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ImageTransform:
        size = settings.get("size")
        if isinstance(size, (list, tuple)):
            size = (int(size[0]), int(size[1]))
        elif size is not None:
            size = int(size)
        mode = str(settings.get("interpolation", "bilinear"))
        if mode not in _MODES:
            raise ClearbenchError(f"unknown interpolation {mode!r}; use one of {', '.join(_MODES)}")
        channels = int(settings.get("channels", 3))
        mean = tuple(float(m) for m in settings.get("mean", IMAGENET_MEAN))
        std = tuple(float(s) for s in settings.get("std", IMAGENET_STD))
        if len(mean) != channels or len(std) != channels:
            raise ClearbenchError(f"mean and std need {channels} values each (one per channel), got {mean} and {std}")
        crop = settings.get("crop")
        return cls(
            size=size,
            crop=int(crop) if crop is not None else None,
            interpolation=mode,
            mean=mean,
            std=std,
            channels=channels,
        )

    def _resized_shape(self, h: int, w: int) -> tuple[int, int]:
        if isinstance(self.size, tuple):
            return self.size
        assert self.size is not None
        if h <= w:  # torchvision: the long side is int(size * long / short)
            return self.size, int(self.size * w / h)
        return int(self.size * h / w), self.size

    def __call__(self, slices: torch.Tensor) -> torch.Tensor:
        if slices.ndim != 3:
            raise ValueError(f"expected windowed slices [N, H, W], got shape {tuple(slices.shape)}")
        x = slices.float().unsqueeze(1)
        if self.size is not None:
            shape = self._resized_shape(*x.shape[-2:])
            if shape != tuple(x.shape[-2:]):
                smooth = self.interpolation in ("bilinear", "bicubic")
                x = F.interpolate(
                    x, size=shape, mode=self.interpolation, antialias=smooth, align_corners=False if smooth else None
                )
                # An 8-bit PIL image cannot overshoot; bicubic on floats can.
                x = x.clamp_(0.0, 1.0)
        if self.crop is not None:
            x = _centre_crop(x, self.crop)
        x = x.expand(-1, self.channels, -1, -1)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return ((x - mean) / std).contiguous()


def _centre_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """torchvision's CenterCrop: pad with zeros when smaller, then take the centre (rounding as it does)."""
    h, w = x.shape[-2:]
    if h < crop or w < crop:
        ph, pw = max(crop - h, 0), max(crop - w, 0)
        x = F.pad(x, (pw // 2, (pw + 1) // 2, ph // 2, (ph + 1) // 2))
        h, w = x.shape[-2:]
    top = round((h - crop) / 2.0)
    left = round((w - crop) / 2.0)
    return x[..., top : top + crop, left : left + crop]


def overlay_settings(base: Mapping[str, Any], card: Mapping[str, Any]) -> dict[str, Any]:
    """The model's own settings with the card's set values on top; ``size``/``crop`` of 0 turn that step off.

    For families whose defaults come from the model (a processor config, timm's ``pretrained_cfg``): the card
    leaves a key unset (None) to take the model's value.
    """
    settings = {**base, **{k: v for k, v in card.items() if v is not None}}
    for key in ("size", "crop"):
        if settings.get(key) == 0:
            settings[key] = None
    return settings


class ImageSliceEncoder(SliceEncoder):
    """A 2D backbone that maps a normalised image batch to ``(n, dim)``, with its :class:`ImageTransform`."""

    def __init__(self, spec: EncoderSpec, model: nn.Module, transform: ImageTransform) -> None:
        super().__init__(spec.name, spec.dim, model, spec.device, spec.provenance)
        self.transform = transform

    def preprocess(self, slices: torch.Tensor) -> torch.Tensor:
        return self.transform(slices)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)


class ImageSliceFamily(Family):
    """Base for 2D families whose module maps an image batch to embeddings: ImageNet 224 preprocessing."""

    kind: ClassVar = "slice"
    default_preprocessing: ClassVar[Mapping[str, Any]] = IMAGENET_224

    def wrap(self, model: nn.Module, spec: EncoderSpec) -> SliceEncoder:
        return ImageSliceEncoder(spec, model, ImageTransform.from_settings(spec.preprocessing))
