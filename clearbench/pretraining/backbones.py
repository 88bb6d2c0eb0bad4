"""The backbones pretraining can train, built through their encoder families.

Building through the family (:func:`clearbench.encoders.registry.get_family`) is what makes the exported
checkpoint loadable as an encoder with no conversion: the module pretraining trains is the module
``load_encoder`` builds from the same card parameters, so its ``state_dict`` is in the family's key layout
by construction.

Variants are the family's parameters under a name. ``micro`` is a few-thousand-parameter configuration of
each architecture for tests and smoke runs on a CPU; MambaOut's ``nano`` (about 0.3M parameters, 96-d) is
small enough to pretrain in minutes on a laptop CPU, which ``clearbench demo`` does; the other names are the
published sizes (``tiny`` keeps its published meaning for MambaOut: the 26M-parameter model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from clearbench.encoders.family import Family
from clearbench.errors import ClearbenchError

ARCHES = ("mambaout", "vmamba", "vit-convb")

# arch -> variant -> family parameters. CLEAR trained MambaOut and VMamba with 768-d outputs and the
# conv-stem ViT-B (MoCo v3's vit_conv_base), so those are the defaults.
_MAMBAOUT = {
    "femto": {"depths": [3, 3, 9, 3], "dims": [48, 96, 192, 288]},
    "kobe": {"depths": [3, 3, 15, 3], "dims": [48, 96, 192, 288]},
    "tiny": {"depths": [3, 3, 9, 3], "dims": [96, 192, 384, 576]},
    "small": {"depths": [3, 4, 27, 3], "dims": [96, 192, 384, 576]},
    "base": {"depths": [3, 4, 27, 3], "dims": [128, 256, 512, 768]},
    "micro": {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]},
    "nano": {"depths": [1, 1, 3, 1], "dims": [16, 32, 64, 96]},
}
_VMAMBA = {
    # VSSM()'s defaults, which CLEAR trained (768-d).
    "clear": {"depths": [2, 2, 9, 2], "dims": [96, 192, 384, 768]},
    "micro": {"depths": [1, 1, 1, 1], "dims": [16, 32, 64, 128], "ssm_d_state": 4},
}
_VIT_CONVB = {
    "base": {"embed_dim": 768, "depth": 11, "num_heads": 12},  # MoCo v3 vit_conv_base
    "small": {"embed_dim": 384, "depth": 11, "num_heads": 12},  # MoCo v3 vit_conv_small
    "micro": {"embed_dim": 64, "depth": 1, "num_heads": 2},
}
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {"mambaout": _MAMBAOUT, "vmamba": _VMAMBA, "vit-convb": _VIT_CONVB}
DEFAULT_VARIANT = {"mambaout": "base", "vmamba": "clear", "vit-convb": "base"}


@dataclass(frozen=True)
class Backbone:
    """A freshly built backbone with what export needs: its family and resolved card parameters."""

    arch: str
    variant: str
    module: nn.Module
    family: Family
    params: dict[str, Any]
    dim: int


def variant_params(arch: str, variant: str | None, image_size: int) -> tuple[str, dict[str, Any]]:
    """The family parameters of ``variant`` (default: the one CLEAR used) at ``image_size``."""
    if arch not in VARIANTS:
        raise ClearbenchError(f"unknown architecture '{arch}'; choose one of {', '.join(ARCHES)}")
    variant = variant or DEFAULT_VARIANT[arch]
    table = VARIANTS[arch]
    if variant not in table:
        raise ClearbenchError(f"unknown {arch} variant '{variant}'; choose one of {', '.join(table)}")
    params = dict(table[variant])
    if arch == "vit-convb":
        if image_size % 16:
            raise ClearbenchError(
                f"vit-convb makes 16 px patches: --image-size must be a multiple of 16, got {image_size}"
            )
        params["img_size"] = image_size
    return variant, params


def build_backbone(arch: str, variant: str | None, image_size: int) -> Backbone:
    """The bare backbone through its family, randomly initialised from torch's global generator."""
    from clearbench.encoders.registry import get_family

    variant, params = variant_params(arch, variant, image_size)
    family = get_family(arch)
    family.require_extra()
    resolved = family.resolve_params(params)
    module = family.build(resolved)
    dim = family.output_dim(resolved)
    if dim is None:
        raise ClearbenchError(f"family '{arch}' cannot tell the output dim of variant '{variant}'")
    return Backbone(arch, variant, module, family, resolved, int(dim))
