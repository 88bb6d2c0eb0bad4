"""Task cards: one TOML file per task, saying what to predict, from which dataset, under which protocol.

A card is data. It names the dataset (a reader), the scan-level labels, the task type (multi-label with
one sigmoid per label, or binary trained as two-class cross-entropy), the HU windows whose slices form a
bag, the protocol and its parameters, the metrics, the training recipe, and which head to train for
each encoder kind (slice encoders give bags, so ABMIL; volume encoders give one vector, so an MLP).

What a card may say, with every default, is :class:`~clearbench.tasks.card_file.TaskCardFile`; a bad card
gives one line naming the file and the key path. :class:`TaskCard` is a validated card as the protocols use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearbench.config import read_toml
from clearbench.mil.head_params import HEAD_MODELS
from clearbench.settings import validate_settings
from clearbench.tasks.card_file import MIN_TEST_PATIENTS, TaskCardFile, TaskType, TrainingSpec
from clearbench.tasks.spec import ProtocolSpec

if TYPE_CHECKING:
    from clearbench.mil.train import LossKind, TrainConfig

__all__ = ["HEAD_PARAMS", "MIN_TEST_PATIENTS", "PAPER_TRAINING", "HeadSpec", "TaskCard", "TrainingSpec"]

# Each head's parameters with their defaults, as plain data (the models in clearbench.mil.head_params).
HEAD_PARAMS: dict[str, dict[str, Any]] = {name: model().model_dump() for name, model in HEAD_MODELS.items()}

# The paper's recipe (section 4.3) as training overrides: ``clearbench run --paper-recipe``.
PAPER_TRAINING: dict[str, Any] = {
    "lr": 1e-4,
    "batch_size": 128,
    "max_epochs": 32,
    "patience": 8,
    "standardize": False,
    "min_steps": 0,
}


@dataclass(frozen=True)
class HeadSpec:
    """A head by name with its parameters (defaults filled in)."""

    head: str
    params: dict[str, Any]


@dataclass(frozen=True)
class TaskCard:
    """A validated task card. ``source`` says where it came from (a file or an entry point).

    ``hit_rate_k`` (±k slices around a key slice count as an attention hit) and ``min_test_patients`` (a run
    refuses a smaller test set) are left out of :meth:`to_dict`: neither changes a trained number, so changing
    them never invalidates finished folds.
    """

    name: str
    dataset: str
    type: TaskType
    labels: tuple[str, ...]
    windows: tuple[str, ...]
    protocol: ProtocolSpec
    training: TrainingSpec
    heads: dict[str, HeadSpec]
    metrics: tuple[str, ...]
    hit_rate_k: int
    min_test_patients: int
    title: str
    description: str
    source: str

    @property
    def loss(self) -> LossKind:
        return "ce" if self.type == "binary" else "bce"

    def head_for(self, kind: str) -> HeadSpec:
        """The head to train on embeddings of an encoder of ``kind`` (slice or volume)."""
        return self.heads[kind]

    def with_training(self, **overrides: Any) -> TaskCard:
        """This card with some training settings replaced (``None`` keeps the card's); each is validated as the
        card's own, so an unknown name or a value out of range is an :class:`InputError`."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if not given:
            return self
        training = validate_settings(TrainingSpec, {**self.training.model_dump(), **given}, "training settings")
        return replace(self, training=training)

    def train_config(self, epochs: int | None = None, device: str = "cpu") -> TrainConfig:
        from clearbench.mil.train import TrainConfig

        t = self.training
        return TrainConfig(
            loss=self.loss,
            lr=t.lr,
            weight_decay=t.weight_decay,
            batch_size=t.batch_size,
            max_epochs=t.max_epochs if epochs is None else epochs,
            patience=t.patience,
            standardize=t.standardize,
            min_steps=t.min_steps,
            device=device,
        )

    def _protocol_dict(self) -> dict[str, Any]:
        p = self.protocol
        if p.kind == "holdout+kfold":
            out = {"kind": p.kind, "folds": p.folds, "test_fraction": p.test_fraction, "seed": p.seed}
            return out if p.test_split is None else {**out, "test_split": p.test_split}
        return {"kind": p.kind, "folds": p.folds, "val_fraction": p.val_fraction, "seed": p.seed}

    def to_dict(self) -> dict[str, Any]:
        """The card as plain data with every default filled in (what a run stores and hashes)."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "dataset": self.dataset,
            "type": self.type,
            "labels": list(self.labels),
            "windows": list(self.windows),
            "metrics": list(self.metrics),
            "protocol": self._protocol_dict(),
            "training": self.training.model_dump(),
            "heads": {kind: {"head": h.head, **h.params} for kind, h in self.heads.items()},
        }


def card_from_dict(data: Mapping[str, Any], source: str, default_name: str | None = None) -> TaskCard:
    """Validate card data; ``source`` names the file (or entry point) in error messages."""
    given = dict(data) if default_name is None else {"name": default_name, **data}
    card = validate_settings(TaskCardFile, given, source)
    return TaskCard(
        name=card.name,
        dataset=card.dataset,
        type=card.type,
        labels=tuple(card.labels),
        windows=tuple(card.windows),
        protocol=card.protocol.spec(),
        training=card.training,
        heads={
            kind: HeadSpec(table.head, table.model_dump(exclude={"head"}))
            for kind, table in (("slice", card.heads.slice), ("volume", card.heads.volume))
        },
        metrics=tuple(card.metrics),
        hit_rate_k=card.hit_rate_k,
        min_test_patients=card.min_test_patients,
        title=card.title or card.name,
        description=card.description,
        source=source,
    )


def load_card(path: str | Path) -> TaskCard:
    """Read and validate one task card file; its name defaults to the file's stem."""
    path = Path(path)
    data = read_toml(path, "task card")
    return card_from_dict(data, str(path), default_name=path.stem)
