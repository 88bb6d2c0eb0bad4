"""Run results in the same LanceDB store as the embeddings: runs, folds, metrics and predictions.

Four tables, all keyed by the run's *config hash* (task card, encoder provenance, head, training recipe,
seed, the labelled scans, their vectors, the folds as drawn and the clearbench version), so that re-running
the same configuration finds the folds it already finished, and nothing else:

- ``runs``: one row per ``clearbench run`` invocation and encoder that trained something: config, config
  hash, seed, encoder provenance, clearbench version, start and end times, excluded scans, reused folds,
  the summary over folds (the structured entries are JSON strings), and the task's stored split it ran
  on: ``split_id`` (see :mod:`clearbench.store.splits`), ``n_missing`` and ``missing`` (JSON list), the
  scans of that split with no embeddings in this encoder's table. ``status`` is ``running`` from the
  start, ``complete`` once every fold is committed, and ``superseded`` once ``--rerun`` has deleted the
  folds of its configuration to train them again. An invocation that finds *every* fold of its
  configuration already committed adds no row: it reports the newest complete run of that configuration
  (same ``run_id``), so the newest ``complete`` row per (task, encoder) is always the latest result and
  a repeated run never shows up as a second one. Rows written before ``split_id`` existed read as null
  there (the table gains the new columns on first write).
- ``run_folds``: one row per finished fold, written *last*: it is the fold's commit marker. Holds the
  scans of each role, the training curve, the best epoch, the F1 thresholds chosen on validation, and
  ``training`` (JSON): the batch the fold trained with, its optimizer steps, and, when it standardised its
  features, the training bags' per-feature mean and std.
- ``run_metrics``: long format, one row per (fold, evaluation set, label or ``macro``, metric);
  ``value`` is null where the metric is undefined (one class only in that set).
- ``run_predictions``: one row per (fold, role, scan): labels, probabilities, thresholded predictions,
  and for ABMIL the attention weight of every instance with its window and slice index.

A fold is finished when its ``run_folds`` row exists. A run killed between writing a fold's predictions
and its marker leaves rows that the next run deletes before redoing that fold, so nothing is counted
twice and nothing committed is lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from lancedb.table import Table as LanceTable

from clearbench.store import db as dbmod

RUNS, FOLDS, METRICS, PREDICTIONS = "runs", "run_folds", "run_metrics", "run_predictions"
_TS = pa.timestamp("us", tz="UTC")

RUNS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("encoder", pa.string(), nullable=False),
        pa.field("embedding_table", pa.string()),
        pa.field("head", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("config", pa.string()),
        pa.field("encoder_provenance", pa.string()),
        pa.field("clearbench_version", pa.string()),
        pa.field("device", pa.string()),
        pa.field("started_at", _TS),
        pa.field("finished_at", _TS),
        pa.field("status", pa.string()),
        pa.field("n_scans", pa.int64()),
        pa.field("n_patients", pa.int64()),
        pa.field("excluded", pa.string()),
        pa.field("folds_reused", pa.string()),
        pa.field("summary", pa.string()),
        pa.field("split_id", pa.string()),
        pa.field("n_missing", pa.int64()),
        pa.field("missing", pa.string()),
    ]
)

# What every per-fold row starts with: the configuration and run it belongs to, and the fold.
_FOLD_KEYS = [
    pa.field("config_hash", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("task", pa.string()),
    pa.field("encoder", pa.string()),
    pa.field("fold", pa.int64(), nullable=False),
]
_KEY = pa.field("key", pa.string(), nullable=False)

FOLDS_SCHEMA = pa.schema(
    [
        _KEY,
        *_FOLD_KEYS,
        pa.field("seed", pa.int64()),
        pa.field("stratified", pa.bool_()),
        pa.field("train_scan_ids", pa.list_(pa.string())),
        pa.field("val_scan_ids", pa.list_(pa.string())),
        pa.field("test_scan_ids", pa.list_(pa.string())),
        pa.field("best_epoch", pa.int64()),
        pa.field("epochs_run", pa.int64()),
        pa.field("train_loss", pa.list_(pa.float64())),
        pa.field("val_loss", pa.list_(pa.float64())),
        pa.field("labels", pa.list_(pa.string())),
        pa.field("thresholds", pa.list_(pa.float64())),
        pa.field("thresholds_defaulted", pa.list_(pa.bool_())),
        pa.field("seconds", pa.float64()),
        pa.field("finished_at", _TS),
        pa.field("training", pa.string()),
    ]
)

METRICS_SCHEMA = pa.schema(
    [
        *_FOLD_KEYS,
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("threshold", pa.float64()),
    ]
)

PREDICTIONS_SCHEMA = pa.schema(
    [
        _KEY,
        *_FOLD_KEYS,
        pa.field("role", pa.string(), nullable=False),
        pa.field("scan_id", pa.string(), nullable=False),
        pa.field("patient_id", pa.string()),
        pa.field("labels", pa.list_(pa.string())),
        pa.field("y_true", pa.list_(pa.float32())),
        pa.field("prob", pa.list_(pa.float32())),
        pa.field("pred", pa.list_(pa.bool_())),
        pa.field("attention", pa.list_(pa.float32())),
        pa.field("window", pa.list_(pa.string())),
        pa.field("slice_idx", pa.list_(pa.int32())),
    ]
)

_SCHEMAS = {RUNS: RUNS_SCHEMA, FOLDS: FOLDS_SCHEMA, METRICS: METRICS_SCHEMA, PREDICTIONS: PREDICTIONS_SCHEMA}


def now() -> datetime:
    return datetime.now(timezone.utc)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _list_column(values: Sequence[np.ndarray | None], value_type: pa.DataType) -> pa.Array:
    """A list column from per-row arrays (None for a null row) without a Python loop over elements."""
    present = [v for v in values if v is not None]
    lengths = np.array([0 if v is None else len(v) for v in values], dtype=np.int32)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(present) if present else np.zeros(0)
    mask = pa.array([v is None for v in values], pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, value_type), mask=mask)


_SQL_TYPES = {pa.string(): "STRING", pa.int64(): "BIGINT"}


def _add_null_columns(table: Any, fields: Sequence[pa.Field]) -> None:
    """Give a table written by an older clearbench the columns added since, null in its existing rows."""
    try:
        table.add_columns({f.name: f"CAST(NULL AS {_SQL_TYPES[f.type]})" for f in fields})
    except (ValueError, RuntimeError, OSError):
        if any(f.name not in table.schema.names for f in fields):  # not another process that added them first
            raise


class ResultsStore:
    """The results tables of one store; created on first write."""

    def __init__(self, path: str | Path | None = None, db: Any = None) -> None:
        self.db = db if db is not None else dbmod.connect(path)
        self.path = Path(self.db.uri)

    def _table(self, name: str) -> LanceTable:
        table = dbmod.open_or_create(self.db, name, _SCHEMAS[name])
        absent = [f for f in _SCHEMAS[name] if f.name not in table.schema.names]
        if absent:
            _add_null_columns(table, absent)
        return table

    def _existing(self, name: str) -> LanceTable | None:
        return dbmod.open_table(self.db, name)

    def _read(self, name: str, where: str | None = None) -> pa.Table:
        with dbmod.storage_faults(self.path, name):
            table = self._existing(name)
            if table is None:
                return _SCHEMAS[name].empty_table()
            query = table.search()
            if where:
                query = query.where(where)
            return query.limit(None).to_arrow()

    def _add(self, name: str, rows: pa.Table) -> None:
        with dbmod.storage_faults(self.path, name):
            self._table(name).add(rows)

    def _delete(self, names: Sequence[str], where: str) -> None:
        for name in names:
            with dbmod.storage_faults(self.path, name):
                table = self._existing(name)
                if table is not None:
                    table.delete(where)

    # -- writing -----------------------------------------------------------------------------------------

    def start_run(self, row: dict[str, Any]) -> None:
        """Record a run as started (status ``running``); :meth:`finish_run` completes it."""
        full: dict[str, Any] = {f.name: None for f in RUNS_SCHEMA}
        full.update(row, status="running", started_at=row.get("started_at") or now())
        self._add(RUNS, pa.Table.from_pylist([full], schema=RUNS_SCHEMA))

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any], folds_reused: Sequence[int]) -> None:
        with dbmod.storage_faults(self.path, RUNS):
            self._table(RUNS).update(
                where=f"run_id = {dbmod.sql_str(run_id)}",
                values={
                    "status": status,
                    "finished_at": now(),
                    "summary": _json(summary),
                    "folds_reused": _json(list(folds_reused)),
                },
            )

    def discard_unfinished_fold(self, config_hash: str, fold: int) -> None:
        """Delete rows a killed run left for a fold that has no commit marker."""
        self._delete(
            (PREDICTIONS, METRICS, FOLDS), f"config_hash = {dbmod.sql_str(config_hash)} AND fold = {int(fold)}"
        )

    def delete_config(self, config_hash: str) -> None:
        """Forget every fold of a configuration (``--rerun``); the runs table keeps its history, its
        complete runs of the configuration marked ``superseded`` since their folds are gone."""
        self._delete((FOLDS, METRICS, PREDICTIONS), f"config_hash = {dbmod.sql_str(config_hash)}")
        with dbmod.storage_faults(self.path, RUNS):
            if self._existing(RUNS) is not None:
                self._table(RUNS).update(
                    where=f"config_hash = {dbmod.sql_str(config_hash)} AND status = 'complete'",
                    values={"status": "superseded"},
                )

    def write_fold(self, fold_row: dict[str, Any], metric_rows: list[dict[str, Any]], predictions: pa.Table) -> None:
        """Commit one fold: predictions, then metrics, then the fold row that marks it finished."""
        self.discard_unfinished_fold(fold_row["config_hash"], fold_row["fold"])
        if predictions.num_rows:
            self._add(PREDICTIONS, predictions.cast(PREDICTIONS_SCHEMA))
        if metric_rows:
            self._add(METRICS, pa.Table.from_pylist(metric_rows, schema=METRICS_SCHEMA))
        row = {"key": f"{fold_row['config_hash']}/{fold_row['fold']}", "finished_at": now(), **fold_row}
        self._add(FOLDS, pa.Table.from_pylist([row], schema=FOLDS_SCHEMA))

    @staticmethod
    def predictions_table(
        common: dict[str, Any],
        role: str,
        scan_ids: Sequence[str],
        patient_ids: Sequence[str],
        labels: Sequence[str],
        y_true: np.ndarray,
        prob: np.ndarray,
        pred: np.ndarray,
        attention: Sequence[np.ndarray | None],
        window: Sequence[np.ndarray | None],
        slice_idx: Sequence[np.ndarray | None],
    ) -> pa.Table:
        """Rows of one role of one fold, columns built from arrays (no per-element Python)."""
        n = len(scan_ids)
        cols = {
            "key": [f"{common['config_hash']}/{common['fold']}/{role}/{s}" for s in scan_ids],
            **{k: [v] * n for k, v in common.items()},
            "role": [role] * n,
            "scan_id": list(scan_ids),
            "patient_id": list(patient_ids),
        }
        table = pa.table({k: pa.array(v, PREDICTIONS_SCHEMA.field(k).type) for k, v in cols.items()})
        table = table.append_column("labels", pa.array([list(labels)] * n, pa.list_(pa.string())))
        table = table.append_column("y_true", _list_column(list(y_true.astype(np.float32)), pa.float32()))
        table = table.append_column("prob", _list_column(list(prob.astype(np.float32)), pa.float32()))
        table = table.append_column("pred", _list_column(list(pred.astype(bool)), pa.bool_()))
        table = table.append_column("attention", _list_column(attention, pa.float32()))
        table = table.append_column("window", _list_column(window, pa.string()))
        table = table.append_column("slice_idx", _list_column(slice_idx, pa.int32()))
        return table.select(PREDICTIONS_SCHEMA.names)

    # -- reading -----------------------------------------------------------------------------------------

    def finished_folds(self, config_hash: str) -> dict[int, dict[str, Any]]:
        """The committed folds of a configuration, by fold index."""
        rows = self._read(FOLDS, f"config_hash = {dbmod.sql_str(config_hash)}").to_pylist()
        return {int(r["fold"]): r for r in rows}

    def latest_complete_run(self, config_hash: str) -> dict[str, Any] | None:
        """The newest complete run of a configuration, or None."""
        rows = self._read(RUNS, f"config_hash = {dbmod.sql_str(config_hash)} AND status = 'complete'").to_pylist()
        return max(rows, key=lambda r: r["started_at"]) if rows else None

    def runs(self, task: str | None = None, encoder: str | None = None) -> list[dict[str, Any]]:
        """Runs, newest first, with their JSON columns decoded."""
        where = [f"task = {dbmod.sql_str(task)}"] if task else []
        if encoder:
            where.append(f"encoder = {dbmod.sql_str(encoder)}")
        rows = self._read(RUNS, " AND ".join(where) or None).to_pylist()
        for r in rows:
            for key in ("config", "encoder_provenance", "excluded", "summary", "folds_reused", "missing"):
                r[key] = json.loads(r[key]) if r.get(key) else None
        return sorted(rows, key=lambda r: r["started_at"], reverse=True)

    def metrics(self, config_hash: str, split: str | None = "test") -> pa.Table:
        where = f"config_hash = {dbmod.sql_str(config_hash)}" + (
            f" AND split = {dbmod.sql_str(split)}" if split else ""
        )
        return self._read(METRICS, where)

    def predictions(
        self, config_hash: str, role: str | None = "test", scan_ids: Iterable[str] | None = None
    ) -> pa.Table:
        where = [f"config_hash = {dbmod.sql_str(config_hash)}"]
        if role:
            where.append(f"role = {dbmod.sql_str(role)}")
        if scan_ids is not None:
            where.append(f"scan_id IN ({', '.join(dbmod.sql_str(s) for s in scan_ids) or dbmod.sql_str('')})")
        return self._read(PREDICTIONS, " AND ".join(where))
