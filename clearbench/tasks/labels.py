"""A task's targets, read from the dataset reader's records (metadata only, no pixels).

A scan takes part in a task only when every one of the task's labels is known for it; the others are
excluded *with a reason*, so that a run can report, for instance, which NSCLC patients had stage NA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from clearbench.errors import ClearbenchError
from clearbench.scans.base import ScanRecord
from clearbench.tasks.card import TaskCard


@dataclass(frozen=True)
class Exclusion:
    scan_id: str
    reason: str


@dataclass
class TaskLabels:
    """The labelled scans of a task: ids, patients, official split names and ``y`` ``(n, n_labels)`` in {0, 1}."""

    label_names: list[str]
    scan_ids: list[str]
    patient_ids: list[str]
    splits: list[str | None]
    y: np.ndarray
    excluded: list[Exclusion] = field(default_factory=list)

    def index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.scan_ids)}


def _missing_reason(rec: ScanRecord, missing: list[str]) -> str:
    reason = f"no value for label{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
    raw = rec.meta.get("stage_raw", rec.meta.get("stage"))
    return f"{reason} (stage {raw!r})" if raw is not None else reason


def task_labels(card: TaskCard, records: Sequence[ScanRecord], label_names: Sequence[str] = ()) -> TaskLabels:
    """Targets for ``card`` from ``records``; ``label_names`` (the reader's) checks that the labels exist."""
    if label_names:
        unknown = [name for name in card.labels if name not in label_names]
        if unknown:
            raise ClearbenchError(
                f"task '{card.name}' asks for labels {', '.join(unknown)} that dataset '{card.dataset}' does not "
                f"provide; it provides {', '.join(label_names)}"
            )
    ids, patients, splits, rows, excluded = [], [], [], [], []
    for rec in records:
        values = [rec.labels.get(name) for name in card.labels]
        missing = [name for name, v in zip(card.labels, values, strict=True) if v is None or v != v]
        if missing:
            excluded.append(Exclusion(rec.scan_id, _missing_reason(rec, missing)))
            continue
        bad = [f"{name}={v!r}" for name, v in zip(card.labels, values, strict=True) if v not in (0, 1)]
        if bad:
            excluded.append(Exclusion(rec.scan_id, f"labels must be 0 or 1, got {', '.join(bad)}"))
            continue
        ids.append(rec.scan_id)
        patients.append(rec.patient_id)
        splits.append(rec.split)
        rows.append(values)
    y = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(card.labels))
    return TaskLabels(list(card.labels), ids, patients, splits, y, excluded)
