"""The end of a run: the backbone's weights in its family's layout, and an encoder card that points at them.

``backbone.pt`` is the flat, head-less state dict of the online backbone in the key layout its family
declares (:meth:`clearbench.encoders.family.Family.export_state_dict`): the projector, predictor and
momentum encoder are training machinery and are left out, exactly as CLEAR's ``convert_to_deit.py`` keeps
only ``base_encoder`` without its head. Because the backbone was built by the family from the card's
parameters, ``load_encoder`` rebuilds the same module and loads the file strictly.

The card goes to ``CLEARBENCH_HOME/encoders/<name>.toml`` with the file's sha256, the family parameters,
and the preprocessing the backbone was trained with (its image size; the family's normalisation), so
``clearbench embed --encoder <name>`` works at once. The card format has no provenance table, so the
training settings are summarised in the card's description and written in full to ``pretrain.json``
beside the weights (the card's ``[weights] note`` says where).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from clearbench.atomic import write_atomic
from clearbench.encoders.card import write_card
from clearbench.encoders.family import Family
from clearbench.encoders.registry import get_card
from clearbench.encoders.weights import file_sha256
from clearbench.errors import ClearbenchError
from clearbench.pretraining.backbones import Backbone
from clearbench.pretraining.checkpoint import atomic_save
from clearbench.pretraining.config import PretrainConfig

WEIGHTS = "backbone.pt"
PROVENANCE = "pretrain.json"


def recipe_name(config: PretrainConfig, family: Family) -> str:
    """The paper row whose recipe this run follows (``MambaOut-LECL-0``): said in the description only.

    It is never the card's ``paper_name``: that field names the published row a card *is*, and a backbone
    trained here, on another cohort and budget, is not the paper's; its results must not be shown as (or
    ranked beside) the published numbers. Only built-in cards, or a user's explicit ``--paper-name``, set it.
    """
    method = "MoCo" if config.method == "moco" else f"LECL-{config.lam:g}"
    return f"{family.display_name or family.name}-{method}"


def describe(config: PretrainConfig, family: Family, steps: int) -> str:
    method = "MoCo v3" if config.method == "moco" else f"LECL (lambda={config.lam:g})"
    return (
        f"{config.arch} ({config.variant}) pretrained with {method} (the recipe of the paper's "
        f"{recipe_name(config, family)}) by clearbench pretrain on "
        f"{config.dataset}: {config.epochs} epochs ({steps} steps), batch {config.batch_size}, "
        f"{config.image_size} px, windows {'+'.join(config.windows)}, seed {config.seed}"
    )


def export(
    run_dir: Path,
    backbone: Backbone,
    module: nn.Module,
    config: PretrainConfig,
    provenance: dict[str, Any],
    card_dir: Path | None = None,
) -> tuple[Path, Path]:
    """Write ``backbone.pt``, ``pretrain.json`` and the card; returns ``(weights path, card path)``."""
    weights = run_dir / WEIGHTS
    atomic_save(backbone.family.export_state_dict(module), weights)
    digest = file_sha256(weights)
    record = {**provenance, "weights": str(weights), "weights_sha256": digest, "card": config.card_name}
    write_atomic(run_dir / PROVENANCE, json.dumps(record, indent=2, default=str))

    preprocessing = {k: v for k, v in backbone.family.default_preprocessing.items()}
    preprocessing.update({"size": config.image_size, "crop": config.image_size})
    card = {
        "name": config.card_name,
        "family": backbone.family.name,
        **({"paper_name": config.paper_name} if config.paper_name else {}),
        "dim": backbone.dim,
        "description": describe(config, backbone.family, int(provenance.get("steps", 0))),
        "weights": {
            "path": str(weights.resolve()),
            "sha256": digest,
            "note": f"trained by `clearbench pretrain`; settings and loss curve in {(run_dir / PROVENANCE).resolve()}",
        },
        "params": _card_params(backbone.params),
        "preprocessing": preprocessing,
    }
    check_card_name_free(config.card_name, weights)
    card_path = write_card(card, card_dir, overwrite=True)
    return weights, card_path


def _card_params(params: dict[str, Any]) -> dict[str, Any]:
    """The resolved family parameters as TOML values (no None: TOML has no null)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def check_card_name_free(name: str, weights: Path) -> None:
    """A user card of the same name that points elsewhere belongs to someone else: never overwrite it."""
    try:
        card = get_card(name)
    except ClearbenchError:
        return
    if card.source != "user":
        return
    path = card.weights.path
    if path is not None and Path(path).expanduser().resolve() != weights.resolve():
        raise ClearbenchError(
            f"{card.path}: a card named '{name}' already points at {path}; pass another --tag "
            "(or remove that card) so the trained backbone does not replace it"
        )
