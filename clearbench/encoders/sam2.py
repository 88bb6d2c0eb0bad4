"""SAM2's Hiera image encoder as a slice encoder: ``vision_features`` mean-pooled over space, 256-d.

The CLEAR paper uses SAM2 (Hiera-L, ``sam2_hiera_large.pt``) as a 2D baseline: each windowed slice goes
through ``Resize(224) -> CenterCrop(224) -> ImageNet normalisation`` (not SAM2's native 1024 px), and the
embedding is the stride-16 ``vision_features`` map (14 x 14 x 256 at 224 px) averaged over its positions.

The architecture comes from Meta's ``sam2`` package (the ``sam2`` extra). The encoder is built directly from
``ImageEncoder(Hiera, FpnNeck, scalp=1)`` with the numbers of ``configs/sam2/sam2_hiera_l.yaml``, rather than
through ``build_sam2``, which defaults to CUDA and builds the memory and mask-decoder parts too. A SAM2
checkpoint is ``{"model": <SAM2Base state dict>}``; the encoder's keys are those under ``image_encoder.``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field, NonNegativeInt, PositiveInt
from torch import nn

from clearbench.encoders.base import SliceEncoder
from clearbench.encoders.family import EncoderSpec, StateDict
from clearbench.encoders.image import ImageSliceEncoder, ImageSliceFamily, ImageTransform
from clearbench.errors import MissingExtraError
from clearbench.settings import Settings


class SAM2Params(Settings):
    """A ``sam2`` card's ``[params]``; the defaults are Hiera-L, the image_encoder part of
    configs/sam2/sam2_hiera_l.yaml (sam2 1.1.0)."""

    embed_dim: PositiveInt = 144
    num_heads: PositiveInt = 2
    stages: list[PositiveInt] = Field(default_factory=lambda: [2, 6, 36, 4])
    global_att_blocks: list[NonNegativeInt] = Field(default_factory=lambda: [23, 33, 43])  # block indices
    window_pos_embed_bkg_spatial_size: list[PositiveInt] = Field(default_factory=lambda: [7, 7])
    window_spec: list[PositiveInt] = Field(default_factory=lambda: [8, 4, 16, 8])
    d_model: PositiveInt = 256
    fpn_top_down_levels: list[NonNegativeInt] = Field(default_factory=lambda: [2, 3])  # level indices
    fpn_interp_model: str = "nearest"  # a torch interpolation mode
    scalp: NonNegativeInt = 1  # lowest-resolution FPN levels dropped


HIERA_L_PARAMS: dict[str, Any] = SAM2Params().model_dump()


def build_sam2_image_encoder(
    *,
    embed_dim: int,
    num_heads: int,
    stages: Sequence[int],
    global_att_blocks: Sequence[int],
    window_pos_embed_bkg_spatial_size: Sequence[int],
    window_spec: Sequence[int],
    d_model: int,
    fpn_top_down_levels: Sequence[int],
    fpn_interp_model: str,
    scalp: int,
) -> nn.Module:
    """SAM2's ``ImageEncoder`` (Hiera trunk + FPN neck), randomly initialised: ``**HIERA_L_PARAMS`` is Hiera-L.

    Loads the keys found under ``image_encoder.`` in a SAM2 checkpoint's ``["model"]``, prefix stripped
    (``trunk.*``, ``neck.*``). Needs the ``sam2`` extra; without it, raises :class:`MissingExtraError`.
    """
    try:
        from sam2.modeling.backbones.hieradet import Hiera
        from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
        from sam2.modeling.position_encoding import PositionEmbeddingSine
    except ImportError as exc:
        raise MissingExtraError("sam2", "the SAM2 image encoder") from exc

    trunk = Hiera(
        embed_dim=embed_dim,
        num_heads=num_heads,
        stages=tuple(stages),
        global_att_blocks=tuple(global_att_blocks),
        window_pos_embed_bkg_spatial_size=tuple(window_pos_embed_bkg_spatial_size),
        window_spec=tuple(window_spec),
    )
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=d_model, normalize=True, scale=None, temperature=10000),
        d_model=d_model,
        backbone_channel_list=trunk.channel_list,
        fpn_top_down_levels=list(fpn_top_down_levels),
        fpn_interp_model=fpn_interp_model,
    )
    return ImageEncoder(trunk=trunk, neck=neck, scalp=scalp)


class SAM2SliceEncoder(ImageSliceEncoder):
    """Slices -> ImageNet 224 batch -> Hiera + FPN -> mean of ``vision_features`` over positions."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)["vision_features"].mean(dim=(-2, -1))


class SAM2Family(ImageSliceFamily):
    """SAM2's image encoder through Meta's ``sam2`` package (the ``sam2`` extra)."""

    name: ClassVar[str] = "sam2"
    extra: ClassVar[str | None] = "sam2"
    extra_modules: ClassVar[tuple[str, ...]] = ("sam2", "hydra", "iopath")
    prefixes: ClassVar[tuple[str, ...]] = ("image_encoder.",)
    params_model: ClassVar[type[Settings]] = SAM2Params

    def output_dim(self, params: Mapping[str, Any]) -> int:
        return int(params["d_model"])

    def infer_params(self, state_dict: StateDict, params: Mapping[str, Any]) -> dict[str, Any]:
        """The trunk width and the FPN width from the checkpoint; stages and attention layout from the card."""
        out = dict(params)
        if "trunk.patch_embed.proj.weight" in state_dict:
            out["embed_dim"] = int(state_dict["trunk.patch_embed.proj.weight"].shape[0])
        if "neck.convs.0.conv.weight" in state_dict:
            out["d_model"] = int(state_dict["neck.convs.0.conv.weight"].shape[0])
        return out

    def build(self, params: Mapping[str, Any]) -> nn.Module:
        return build_sam2_image_encoder(**params)

    def wrap(self, model: nn.Module, spec: EncoderSpec) -> SliceEncoder:
        return SAM2SliceEncoder(spec, model, ImageTransform.from_settings(spec.preprocessing))
