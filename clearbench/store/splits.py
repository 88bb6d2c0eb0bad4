"""The stored splits of tasks, in the same LanceDB store as the embeddings and results.

Two tables:

- ``splits``: one row per (split, fold, scan): the task, ``split_id``, the fingerprint of the cohort the
  split was drawn on, the seed and protocol (JSON), the fold, the scan's role in it (train, val or test),
  the scan and patient ids, the labels and official split name the scan had when the split was drawn,
  and whether the fold could be stratified. A split is written with a single ``add()``, which LanceDB
  commits as one new table version, so a reader sees either all of its rows or none. Every row also
  carries ``write_id`` and ``n_rows`` (the rows that write added): a split is read only from a write
  whose rows are all there, so even rows left by a writer that did not go through :meth:`SplitTables.write`
  are never read as a whole split, and two processes that draw the same split at once leave two
  identical writes of which one is read.
- ``split_choices``: one row each time a split becomes the split of a task for a cohort (``drawn``,
  ``resplit`` or ``kept`` for a changed cohort), and each time a task goes back to a split that is not
  its newest choice (``stored``: another seed, or a cohort that changed back), so the newest row of a
  task always names the split its latest run, ``clearbench splits`` or ``pretrain --exclude-test-of``
  used. It is written after the split's rows, so a split without a choice row (a kill between the two
  writes) is never used until it is chosen again, and a user's ``--keep-split`` is remembered.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from clearbench.store import db as dbmod

SPLITS, CHOICES = "splits", "split_choices"
ROLES = ("train", "val", "test")
_TS = pa.timestamp("us", tz="UTC")

SPLITS_SCHEMA = pa.schema(
    [
        pa.field("task", pa.string(), nullable=False),
        pa.field("split_id", pa.string(), nullable=False),
        pa.field("cohort_fingerprint", pa.string(), nullable=False),
        pa.field("seed", pa.int64()),
        pa.field("protocol", pa.string()),
        pa.field("fold", pa.int64(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("scan_id", pa.string(), nullable=False),
        pa.field("patient_id", pa.string()),
        pa.field("y", pa.list_(pa.float32())),
        pa.field("official_split", pa.string()),
        pa.field("stratified", pa.bool_()),
        pa.field("write_id", pa.string(), nullable=False),
        pa.field("n_rows", pa.int64(), nullable=False),
        pa.field("created_at", _TS),
    ]
)

CHOICES_SCHEMA = pa.schema(
    [
        pa.field("task", pa.string(), nullable=False),
        pa.field("protocol", pa.string(), nullable=False),
        pa.field("seed", pa.int64()),
        pa.field("cohort_fingerprint", pa.string(), nullable=False),
        pa.field("split_id", pa.string(), nullable=False),
        pa.field("choice", pa.string(), nullable=False),
        pa.field("created_at", _TS),
    ]
)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class SplitTables:
    """Reading and writing the ``splits`` and ``split_choices`` tables of one store."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.path = Path(db.uri)

    def _read(self, name: str, where: str) -> list[dict[str, Any]]:
        with dbmod.storage_faults(self.path, name):
            table = dbmod.open_table(self.db, name)
            if table is None:
                return []
            return table.search().where(where).limit(None).to_arrow().to_pylist()

    def _add(self, name: str, schema: pa.Schema, rows: pa.Table) -> None:
        with dbmod.storage_faults(self.path, name):
            dbmod.open_or_create(self.db, name, schema).add(rows)

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Add one split's rows in a single commit, stamped with a fresh ``write_id`` and their count."""
        stamp = {"write_id": uuid.uuid4().hex, "n_rows": len(rows), "created_at": _now()}
        table = pa.Table.from_pylist([{**r, **stamp} for r in rows], schema=SPLITS_SCHEMA)
        self._add(SPLITS, SPLITS_SCHEMA, table)

    def rows(self, split_id: str) -> list[dict[str, Any]] | None:
        """The rows of ``split_id`` from its earliest complete write, or None when no write is complete."""
        writes: dict[str, list[dict[str, Any]]] = {}
        for r in self._read(SPLITS, f"split_id = {dbmod.sql_str(split_id)}"):
            writes.setdefault(r["write_id"], []).append(r)
        whole = [w for w in writes.values() if len(w) == w[0]["n_rows"]]
        if not whole:
            return None
        return min(whole, key=lambda w: w[0]["created_at"])

    def choose(self, task: str, protocol: str, seed: int, fingerprint: str, split_id: str, choice: str) -> None:
        """Record that ``split_id`` is the split of ``task`` for the cohort ``fingerprint``."""
        row = {
            "task": task,
            "protocol": protocol,
            "seed": seed,
            "cohort_fingerprint": fingerprint,
            "split_id": split_id,
            "choice": choice,
            "created_at": _now(),
        }
        self._add(CHOICES, CHOICES_SCHEMA, pa.Table.from_pylist([row], schema=CHOICES_SCHEMA))

    def latest_choice(self, task: str) -> dict[str, Any] | None:
        """The newest choice made for ``task`` under any protocol and seed: the split it last used."""
        rows = self._read(CHOICES, f"task = {dbmod.sql_str(task)}")
        return max(rows, key=lambda r: r["created_at"]) if rows else None

    def choices(self, task: str, protocol: str) -> list[dict[str, Any]]:
        """The choices made for ``task`` under ``protocol`` (JSON, seed included), newest first."""
        rows = self._read(CHOICES, f"task = {dbmod.sql_str(task)} AND protocol = {dbmod.sql_str(protocol)}")
        return sorted(rows, key=lambda r: r["created_at"], reverse=True)
