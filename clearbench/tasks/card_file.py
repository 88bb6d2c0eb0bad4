"""What a task card file may say: every key, its type, its bounds and its default, as strict models.

:class:`TaskCardFile` is the whole file; reading a card validates it here, so an unknown key, a wrong type
or a value out of range is one line naming the file and the key path (``field 'heads.slice.gated':
expected true or false, got 'yes'``). The protocol and head tables are tagged by their ``kind`` and
``head`` keys, so each kind of protocol and head accepts only its own parameters. :mod:`clearbench.tasks.card`
turns a validated file into the :class:`~clearbench.tasks.card.TaskCard` the protocols run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StringConstraints, ValidationInfo, field_validator

from clearbench.errors import ClearbenchError
from clearbench.mil.head_params import ABMILParams, MLPParams
from clearbench.scans.windows import get_window
from clearbench.settings import Settings
from clearbench.tasks.spec import DEFAULT_K, METRICS, ProtocolSpec

TaskType = Literal["multilabel", "binary"]
MIN_TEST_PATIENTS = 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _as_list(value: Any) -> Any:
    """A card given as Python data (an entry point) may use tuples where TOML gives lists."""
    return list(value) if isinstance(value, tuple) else value


Text = Annotated[str, StringConstraints(min_length=1)]
Texts = Annotated[list[Text], BeforeValidator(_as_list), Field(min_length=1)]


def _distinct(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError(f"duplicate entries in {values!r}")
    return values


class HoldoutKFoldTable(Settings):
    """``kind = "holdout+kfold"``: a patient hold-out test set (or an official split), then k-fold CV."""

    kind: Literal["holdout+kfold"]
    folds: int = Field(default=ProtocolSpec.folds, ge=2)
    test_fraction: float = Field(default=ProtocolSpec.test_fraction, gt=0.0, lt=1.0)
    seed: int = Field(default=ProtocolSpec.seed, ge=0)
    test_split: Text | None = None  # the dataset's official test split, instead of a seeded hold-out

    def spec(self) -> ProtocolSpec:
        return ProtocolSpec(self.kind, self.folds, self.test_fraction, seed=self.seed, test_split=self.test_split)


class NestedKFoldTable(Settings):
    """``kind = "nested-kfold"``: k outer folds, each with a seeded validation part of its training patients."""

    kind: Literal["nested-kfold"]
    folds: int = Field(default=ProtocolSpec.folds, ge=2)
    val_fraction: float = Field(default=ProtocolSpec.val_fraction, gt=0.0, lt=1.0)
    seed: int = Field(default=ProtocolSpec.seed, ge=0)

    def spec(self) -> ProtocolSpec:
        return ProtocolSpec(self.kind, self.folds, val_fraction=self.val_fraction, seed=self.seed)


class TrainingSpec(Settings):
    """The training recipe: the paper's (AdamW, lr 1e-4, batch 128, 32 epochs, patience 8) plus clearbench's
    two additions, which a card (or ``--no-standardize --min-steps 0``) can turn off to get the paper's exactly.

    ``standardize`` z-scores every feature with the training fold's statistics. ``min_steps`` shrinks the
    batch of a fold whose training bags would give fewer optimizer steps than that over ``max_epochs``
    epochs (the paper's batch of 128 gives one step per epoch below 128 training bags); 0 turns it off.
    """

    lr: float = Field(default=1e-4, gt=0.0, description="AdamW learning rate.")
    weight_decay: float = Field(default=1e-2, ge=0.0, description="AdamW weight decay.")
    batch_size: int = Field(default=128, ge=1, description="Training batch in bags.")
    max_epochs: int = Field(default=32, ge=1, description="Maximum epochs.")
    patience: int = Field(
        default=8, ge=1, description="Epochs without a lower validation loss before stopping (best weights restored)."
    )
    standardize: bool = Field(default=True, description="Z-score features with the training fold's statistics.")
    min_steps: int = Field(
        default=512, ge=0, description="Shrink the batch of a small cohort until a fold gets this many optimizer steps."
    )


class ABMILTable(ABMILParams):
    head: Literal["abmil"] = "abmil"


class MLPTable(MLPParams):
    head: Literal["mlp"] = "mlp"


HeadTable = ABMILTable | MLPTable


def _head_or(default: type[HeadTable]) -> Callable[[Any], Any]:
    """A head table that names no head gets the encoder kind's default one (and so that head's parameters)."""
    name = default.model_fields["head"].default

    def fill(value: Any) -> Any:
        return {"head": name, **value} if isinstance(value, Mapping) else value

    return fill


class HeadsTable(Settings):
    """``[heads.slice]`` and ``[heads.volume]``: the head trained on each kind of encoder's embeddings
    (slice encoders give bags, so ABMIL; volume encoders give one vector, so an MLP)."""

    slice: Annotated[HeadTable, Field(discriminator="head"), BeforeValidator(_head_or(ABMILTable))] = ABMILTable()
    volume: Annotated[HeadTable, Field(discriminator="head"), BeforeValidator(_head_or(MLPTable))] = MLPTable()


class TaskCardFile(Settings):
    """A task card file. Keys are validated in this order, so ``labels`` is checked against ``type``."""

    name: str
    title: Text | None = None  # default: the name
    description: str = ""
    dataset: str
    type: TaskType
    labels: Texts
    windows: Texts
    metrics: Texts = Field(default_factory=lambda: list(METRICS))
    protocol: Annotated[HoldoutKFoldTable | NestedKFoldTable, Field(discriminator="kind")]
    training: TrainingSpec = TrainingSpec()
    heads: HeadsTable = HeadsTable()
    # ±k slices around a key slice count as a hit for the attention hit rate.
    hit_rate_k: int = Field(default=DEFAULT_K, ge=0)
    # A run refuses a test set of fewer patients: an AUC on a handful of them moves by tenths with one patient.
    min_test_patients: int = Field(default=MIN_TEST_PATIENTS, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"{name!r} may use only letters, digits, '_', '.' and '-'")
        return name

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, dataset: str) -> str:
        from clearbench.scans.registry import dataset_targets

        known = dataset_targets()
        if dataset not in known:
            raise ValueError(f"unknown dataset {dataset!r}; known datasets are {', '.join(sorted(known))}")
        return dataset

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("type") == "binary" and len(labels) != 1:
            raise ValueError(f"a binary task has exactly one label (1 = positive class), got {labels}")
        return _distinct(labels)

    @field_validator("windows")
    @classmethod
    def _windows(cls, windows: list[str]) -> list[str]:
        for window in windows:
            try:
                get_window(window)
            except ClearbenchError as exc:
                raise ValueError(str(exc)) from None
        return _distinct(windows)

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, metrics: list[str]) -> list[str]:
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; expected some of {', '.join(METRICS)}")
        return _distinct(metrics)
