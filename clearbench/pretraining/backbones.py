"""The backbones pretraining can train: those of every encoder family that declares pretraining variants.

A family declares its sizes (``pretrain_variants``), the one trained by default, and how the training image
size enters its parameters (:class:`clearbench.encoders.family.Family`); built-in families and plugins alike.
Building through the family is what makes the exported checkpoint loadable as an encoder with no conversion:
the module pretraining trains is the module ``load_encoder`` builds from the same card parameters, so its
state dict is in the family's key layout by construction (:meth:`Family.export_state_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from clearbench.encoders.family import BUILTIN_FAMILIES, Family
from clearbench.errors import ClearbenchError


@dataclass(frozen=True)
class Backbone:
    """A freshly built backbone with what export needs: its family and resolved card parameters."""

    arch: str
    variant: str
    module: nn.Module
    family: Family
    params: dict[str, Any]
    dim: int


def pretrainable_families() -> list[str]:
    """The families that declare pretraining variants: built-ins first (in registry order), then plugins.

    Every family module is imported to ask it, so this is only called to list them (an unknown ``--arch``)."""
    from clearbench.encoders.registry import family_names, get_family

    names = [*BUILTIN_FAMILIES, *sorted(set(family_names()) - set(BUILTIN_FAMILIES))]
    found = []
    for name in names:
        try:
            family = get_family(name)
        except ClearbenchError:  # a broken plugin family: the registry reports it where families are listed
            continue
        if family.pretrain_variants:
            found.append(name)
    return found


def pretrainable_family(arch: str) -> Family:
    """The family ``arch``, refused with the list of pretrainable families when it declares no variants."""
    from clearbench.encoders.registry import family_names, get_family

    family = get_family(arch) if arch in family_names() else None
    if family is None or not family.pretrain_variants:
        raise ClearbenchError(
            f"unknown architecture '{arch}' for pretraining; choose one of {', '.join(pretrainable_families())} "
            "(an encoder family becomes pretrainable by declaring pretrain_variants)"
        )
    return family


def variant_params(arch: str, variant: str | None, image_size: int) -> tuple[str, dict[str, Any]]:
    """The family parameters of ``variant`` (default: the family's) at ``image_size``."""
    return pretrainable_family(arch).pretrain_params(variant, image_size)


def build_backbone(arch: str, variant: str | None, image_size: int) -> Backbone:
    """The bare backbone through its family, randomly initialised from torch's global generator."""
    family = pretrainable_family(arch)
    variant, params = family.pretrain_params(variant, image_size)
    family.require_extra()
    resolved = family.resolve_params(params)
    module = family.build(resolved)
    dim = family.output_dim(resolved)
    if dim is None:
        raise ClearbenchError(f"family '{arch}' cannot tell the output dim of variant '{variant}'")
    return Backbone(arch, variant, module, family, resolved, int(dim))
