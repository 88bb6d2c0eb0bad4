"""Read the results tables into one record per leaderboard row: a finished run of a task on one encoder.

Which run stands for an encoder: the newest run with status ``complete`` of that (task, encoder), unless
the caller names run ids, each of which then replaces the newest run of its encoder. A run's numbers are
read through its configuration hash (a run that reused finished folds owns no fold rows of its own), and
only from folds that have their commit marker in ``run_folds``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clearbench.errors import ClearbenchError
from clearbench.leaderboards.stats import METRIC_NAMES, FoldPredictions, RunPredictions
from clearbench.store.results import ResultsStore
from clearbench.store.splits import SplitTables

COMPLETE = "complete"


@dataclass
class RunRecord:
    """One finished run, with what a leaderboard row shows and what its statistics need."""

    task: str
    encoder: str
    run_id: str
    config_hash: str
    labels: list[str]
    # metric -> (n_folds, n_labels + 1) test values per fold, labels in ``labels`` order then the macro
    # average; NaN where the metric is undefined (one class only in that fold's test set).
    fold_metrics: dict[str, np.ndarray]
    predictions: RunPredictions
    n_test_scans: int
    n_test_patients: int
    expected_folds: int | None
    split_id: str | None
    n_missing: int | None
    card: str | None
    weights_sha256: str | None
    clearbench_version: str | None
    finished_at: datetime | None

    @property
    def n_folds(self) -> int:
        return len(self.predictions.folds)


def current_split_id(results: ResultsStore, task: str) -> str | None:
    """The split most recently chosen for ``task`` in this store, or None (no stored splits yet).

    ``clearbench run`` records a choice whenever a split becomes the task's (drawn, redrawn with
    ``--resplit``, or kept for a changed cohort), so the newest choice is the split the board compares on.
    """
    choice = SplitTables(results.db).latest_choice(task)
    return None if choice is None else choice["split_id"]


def chosen_runs(
    results: ResultsStore, task: str, run_ids: Sequence[str] = (), encoders: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The runs row of each encoder: its newest complete run of ``task``, or the one ``run_ids`` names."""
    rows = results.runs(task)
    complete = sorted(
        (r for r in rows if r["status"] == COMPLETE and r["finished_at"] is not None),
        key=lambda r: r["finished_at"],
        reverse=True,
    )
    chosen: dict[str, dict[str, Any]] = {}
    for r in complete:
        chosen.setdefault(r["encoder"], r)
    by_id = {r["run_id"]: r for r in rows}
    for run_id in run_ids:
        run = by_id.get(run_id)
        if run is None:
            recent = ", ".join(x["run_id"] for x in complete[:5]) or "none"
            raise ClearbenchError(
                f"--run {run_id}: no run of task {task} has that id in this store (newest finished: {recent})"
            )
        if run["status"] != COMPLETE:
            raise ClearbenchError(
                f"--run {run_id}: that run of task {task} has status '{run['status']}', not complete; pick a finished one"
            )
        chosen[run["encoder"]] = run
    picked = [chosen[e] for e in sorted(chosen)]
    return [r for r in picked if encoders is None or r["encoder"] in encoders]


def _matrix(column: pa.ChunkedArray, n_labels: int) -> np.ndarray:
    """A list column of equal-length lists as an ``(n_rows, n_labels)`` array, without a Python loop."""
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    return flat.reshape(-1, n_labels)


def _fold_metrics(
    results: ResultsStore, config_hash: str, folds: list[int], labels: list[str]
) -> dict[str, np.ndarray]:
    table = results.metrics(config_hash, split="test").select(["fold", "label", "metric", "value"]).to_pylist()
    fold_row = {k: i for i, k in enumerate(folds)}
    col = {name: j for j, name in enumerate([*labels, "macro"])}
    out = {m: np.full((len(folds), len(labels) + 1), np.nan) for m in METRIC_NAMES}
    for r in table:
        i, j = fold_row.get(int(r["fold"])), col.get(r["label"])
        if i is not None and j is not None and r["metric"] in out and r["value"] is not None:
            out[r["metric"]][i, j] = float(r["value"])
    return out


def _predictions(results: ResultsStore, config_hash: str, folds: list[int]) -> tuple[RunPredictions, list[str], int]:
    """Test predictions per committed fold, columns in the run's own label order; and the scan count."""
    table = results.predictions(config_hash, role="test")
    table = table.filter(pc.is_in(table["fold"], pa.array(folds, pa.int64())))
    labels = list(table["labels"][0].as_py()) if table.num_rows else []
    out = []
    for k in folds:
        part = table.filter(pc.equal(table["fold"], k)).sort_by("scan_id")
        out.append(
            FoldPredictions(
                np.asarray(part["patient_id"].to_pylist(), dtype=str),
                _matrix(part["y_true"], len(labels)),
                _matrix(part["prob"], len(labels)),
                _matrix(part["pred"], len(labels)).astype(bool),
            )
        )
    n_scans = len(set(table["scan_id"].to_pylist()))
    return RunPredictions(tuple(out)), labels, n_scans


def read_record(results: ResultsStore, run: dict[str, Any]) -> RunRecord:
    """The record of one runs row (decoded by :meth:`ResultsStore.runs`)."""
    config_hash = run["config_hash"]
    folds = sorted(results.finished_folds(config_hash))
    predictions, labels, n_scans = _predictions(results, config_hash, folds)
    provenance = run.get("encoder_provenance") or {}
    protocol = ((run.get("config") or {}).get("task") or {}).get("protocol") or {}
    expected = protocol.get("folds")
    return RunRecord(
        task=run["task"],
        encoder=run["encoder"],
        run_id=run["run_id"],
        config_hash=config_hash,
        labels=labels,
        fold_metrics=_fold_metrics(results, config_hash, folds, labels),
        predictions=predictions,
        n_test_scans=n_scans,
        n_test_patients=len(predictions.patients()) if predictions.folds else 0,
        expected_folds=int(expected) if expected is not None else None,
        split_id=run.get("split_id"),
        n_missing=run.get("n_missing"),
        card=(provenance.get("card") or {}).get("name") or provenance.get("encoder") or run["encoder"],
        weights_sha256=provenance.get("weights_sha256"),
        clearbench_version=run.get("clearbench_version"),
        finished_at=run.get("finished_at"),
    )


def read_records(
    results: ResultsStore, task: str, run_ids: Sequence[str] = (), encoders: Sequence[str] | None = None
) -> list[RunRecord]:
    """One record per encoder with a finished run of ``task`` (see the module docstring for which run)."""
    return [read_record(results, r) for r in chosen_runs(results, task, run_ids, encoders)]
