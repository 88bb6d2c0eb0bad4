"""``mambaout``: timm's MambaOut with the classifier removed and the final norm kept.

The CLEAR code builds the original repository's ``MambaOut`` (yuweihao/MambaOut), replaces ``head`` with an
identity and embeds with ``LayerNorm(x.mean([1, 2]))``. timm's MambaOut is the same network with different
key names; its ``MlpHead`` runs pool -> ``norm`` -> ``pre_logits`` -> ``fc``, so turning ``pre_logits`` and ``fc``
into identities (and keeping ``norm``) gives bit-identical embeddings. ``reset_classifier(0)`` would not: it
keeps the 4x-wide ``pre_logits`` MLP.

Checkpoints accepted (after the registry's generic unwrapping of ``state_dict``/``model`` containers and the
``module.``/``module.base_encoder.`` prefixes of a raw MoCo file):

- the original repository's layout (``downsample_layers.*``, ``stages.i.j.*``, ``norm.*``), converted with
  timm's ``checkpoint_filter_fn`` after its classifier ``head.*`` is dropped;
- timm's layout (``stem.*``, ``stages.i.blocks.j.*``, ``head.norm.*``), with ``head.fc``/``head.pre_logits``
  dropped.

Depths and dims are read from the checkpoint, so one card serves femto to base: CLEAR's own MambaOut has
768-d output (base dims), which the notes could not pin to a named variant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import PositiveInt, field_validator
from torch import nn

from clearbench.encoders.family import StateDict
from clearbench.encoders.image import ImageSliceFamily
from clearbench.errors import ClearbenchError
from clearbench.settings import Settings

# depths, dims of each variant, for cards and pretraining alike. The first five are the published sizes
# (identical in the original repository and timm; ``tiny`` is the 26M-parameter model). ``micro`` is a
# few-thousand-parameter MambaOut for tests and smoke runs on a CPU; ``nano`` (about 0.3M parameters, 96-d)
# is small enough to pretrain in minutes on a laptop CPU, which ``clearbench demo`` does.
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "femto": ((3, 3, 9, 3), (48, 96, 192, 288)),
    "kobe": ((3, 3, 15, 3), (48, 96, 192, 288)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 576)),
    "small": ((3, 4, 27, 3), (96, 192, 384, 576)),
    "base": ((3, 4, 27, 3), (128, 256, 512, 768)),
    "micro": ((1, 1, 1, 1), (8, 16, 24, 32)),
    "nano": ((1, 1, 3, 1), (16, 32, 64, 96)),
}

_BLOCK = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.")


def build_mambaout(
    depths: Sequence[int] = (3, 3, 9, 3), dims: Sequence[int] = (48, 96, 192, 288), drop_path_rate: float = 0.0
) -> nn.Module:
    """A headless timm MambaOut: ``(n, 3, H, W)`` -> ``(n, dims[-1])`` (pooled, then the final LayerNorm).

    Loads timm's key layout (``stem.*``, ``stages.i.blocks.j.*``, ``stages.i.downsample.*``, ``head.norm.*``).
    """
    from timm.models.mambaout import MambaOut

    model = MambaOut(depths=tuple(depths), dims=tuple(dims), drop_path_rate=drop_path_rate)
    model.head.pre_logits = nn.Sequential()  # empty, so the identity, in the type timm declares
    model.head.fc = nn.Identity()
    return model


def is_original_layout(state_dict: Mapping[str, Any]) -> bool:
    return any(k.startswith("downsample_layers.") for k in state_dict)


def resolve_arch(params: Mapping[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(depths, dims) from explicit ``depths``/``dims`` or a ``variant``; None when neither is given."""
    if params.get("depths") is not None or params.get("dims") is not None:
        if params.get("depths") is None or params.get("dims") is None:
            raise ClearbenchError("mambaout: give both depths and dims (or a variant)")
        depths, dims = tuple(int(d) for d in params["depths"]), tuple(int(d) for d in params["dims"])
        if len(depths) != len(dims):
            raise ClearbenchError(f"mambaout: depths {depths} and dims {dims} need the same length")
        return depths, dims
    variant = params.get("variant")
    if variant is None:
        return None
    if variant not in VARIANTS:
        raise ClearbenchError(f"mambaout: unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
    return VARIANTS[variant]


class MambaOutParams(Settings):
    """A ``mambaout`` card's ``[params]``: a variant, or depths and dims; none of them when the checkpoint
    tells its own (:func:`resolve_arch` says which wins)."""

    variant: str | None = None
    depths: list[PositiveInt] | None = None
    dims: list[PositiveInt] | None = None

    @field_validator("variant")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and value not in VARIANTS:
            raise ValueError(f"unknown variant {value!r}; known: {', '.join(VARIANTS)}")
        return value


class MambaOutFamily(ImageSliceFamily):
    name: ClassVar[str] = "mambaout"
    params_model: ClassVar[type[Settings]] = MambaOutParams
    # A trained card names its depths and dims, as a card read from a checkpoint does. CLEAR's MambaOut has
    # 768-d outputs: the base dims.
    pretrain_variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        name: {"depths": list(depths), "dims": list(dims)} for name, (depths, dims) in VARIANTS.items()
    }
    pretrain_default: ClassVar[str | None] = "base"
    display_name: ClassVar[str | None] = "MambaOut"

    def adapt_state_dict(self, state_dict: StateDict, params: Mapping[str, Any]) -> StateDict:
        if is_original_layout(state_dict):
            from timm.models.mambaout import checkpoint_filter_fn

            headless = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
            return checkpoint_filter_fn(headless, None)
        return {k: v for k, v in state_dict.items() if not k.startswith(("head.fc.", "head.pre_logits."))}

    def infer_params(self, state_dict: StateDict, params: Mapping[str, Any]) -> dict[str, Any]:
        blocks: dict[int, int] = {}
        dims: dict[int, int] = {}
        for key, value in state_dict.items():
            match = _BLOCK.match(key)
            if match:
                stage, block = int(match[1]), int(match[2])
                blocks[stage] = max(blocks.get(stage, 0), block + 1)
                if key.endswith(".norm.weight"):
                    dims[stage] = int(value.shape[0])
        if not blocks or sorted(blocks) != list(range(len(blocks))) or set(dims) != set(blocks):
            raise ClearbenchError(
                "mambaout: cannot read depths and dims from the checkpoint "
                "(no stages.<i>.blocks.<j>.norm.weight keys); is it a MambaOut checkpoint?"
            )
        depths = tuple(blocks[i] for i in range(len(blocks)))
        found = tuple(dims[i] for i in range(len(dims)))
        declared = resolve_arch(params)
        if declared is not None and declared != (depths, found):
            raise ClearbenchError(
                f"mambaout: the card says depths {declared[0]} dims {declared[1]} but the "
                f"checkpoint has depths {depths} dims {found}; remove them from the card"
            )
        return {**params, "variant": None, "depths": list(depths), "dims": list(found)}

    def build(self, params: Mapping[str, Any]) -> nn.Module:
        arch = resolve_arch(params)
        if arch is None:
            raise ClearbenchError("mambaout: random init needs a variant or depths and dims in the card's [params]")
        return build_mambaout(*arch)

    def output_dim(self, params: Mapping[str, Any]) -> int | None:
        arch = resolve_arch(params)
        return arch[1][-1] if arch else None
