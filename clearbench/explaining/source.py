"""Where explanations come from: a finished run's stored test predictions and the dataset's key slices.

Nothing is retrained or re-embedded. The attention of every test instance was written with its window and
slice index when the fold finished (``run_predictions``); the key slices are read from the dataset
reader's index (metadata only, no pixels), which for DeepLesion holds every lesion's key slice in the
record's ``meta["lesions"]``. A reader without lesion annotations gives no key slices: its scans can be
plotted but have no hit rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clearbench.errors import ClearbenchError
from clearbench.store.results import ResultsStore


@dataclass(frozen=True)
class ScanAttention:
    """One test scan as one fold's model saw it: its probabilities and the attention of every instance."""

    scan_id: str
    patient_id: str
    fold: int
    labels: tuple[str, ...]
    y_true: np.ndarray
    prob: np.ndarray
    attention: np.ndarray
    window: np.ndarray
    slice_idx: np.ndarray
    key_slices: tuple[int, ...] = ()


def chosen_run(results: ResultsStore, task: str, encoder: str, run_id: str | None = None) -> dict[str, Any]:
    """The run to explain: ``run_id`` if given, else the newest complete run of ``encoder`` on ``task``."""
    runs = results.runs(task=task, encoder=encoder)
    if run_id is not None:
        for r in runs:
            if r["run_id"] == run_id:
                return r
        raise ClearbenchError(
            f"no run {run_id} of encoder {encoder} on task {task}; list runs with: clearbench leaderboard {task}"
        )
    complete = [r for r in runs if r["status"] == "complete"]
    if not complete:
        raise ClearbenchError(
            f"no finished run of encoder {encoder} on task {task}; make one with: clearbench run {task} --encoder {encoder}"
        )
    return complete[0]


def key_slices_by_scan(records: Any) -> dict[str, tuple[int, ...]]:
    """Key slices (0-based Scan indices) of every record that has annotated lesions."""
    out: dict[str, tuple[int, ...]] = {}
    for rec in records:
        lesions = rec.meta.get("lesions") or []
        keys = sorted({int(les["slice_idx"]) for les in lesions if les.get("slice_idx") is not None})
        if keys:
            out[rec.scan_id] = tuple(keys)
    return out


def dataset_key_slices(dataset: str, root: str | Path | None, store: str | Path | None) -> dict[str, tuple[int, ...]]:
    """The key slices of ``dataset``'s scans; empty when the dataset's root cannot be found (then no hit
    rate can be computed, which callers show as absent rather than fail)."""
    from clearbench.protocols.run import encoder_tables, labels_root
    from clearbench.scans.registry import open_dataset
    from clearbench.store import EmbeddingStore

    try:
        tables = encoder_tables(EmbeddingStore(store), dataset)
        reader = open_dataset(dataset, labels_root(dataset, root, tables))
    except ClearbenchError:
        return {}
    return key_slices_by_scan(reader.records())


def stored_attention(
    results: ResultsStore,
    run: dict[str, Any],
    *,
    scan_ids: list[str] | None = None,
    fold: int | None = None,
    key_slices: dict[str, tuple[int, ...]] | None = None,
) -> list[ScanAttention]:
    """The test predictions of ``run`` that carry attention, ordered by fold then scan."""
    table = results.predictions(run["config_hash"], role="test", scan_ids=scan_ids)
    if fold is not None:
        table = table.filter(np.asarray(table["fold"].to_numpy() == fold))
    keys = key_slices or {}
    out = []
    for row in table.to_pylist():
        if row["attention"] is None:
            continue
        out.append(
            ScanAttention(
                scan_id=row["scan_id"],
                patient_id=row["patient_id"] or "",
                fold=int(row["fold"]),
                labels=tuple(row["labels"] or ()),
                y_true=np.asarray(row["y_true"], dtype=np.float32),
                prob=np.asarray(row["prob"], dtype=np.float32),
                attention=np.asarray(row["attention"], dtype=np.float64),
                window=np.asarray(row["window"], dtype=object),
                slice_idx=np.asarray(row["slice_idx"], dtype=np.int64),
                key_slices=keys.get(row["scan_id"], ()),
            )
        )
    return sorted(out, key=lambda s: (s.fold, s.scan_id))
