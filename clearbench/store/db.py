"""The LanceDB connection under ``CLEARBENCH_HOME/store``, and the few table helpers everyone needs.

The connection always re-reads the latest table version (``read_consistency_interval=0``): several
processes write the same store (torchrun ranks, a second embed run, the results tables), and a stale
handle would resume from an old view and embed scans twice.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Literal

import lancedb
import pyarrow as pa

from clearbench.config import store_path
from clearbench.errors import ClearbenchError, UsageError

# lancedb accepts these characters in table names; anything else becomes "_".
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
# A table is a folder NAME.lance in the store: no separators, no "." or "..", no leading "-" that reads as an option.
_TABLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
TABLE_NAME_FORM = "1 to 128 letters, digits, '_', '-' or '.', starting with a letter, digit or '_'"


class TableNameError(UsageError):
    """A table name that is not a plain folder name inside the store."""


class StorageError(ClearbenchError):
    """The store could not be written or read: read-only, full, not permitted, or a table deleted meanwhile."""


def check_table_name(name: str) -> str:
    """``name`` when it is a valid table name; otherwise a :class:`TableNameError` with the allowed form."""
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
        raise TableNameError(f"invalid table name {name!r}: use {TABLE_NAME_FORM} (e.g. deeplesion__hu-hist)")
    return name


def sql_str(value: object) -> str:
    """``value`` as a SQL string literal for a LanceDB filter (single quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def connect(path: str | Path | None = None) -> lancedb.DBConnection:
    """The store at ``path`` (default ``CLEARBENCH_HOME/store``), created on first use."""
    folder = store_path(path)
    with storage_faults(folder):
        folder.mkdir(parents=True, exist_ok=True)
    return lancedb.connect(folder, read_consistency_interval=timedelta(0))


def safe_table_name(name: str) -> str:
    """``name`` with every character lancedb refuses replaced by ``_``."""
    return "".join(c if c in _NAME_OK else "_" for c in name)


# -- faults -------------------------------------------------------------------------------------------
Fault = Literal["read-only", "no-space", "no-permission", "table-gone", "not-found", "schema-mismatch", "conflict"]
_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_ERRNO_FAULTS: dict[int, Fault] = {
    errno.EROFS: "read-only",
    errno.ENOSPC: "no-space",
    errno.EDQUOT: "no-space",
    errno.EACCES: "no-permission",
    errno.EPERM: "no-permission",
}


# LanceDB (0.40, on a local store) raises no exception class per condition: its Rust core turns an absent
# table and a schema clash into ValueError, and every Lance I/O or commit error into RuntimeError, with the
# OS error only in the text ("... (os error 28)"); ``lancedb.exceptions`` covers other things (missing values
# and columns, jobs), and the typed ``TableNotFoundError`` of ``lance_namespace`` is raised only for
# namespace connections, which clearbench does not use. pyarrow's own errors (ArrowIOError is an OSError)
# carry their errno. So an OSError's errno is read first; otherwise the exception's type says which kind
# of error it is and the text, read here only, says which condition. A LanceDB release that rewords a
# message fails tests/test_store_faults.py, and needs one fix, in this table.
_TEXT_FAULTS: tuple[tuple[tuple[type[Exception], ...], tuple[str, ...], Fault], ...] = (
    ((RuntimeError, OSError), ("Not found:", ".lance"), "table-gone"),  # the table's folder vanished under a handle
    ((ValueError,), ("was not found",), "not-found"),  # open_table of an absent table
    ((ValueError,), ("does not match",), "schema-mismatch"),  # create_table against another schema
    ((RuntimeError,), ("etryable commit conflict",), "conflict"),  # a concurrent commit won the race
)


def classify(exc: BaseException) -> Fault | None:
    """What went wrong in a store operation, or None for anything this module does not recognise."""
    if isinstance(exc, OSError) and exc.errno in _ERRNO_FAULTS:
        return _ERRNO_FAULTS[exc.errno]
    if not isinstance(exc, (RuntimeError, ValueError, OSError)):
        return None
    text = str(exc)
    if found := _OS_ERROR.search(text):  # Rust's own rendering of an errno: unambiguous in any exception type
        return _ERRNO_FAULTS.get(int(found[1]))
    for kinds, markers, fault in _TEXT_FAULTS:
        if isinstance(exc, kinds) and all(marker in text for marker in markers):
            return fault
    return None


def storage_error(exc: BaseException, store: Path, table: str | None = None) -> StorageError | None:
    """A one-line error for a storage fault, naming the store or table and what to do; None if it is not one."""
    fault = classify(exc)
    where = f"table '{table}' in the store {store}" if table else f"the store {store}"
    resume = "work committed before this is kept, and running the same command again resumes"
    if fault == "read-only":
        return StorageError(
            f"cannot write {where}: the file system is read-only; pass a writable --store (or "
            f"CLEARBENCH_HOME), or remount it read-write; {resume}"
        )
    if fault == "no-permission":
        return StorageError(
            f"cannot write {where}: permission denied; pass a --store you may write to, or fix the "
            f"permissions of {store}; {resume}"
        )
    if fault == "no-space":
        return StorageError(
            f"cannot write {where}: no space left on the device; free space (df -h {store}), or "
            f"pass a --store on another disk; {resume}"
        )
    if fault == "table-gone":
        return StorageError(
            f"{where} was deleted while this command was using it; run the command again, which makes the table afresh"
        )
    return None


@contextmanager
def storage_faults(store: str | Path, table: str | None = None) -> Iterator[None]:
    """Turn a storage fault inside the block into a :class:`StorageError`; anything else passes unchanged."""
    try:
        yield
    except ClearbenchError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:
        error = storage_error(exc, Path(store), table)
        if error is None:
            raise
        raise error from exc


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
        if classify(exc) == "not-found":
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
            if classify(exc) != "schema-mismatch":
                raise
    raise RuntimeError(f"could not open or create table '{name}' in {db.uri}")
