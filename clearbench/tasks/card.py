"""Task cards: one TOML file per task, saying what to predict, from which dataset, under which protocol.

A card is data. It names the dataset (a reader), the scan-level labels, the task type (multi-label with
one sigmoid per label, or binary trained as two-class cross-entropy), the HU windows whose slices form a
bag, the protocol and its parameters, the metrics, the training recipe, and which head to train for
each encoder kind (slice encoders give bags, so ABMIL; volume encoders give one vector, so an MLP).

Every field is checked when the card is read; a bad card gives one line naming the file and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearbench.config import read_toml
from clearbench.errors import ClearbenchError, InputError
from clearbench.scans.windows import get_window
from clearbench.tasks.spec import DEFAULT_K, METRICS, PROTOCOLS, ProtocolSpec

if TYPE_CHECKING:
    from clearbench.mil.train import TrainConfig

TASK_TYPES = ("multilabel", "binary")
ENCODER_KINDS = ("slice", "volume")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Head parameters and their defaults (the paper's code: 256-d hidden and attention layers, dropout 0.5).
HEAD_PARAMS: dict[str, dict[str, Any]] = {
    "abmil": {"hidden": 256, "attention_dim": 256, "dropout": 0.5, "gated": False},
    "mlp": {"hidden": 256, "dropout": 0.5},
}
DEFAULT_HEADS = {"slice": "abmil", "volume": "mlp"}
MIN_TEST_PATIENTS = 10


@dataclass(frozen=True)
class HeadSpec:
    """A head by name with its parameters (defaults filled in)."""

    head: str
    params: dict[str, Any]


@dataclass(frozen=True)
class TrainingSpec:
    """The training recipe: the paper's (AdamW, lr 1e-4, batch 128, 32 epochs, patience 8) plus clearbench's
    two additions, which a card (or ``--no-standardize --min-steps 0``) can turn off to get the paper's exactly.

    ``standardize`` z-scores every feature with the training fold's statistics. ``min_steps`` shrinks the
    batch of a fold whose training bags would give fewer optimizer steps than that over ``max_epochs``
    epochs (the paper's batch of 128 gives one step per epoch below 128 training bags); 0 turns it off.
    """

    lr: float = 1e-4
    weight_decay: float = 1e-2
    batch_size: int = 128
    max_epochs: int = 32
    patience: int = 8
    standardize: bool = True
    min_steps: int = 512


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
class TaskCard:
    """A validated task card. ``source`` says where it came from (a file or an entry point)."""

    name: str
    dataset: str
    type: str
    labels: tuple[str, ...]
    windows: tuple[str, ...]
    protocol: ProtocolSpec
    training: TrainingSpec = TrainingSpec()
    heads: dict[str, HeadSpec] = field(default_factory=dict)
    metrics: tuple[str, ...] = METRICS
    # ±k slices around a key slice that count as a hit for the attention hit rate. An analysis setting,
    # not a training one: left out of to_dict(), so changing it never invalidates finished folds.
    hit_rate_k: int = DEFAULT_K
    # A run refuses a test set of fewer patients: an AUC on a handful of them moves by tenths with one patient.
    # It refuses, never changes a number, so it is left out of to_dict() like hit_rate_k.
    min_test_patients: int = MIN_TEST_PATIENTS
    title: str = ""
    description: str = ""
    source: str = ""

    @property
    def loss(self) -> str:
        return "ce" if self.type == "binary" else "bce"

    def head_for(self, kind: str) -> HeadSpec:
        """The head to train on embeddings of an encoder of ``kind`` (slice or volume)."""
        return self.heads[kind]

    def with_training(self, **overrides: Any) -> TaskCard:
        """This card with some training fields replaced (``None`` values keep the card's); unknown names raise."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, training=replace(self.training, **given)) if given else self

    def train_config(self, epochs: int | None = None, device: str = "cpu") -> TrainConfig:
        from clearbench.mil.train import TrainConfig

        t = self.training
        return TrainConfig(
            loss=self.loss,  # type: ignore[arg-type]
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
            "training": asdict(self.training),
            "heads": {kind: {"head": h.head, **h.params} for kind, h in self.heads.items()},
        }


class _Fields:
    """Typed access to one table of a card, raising one-line errors that name the field."""

    def __init__(self, source: str, data: Mapping[str, Any], prefix: str = "") -> None:
        self.source, self.data, self.prefix = source, data, prefix

    def fail(self, key: str, reason: str) -> InputError:
        return InputError(self.source, f"field '{self.prefix}{key}': {reason}")

    def check_keys(self, allowed: set[str]) -> None:
        for key in self.data:
            if key not in allowed:
                raise self.fail(key, f"unknown field; expected one of {', '.join(sorted(allowed))}")

    def get(self, key: str, default: Any = ..., *, required: bool = False) -> Any:
        if key not in self.data:
            if required or default is ...:
                raise self.fail(key, "missing")
            return default
        return self.data[key]

    def string(self, key: str, default: Any = ..., choices: tuple[str, ...] | None = None) -> Any:
        value = self.get(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def integer(self, key: str, default: Any = ..., minimum: int = 0) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"expected an integer >= {minimum}, got {value!r}")
        return value

    def number(
        self, key: str, default: Any = ..., low: float = 0.0, high: float | None = None, open_low: bool = False
    ) -> float:
        value = self.get(key, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            ok = (value > low if open_low else value >= low) and (high is None or value < high)
        if not ok:
            bounds = f"{'>' if open_low else '>='} {low}" + (f" and < {high}" if high is not None else "")
            raise self.fail(key, f"expected a number {bounds}, got {value!r}")
        return float(value)

    def boolean(self, key: str, default: Any = ...) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        value = self.get(key, default)
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, f"expected a non-empty list of strings, got {value!r}")
        if len(set(value)) != len(value):
            raise self.fail(key, f"duplicate entries in {list(value)!r}")
        return tuple(value)

    def table(self, key: str) -> _Fields:
        value = self.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a table, got {value!r}")
        return _Fields(self.source, value, f"{self.prefix}{key}.")


_TOP = {
    "name",
    "title",
    "description",
    "dataset",
    "type",
    "labels",
    "windows",
    "metrics",
    "protocol",
    "training",
    "heads",
    "hit_rate_k",
    "min_test_patients",
}


def card_from_dict(data: Mapping[str, Any], source: str, default_name: str | None = None) -> TaskCard:
    """Validate card data; ``source`` names the file (or entry point) in error messages."""
    from clearbench.scans.registry import dataset_targets

    top = _Fields(source, data)
    top.check_keys(_TOP)
    name = top.string("name", default_name) if default_name is not None else top.string("name")
    if not _NAME.match(name):
        raise top.fail("name", f"{name!r} may use only letters, digits, '_', '.' and '-'")
    dataset = top.string("dataset")
    known = dataset_targets()
    if dataset not in known:
        raise top.fail("dataset", f"unknown dataset {dataset!r}; known datasets are {', '.join(sorted(known))}")
    task_type = top.string("type", choices=TASK_TYPES)
    labels = top.strings("labels")
    if task_type == "binary" and len(labels) != 1:
        raise top.fail("labels", f"a binary task has exactly one label (1 = positive class), got {list(labels)}")
    windows = top.strings("windows")
    for w in windows:
        try:
            get_window(w)
        except ClearbenchError as exc:
            raise top.fail("windows", str(exc)) from None
    description = top.get("description", "")
    if not isinstance(description, str):
        raise top.fail("description", f"expected a string, got {description!r}")
    metrics = top.strings("metrics", list(METRICS))
    for m in metrics:
        if m not in METRICS:
            raise top.fail("metrics", f"unknown metric {m!r}; expected some of {', '.join(METRICS)}")
    return TaskCard(
        name=name,
        dataset=dataset,
        type=task_type,
        labels=labels,
        windows=windows,
        protocol=_protocol(top.table("protocol")),
        training=_training(top.table("training")),
        heads=_heads(top.table("heads")),
        metrics=metrics,
        hit_rate_k=top.integer("hit_rate_k", DEFAULT_K),
        min_test_patients=top.integer("min_test_patients", MIN_TEST_PATIENTS, minimum=1),
        title=top.string("title", name),
        description=description,
        source=source,
    )


def _protocol(f: _Fields) -> ProtocolSpec:
    kind = f.string("kind", choices=PROTOCOLS)
    if kind == "holdout+kfold":
        f.check_keys({"kind", "folds", "test_fraction", "seed", "test_split"})
        return ProtocolSpec(
            kind=kind,
            folds=f.integer("folds", 5, minimum=2),
            test_fraction=f.number("test_fraction", 0.2, low=0.0, high=1.0, open_low=True),
            seed=f.integer("seed", 0),
            test_split=f.string("test_split", None),
        )
    f.check_keys({"kind", "folds", "val_fraction", "seed"})
    return ProtocolSpec(
        kind=kind,
        folds=f.integer("folds", 5, minimum=2),
        val_fraction=f.number("val_fraction", 0.2, low=0.0, high=1.0, open_low=True),
        seed=f.integer("seed", 0),
    )


def _training(f: _Fields) -> TrainingSpec:
    f.check_keys({"lr", "weight_decay", "batch_size", "max_epochs", "patience", "standardize", "min_steps"})
    d = TrainingSpec()
    return TrainingSpec(
        lr=f.number("lr", d.lr, open_low=True),
        weight_decay=f.number("weight_decay", d.weight_decay),
        batch_size=f.integer("batch_size", d.batch_size, minimum=1),
        max_epochs=f.integer("max_epochs", d.max_epochs, minimum=1),
        patience=f.integer("patience", d.patience, minimum=1),
        standardize=f.boolean("standardize", d.standardize),
        min_steps=f.integer("min_steps", d.min_steps, minimum=0),
    )


def _heads(f: _Fields) -> dict[str, HeadSpec]:
    f.check_keys(set(ENCODER_KINDS))
    heads = {}
    for kind in ENCODER_KINDS:
        h = f.table(kind)
        name = h.string("head", DEFAULT_HEADS[kind], choices=tuple(HEAD_PARAMS))
        defaults = HEAD_PARAMS[name]
        h.check_keys({"head", *defaults})
        params: dict[str, Any] = {}
        for key, default in defaults.items():
            if isinstance(default, bool):
                params[key] = h.boolean(key, default)
            elif key == "dropout":
                params[key] = h.number(key, default, high=1.0)
            else:
                params[key] = h.integer(key, default, minimum=1)
        heads[kind] = HeadSpec(name, params)
    return heads


def load_card(path: str | Path) -> TaskCard:
    """Read and validate one task card file; its name defaults to the file's stem."""
    path = Path(path)
    data = read_toml(path, "task card")
    return card_from_dict(data, str(path), default_name=path.stem)
