"""An example encoder family from a third-party package, registered through ``clearbench.encoders``.

It shows both things a plugin can add: a family (code) and cards (data). The family is a single strided
convolution plus global average pooling; its cards use random weights, so the tests need no files. It also
declares pretraining variants, so ``clearbench pretrain`` can train it and write a card for the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import PositiveInt
from torch import nn

from clearbench.encoders.image import ImageSliceFamily
from clearbench.settings import Settings


def build_tinyconv(width: int = 16) -> nn.Module:
    """Conv 7x7 stride 4 -> ReLU -> global average pool: ``(n, 3, H, W)`` -> ``(n, width)``; keys ``conv.*``."""
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(3, width, 7, stride=4))
    net.add_module("act", nn.ReLU())
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    return net


class TinyConvParams(Settings):
    """A card's ``[params]``: every key it may set, typed, with its default (``default_params`` comes from it)."""

    width: PositiveInt = 16  # output channels, so the embedding dim


class TinyConvFamily(ImageSliceFamily):
    name: ClassVar[str] = "example-tinyconv"
    heads: ClassVar[tuple[str, ...]] = ("head.",)
    params_model: ClassVar[type[Settings]] = TinyConvParams
    default_preprocessing: ClassVar[Mapping[str, Any]] = {
        **ImageSliceFamily.default_preprocessing,
        "size": 64,
        "crop": 64,
    }
    # What makes the family pretrainable (``clearbench pretrain --arch example-tinyconv``): its sizes as card
    # parameters, and the one trained by default. The trained weights keep ``build``'s key layout (``conv.*``).
    pretrain_variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {"micro": {"width": 8}, "base": {"width": 16}}
    pretrain_default: ClassVar[str | None] = "base"
    display_name: ClassVar[str | None] = "TinyConv"

    def build(self, params: Mapping[str, Any]) -> nn.Module:
        return build_tinyconv(int(params["width"]))

    def infer_params(self, state_dict: Mapping[str, torch.Tensor], params: Mapping[str, Any]) -> dict[str, Any]:
        return {**params, "width": int(state_dict["conv.weight"].shape[0])}

    def output_dim(self, params: Mapping[str, Any]) -> int:
        return int(params["width"])


def clearbench_encoders() -> list[Any]:
    """What this package adds: the family, a folder of card files, and one card given as a table."""
    return [
        TinyConvFamily,
        Path(__file__).parent / "encoder_cards",
        {"name": "example-tinyconv-wide", "family": "example-tinyconv", "weights": "random:1", "params": {"width": 24}},
    ]
