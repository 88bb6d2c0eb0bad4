"""``vit-convb``: the MoCo v3 ViT-B/16 with a convolutional stem, as CLEAR pretrains it (LeCL).

CLEAR's ``vit_conv_base`` is MoCo v3's ``VisionTransformerMoCo``: a timm ``VisionTransformer`` whose patch
embedding is a stack of strided 3x3 convolutions (Xiao et al., "Early convolutions help transformers see
better"), with one block fewer than ViT-B (11) to keep the FLOPs equal, and a fixed 2-D sin-cos position
embedding. The upstream file no longer runs on timm >= 0.9 (timm now passes extra keyword arguments to the
patch embedding), so the stem is rebuilt here with the same parameter names.

Key layout (flat, what CLEAR's ``convert_to_deit.py`` writes, and what a raw MoCo file holds under
``module.base_encoder.``): ``cls_token``, ``pos_embed`` (fixed, but stored), ``patch_embed.proj.{0,1,3,4,6,7,9,10,
12}.*`` (conv, BN pairs and the final 1x1 conv), ``blocks.{0..10}.*``, ``norm.*``; any ``head.*`` is dropped.
The embedding is the CLS token after the final LayerNorm: 768-d.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar

import torch
from pydantic import PositiveFloat, PositiveInt
from torch import nn

from clearbench.encoders.image import ImageSliceFamily
from clearbench.settings import Settings


class ConvStem(nn.Module):
    """4 x (conv 3x3 stride 2, BN, ReLU) with channels ``embed_dim/8 -> /4 -> /2 -> 1``, then a 1x1 conv.

    Four stride-2 convolutions make a 16x16 patch grid, so ``patch_size`` must be 16. The signature takes the
    keyword arguments timm's ``VisionTransformer`` passes to any ``embed_layer`` (``bias``, ``dynamic_img_pad``,
    ``device``, ``dtype`` ...); those that do not apply to a conv stem are ignored.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        norm_layer: type[nn.Module] | None = None,
        flatten: bool = True,
        device: Any = None,
        dtype: Any = None,
        **_: Any,
    ) -> None:
        super().__init__()
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        patch = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        if patch != (16, 16):
            raise ValueError(f"the conv stem makes 16x16 patches, got patch_size {patch_size}")
        if embed_dim % 8:
            raise ValueError(f"the conv stem needs embed_dim divisible by 8, got {embed_dim}")
        self.img_size, self.patch_size = size, patch
        self.grid_size = (size[0] // 16, size[1] // 16)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.flatten = flatten
        dd = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = []
        channels_in, channels_out = in_chans, embed_dim // 8
        for _stage in range(4):
            layers += [
                nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1, bias=False, **dd),
                nn.BatchNorm2d(channels_out, **dd),
                nn.ReLU(inplace=True),
            ]
            channels_in, channels_out = channels_out, channels_out * 2
        layers.append(nn.Conv2d(channels_in, embed_dim, 1, **dd))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        return 16 if as_scalar else (16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"input size {tuple(x.shape[-2:])} does not match the model's {self.img_size}")
        x = self.proj(x)
        if self.flatten:
            x = x.flatten(2).transpose(1, 2)  # (n, C, h, w) -> (n, h*w, C)
        return self.norm(x)


def sincos_pos_embed_2d(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """MoCo v3's fixed position embedding: ``(1, 1 + h*w, dim)``, zero for the CLS token.

    For the patch in row r, column c (raster order), the four quarters of its vector are sin(r*f), cos(r*f),
    sin(c*f), cos(c*f), with frequencies f_k = temperature^(-k / (dim/4)). (MoCo v3 names the row coordinate
    "w": it builds the grid with ``meshgrid(arange(w), arange(h))`` in ij indexing, which is the same thing on
    the square grids it supports.)
    """
    h, w = grid
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos position embedding needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32), indexing="ij"
    )
    r = rows.flatten()[:, None] * omega[None]
    c = cols.flatten()[:, None] * omega[None]
    patches = torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), patches], dim=0)[None]


def build_vit_convb(
    img_size: int = 224,
    embed_dim: int = 768,
    depth: int = 11,
    num_heads: int = 12,
    mlp_ratio: float = 4.0,
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """A headless conv-stem ViT: ``(n, 3, img, img)`` -> ``(n, embed_dim)``, the CLS token after the final LN.

    Loads the flat MoCo v3 / CLEAR layout described in the module docstring. The position embedding is a
    frozen parameter (``requires_grad=False``), as in MoCo v3, so it is in the state dict but never trained.
    """
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(
        img_size=img_size,
        patch_size=16,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        embed_layer=ConvStem,
        num_classes=0,
        global_pool="token",
        drop_path_rate=drop_path_rate,
        weight_init="moco",
    )
    pos = sincos_pos_embed_2d(model.patch_embed.grid_size, embed_dim)
    model.pos_embed = nn.Parameter(pos, requires_grad=False)
    return model


class ViTConvBParams(Settings):
    """A ``vit-convb`` card's ``[params]``; the defaults are MoCo v3's vit_conv_base, which CLEAR trained."""

    img_size: PositiveInt = 224  # sizes the position embedding
    embed_dim: PositiveInt = 768
    depth: PositiveInt = 11
    num_heads: PositiveInt = 12
    mlp_ratio: PositiveFloat = 4.0


class ViTConvBFamily(ImageSliceFamily):
    name: ClassVar[str] = "vit-convb"
    heads: ClassVar[tuple[str, ...]] = ("head.",)
    params_model: ClassVar[type[Settings]] = ViTConvBParams
    # MoCo v3's vit_conv_base (what CLEAR trained) and vit_conv_small; ``micro`` for tests on a CPU. The
    # position embedding is sized to the training views.
    pretrain_variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "base": {"embed_dim": 768, "depth": 11, "num_heads": 12},
        "small": {"embed_dim": 384, "depth": 11, "num_heads": 12},
        "micro": {"embed_dim": 64, "depth": 1, "num_heads": 2},
    }
    pretrain_default: ClassVar[str | None] = "base"
    pretrain_image_param: ClassVar[str | None] = "img_size"
    pretrain_image_multiple: ClassVar[int] = 16
    display_name: ClassVar[str | None] = "ViT"

    def infer_params(self, state_dict: Mapping[str, torch.Tensor], params: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(params)
        if "cls_token" in state_dict:
            out["embed_dim"] = int(state_dict["cls_token"].shape[-1])
        blocks = {int(k.split(".")[1]) for k in state_dict if k.startswith("blocks.")}
        if blocks:
            out["depth"] = max(blocks) + 1
        if "pos_embed" in state_dict:
            side = math.isqrt(int(state_dict["pos_embed"].shape[1]) - 1)
            out["img_size"] = side * 16
        return out

    def build(self, params: Mapping[str, Any]) -> nn.Module:
        return build_vit_convb(
            int(params["img_size"]),
            int(params["embed_dim"]),
            int(params["depth"]),
            int(params["num_heads"]),
            float(params["mlp_ratio"]),
        )

    def output_dim(self, params: Mapping[str, Any]) -> int:
        return int(params["embed_dim"])
