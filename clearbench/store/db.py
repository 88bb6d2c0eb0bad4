"""The LanceDB connection under ``CLEARBENCH_HOME/store``, and the few table helpers everyone needs.

The connection always re-reads the latest table version (``read_consistency_interval=0``): several
processes write the same store (torchrun ranks, a second embed run, the results tables), and a stale
handle would resume from an old view and embed scans twice.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import lancedb
import pyarrow as pa

from clearbench.config import store_path

# lancedb accepts these characters in table names; anything else becomes "_".
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def connect(path: str | Path | None = None) -> lancedb.DBConnection:
    """The store at ``path`` (default ``CLEARBENCH_HOME/store``), created on first use."""
    folder = store_path(path)
    folder.mkdir(parents=True, exist_ok=True)
    return lancedb.connect(folder, read_consistency_interval=timedelta(0))


def safe_table_name(name: str) -> str:
    """``name`` with every character lancedb refuses replaced by ``_``."""
    return "".join(c if c in _NAME_OK else "_" for c in name)


def table_names(db: lancedb.DBConnection) -> list[str]:
    """Every table in the store, sorted. ``table_names()`` is deprecated and stops at 10, so page through."""
    names: list[str] = []
    token: str | None = None
    while True:
        page = db.list_tables(page_token=token)
        names.extend(page.tables)
        token = page.page_token
        if not token:
            return sorted(names)


def open_table(db: lancedb.DBConnection, name: str) -> lancedb.table.Table | None:
    """The table ``name``, or None when the store has no such table."""
    try:
        return db.open_table(name)
    except ValueError as exc:
        if "was not found" in str(exc):
            return None
        raise


def open_or_create(db: lancedb.DBConnection, name: str, schema: pa.Schema) -> lancedb.table.Table:
    """Open ``name``, creating it with ``schema`` when missing; safe when several processes race.

    Two creators with the same schema both succeed (``exist_ok``). Once the table's metadata has changed
    since creation, ``create_table`` refuses the original schema, so a failed create is retried as an open.
    """
    for _ in range(5):
        table = open_table(db, name)
        if table is not None:
            return table
        try:
            return db.create_table(name, schema=schema, exist_ok=True)
        except ValueError as exc:
            if "does not match" not in str(exc):
                raise
    raise RuntimeError(f"could not open or create table '{name}' in {db.uri}")
