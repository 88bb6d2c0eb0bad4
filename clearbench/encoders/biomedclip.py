"""``biomedclip``: BiomedCLIP's image tower only (open_clip ``TimmModel`` around timm's ViT-B/16).

CLEAR embeds slices with ``model.encode_image(img)`` of ``open_clip.create_model_from_pretrained(
'hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224')``: 512-d, not L2-normalised. Building the
whole CLIP model would construct the PubMedBERT text tower from its Hugging Face config and tokenizer (network,
or a populated HF cache), which an image encoder does not need. So only the visual tower is built, with
exactly the class and arguments of the published ``open_clip_config.json``: ``TimmModel('vit_base_patch16_224',
embed_dim=512, image_size=224, pool='', proj='linear')`` - the trunk keeps timm's CLS-token pooling after the
final LayerNorm, and ``head.proj`` is a bias-free 768 -> 512 projection.

Key layout: the published ``open_clip_pytorch_model.bin`` holds the full ``CustomTextCLIP`` state dict
(``visual.*``, ``text.*``, ``logit_scale``); the ``visual.`` keys (``visual.trunk.*``, ``visual.head.proj.weight``)
are kept with the prefix stripped and loaded strictly; everything else is ignored. A file of only the visual
tower's own keys (no prefix) loads too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import PositiveInt
from torch import nn

from clearbench.encoders.image import CLIP_MEAN, CLIP_STD, ImageSliceFamily
from clearbench.settings import Settings


def build_biomedclip_visual(
    model_name: str = "vit_base_patch16_224",
    embed_dim: int = 512,
    image_size: int = 224,
    pool: str = "",
    proj: str = "linear",
    proj_bias: bool = False,
) -> nn.Module:
    """open_clip's timm vision tower, randomly initialised (never downloads): ``(n, 3, 224, 224)`` -> ``(n, embed_dim)``.

    Loads the ``visual.*`` keys of an open_clip checkpoint with the ``visual.`` prefix removed.
    """
    from open_clip.timm_model import TimmModel

    return TimmModel(
        model_name,
        embed_dim=embed_dim,
        image_size=image_size,
        pool=pool,
        proj=proj,
        proj_bias=proj_bias,
        pretrained=False,
    )


class BiomedCLIPParams(Settings):
    """A ``biomedclip`` card's ``[params]``: open_clip's ``TimmModel`` arguments; the defaults are BiomedCLIP's."""

    model_name: str = "vit_base_patch16_224"  # the timm trunk
    embed_dim: PositiveInt = 512
    image_size: PositiveInt = 224
    pool: str = ""  # open_clip's timm_pool ("" keeps the trunk's own)
    proj: str = "linear"  # open_clip's timm_proj
    proj_bias: bool = False


class BiomedCLIPFamily(ImageSliceFamily):
    name: ClassVar[str] = "biomedclip"
    prefixes: ClassVar[tuple[str, ...]] = ("visual.",)
    params_model: ClassVar[type[Settings]] = BiomedCLIPParams
    # open_clip's image_transform(224, is_train=False): bicubic shortest-side resize, centre crop, CLIP stats.
    default_preprocessing: ClassVar[Mapping[str, Any]] = {
        "size": 224,
        "crop": 224,
        "interpolation": "bicubic",
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
        "channels": 3,
    }

    def build(self, params: Mapping[str, Any]) -> nn.Module:
        return build_biomedclip_visual(
            str(params["model_name"]),
            int(params["embed_dim"]),
            int(params["image_size"]),
            str(params["pool"]),
            str(params["proj"]),
            bool(params["proj_bias"]),
        )

    def output_dim(self, params: Mapping[str, Any]) -> int:
        return int(params["embed_dim"])
