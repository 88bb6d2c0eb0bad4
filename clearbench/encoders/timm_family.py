"""``timm``: any timm architecture by name, headless, with weights from a local file.

A card names the architecture and the file::

    name = "my-convnext"
    family = "timm"
    [weights]
    path = "/models/convnext_small.safetensors"   # safetensors, or a weights-only torch checkpoint
    [params]
    model_name = "convnext_small"                 # anything timm.list_models() lists
    kwargs = { drop_path_rate = 0.0 }             # passed to timm.create_model (img_size, in_chans, depth ...)

The model is built with ``timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)``, so it
never downloads and its output is the pooled pre-logits features (``head_hidden_size``, else
``num_features``). The checkpoint's classifier (the keys under ``pretrained_cfg['classifier']``) is dropped,
so a file saved with or without its head loads; every other key must match (the registry's strict load).

Preprocessing is timm's own eval transform from the model's ``pretrained_cfg``: resize the short side to
``floor(input_size / crop_pct)``, centre crop ``input_size``, its interpolation, mean and std. A card's
``[preprocessing]`` keys (``size``, ``crop``, ``interpolation``, ``mean``, ``std``, ``channels``; ``0`` turns
resize or crop off) win; an ``img_size`` in ``kwargs`` replaces the input size.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator
from torch import nn

from clearbench.encoders.family import StateDict
from clearbench.encoders.image import IMAGENET_MEAN, IMAGENET_STD, ImageSliceFamily, overlay_settings
from clearbench.errors import ClearbenchError
from clearbench.settings import Settings

PREPROCESSING_KEYS = ("size", "crop", "interpolation", "mean", "std", "channels")
_INTERPOLATIONS = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest", "area": "area"}


def check_model_name(model_name: Any) -> str:
    """The name when timm knows it; otherwise an error suggesting the closest names."""
    import timm

    if not isinstance(model_name, str) or not model_name:
        raise ClearbenchError(
            'timm: the card needs [params] model_name (e.g. "convnext_small"; see timm.list_models())'
        )
    if timm.is_model(model_name.split(".")[0]):
        return model_name
    close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; closest: {', '.join(close)}" if close else "; see timm.list_models() for the names"
    raise ClearbenchError(f"timm {timm.__version__} has no model '{model_name}'{hint}")


def build_timm(model_name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)``: pooled features, no head.

    Loads timm's own key layout for that architecture, without the classifier.
    """
    import timm

    return timm.create_model(check_model_name(model_name), pretrained=False, num_classes=0, **kwargs)


def features_dim(model: nn.Module) -> int:
    """What the headless model returns per image: timm's ``head_hidden_size`` (pre-logits) or ``num_features``."""
    size = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    if size is None:
        raise TypeError(f"{type(model).__name__} declares neither head_hidden_size nor num_features")
    return int(size)


@lru_cache(maxsize=64)
def _meta_dim(model_name: str, kwargs_json: str) -> int:
    """The feature dim without allocating weights (the model is built on the meta device)."""
    with torch.device("meta"):
        return features_dim(build_timm(model_name, **json.loads(kwargs_json)))


def eval_settings(pretrained_cfg: Mapping[str, Any], img_size: Any = None) -> dict[str, Any]:
    """timm's eval transform (``transforms_factory`` with ``is_training=False``) as ImageTransform settings."""
    channels, height, width = pretrained_cfg.get("input_size", (3, 224, 224))
    if img_size is not None:
        height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if height != width:
        raise ClearbenchError(
            f"timm: input size {height}x{width} is not square; set [preprocessing] size and crop in the card"
        )
    crop_pct = float(pretrained_cfg.get("crop_pct") or 0.875)
    mode = pretrained_cfg.get("crop_mode") or "center"
    scale = math.floor(height / crop_pct)
    if mode == "center":
        size: Any = scale
    elif mode == "squash":
        size = [scale, scale]
    else:
        raise ClearbenchError(
            f"timm: crop mode {mode!r} is not supported; set [preprocessing] size and crop in the card"
        )
    interpolation = _INTERPOLATIONS.get(str(pretrained_cfg.get("interpolation", "bicubic")), "bicubic")
    return {
        "size": size,
        "crop": int(height),
        "interpolation": interpolation,
        "mean": [float(m) for m in pretrained_cfg.get("mean", IMAGENET_MEAN)],
        "std": [float(s) for s in pretrained_cfg.get("std", IMAGENET_STD)],
        "channels": int(channels),
    }


class TimmParams(Settings):
    """A ``timm`` card's ``[params]``."""

    model_name: str | None = None  # required, but checked by check_model_name, which suggests close names
    kwargs: dict[str, Any] = Field(default_factory=dict)  # passed to timm.create_model

    @field_validator("kwargs")
    @classmethod
    def _not_the_head(cls, value: dict[str, Any]) -> dict[str, Any]:
        if {"num_classes", "pretrained"} & set(value):
            raise ValueError("kwargs cannot set num_classes or pretrained (always 0 and False)")
        return value


class TimmFamily(ImageSliceFamily):
    name: ClassVar[str] = "timm"
    params_model: ClassVar[type[Settings]] = TimmParams
    default_preprocessing: ClassVar[Mapping[str, Any]] = {k: None for k in PREPROCESSING_KEYS}

    def resolve_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The params as :class:`TimmParams` checks them, and a ``model_name`` the installed timm knows."""
        resolved = super().resolve_params(params)
        check_model_name(resolved["model_name"])
        return resolved

    def adapt_state_dict(self, state_dict: StateDict, params: Mapping[str, Any]) -> StateDict:
        import timm

        classifier = timm.models.get_pretrained_cfg_value(str(params["model_name"]).split(".")[0], "classifier")
        heads = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else (classifier or ())))
        return {k: v for k, v in state_dict.items() if not (heads and k.startswith(heads))}

    def build(self, params: Mapping[str, Any]) -> nn.Module:
        return build_timm(str(params["model_name"]), **dict(params["kwargs"]))

    def output_dim(self, params: Mapping[str, Any]) -> int:
        return _meta_dim(str(params["model_name"]), json.dumps(dict(params["kwargs"]), sort_keys=True))

    def complete_preprocessing(
        self, model: nn.Module, params: Mapping[str, Any], preprocessing: Mapping[str, Any]
    ) -> dict[str, Any]:
        base = eval_settings(getattr(model, "pretrained_cfg", {}) or {}, dict(params["kwargs"]).get("img_size"))
        return overlay_settings(base, preprocessing)
