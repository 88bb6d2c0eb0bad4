"""The embedding store: one LanceDB table per (dataset, encoder), written whole scans at a time.

Writers go through :class:`EmbeddingTable`, which checks every vector before it is cast to float16 (an
inf would otherwise be stored silently: LanceDB rejects NaN but accepts inf), and inserts with
``merge_insert`` on the primary key, so that two runs that happen to embed the same scan at the same time
store it once. Each call commits one group of whole scans; a killed run therefore leaves either all of a
scan's rows or none of them, and the next run skips what is there.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clearbench.config import store_path
from clearbench.errors import ClearbenchError
from clearbench.scans.windows import Window
from clearbench.store import db as dbmod
from clearbench.store.bags import Bags, group_bags
from clearbench.store.schema import (
    SOURCE_SIG,
    embedding_schema,
    is_embedding_schema,
    provenance_differences,
    schema_dim,
    schema_provenance,
    window_metadata,
    windows_from_metadata,
)

FLOAT16_MAX = float(np.finfo(np.float16).max)
_OPTIMIZE_ATTEMPTS = 5


class TableNotFoundError(ClearbenchError):
    """The store has no embedding table of that name."""


class DimensionMismatchError(ClearbenchError):
    """The encoder's vectors do not have the dimension of the table they would go into."""


class ProvenanceMismatchError(ClearbenchError):
    """The table was filled by a different encoder, weights, preprocessing or dataset."""


class NonFiniteEmbeddingError(ClearbenchError):
    """An encoder produced NaN, inf, or values beyond the float16 range for a scan."""

    def __init__(self, scan_id: str, reason: str) -> None:
        self.scan_id = scan_id
        self.reason = reason
        super().__init__(f"scan {scan_id}: {reason}")


@dataclass
class ScanEmbeddings:
    """All the rows of one scan, as the pipeline hands them to the store (vectors float32 ``(n, D)``)."""

    scan_id: str
    patient_id: str
    window: np.ndarray
    slice_idx: np.ndarray
    z_mm: np.ndarray
    vectors: np.ndarray
    source_sig: str | None = None

    @property
    def n_rows(self) -> int:
        return int(self.vectors.shape[0])


def check_vectors(scan_id: str, vectors: np.ndarray) -> None:
    """Refuse vectors that float16 cannot hold: NaN, inf, or a magnitude above 65504 (which casts to inf)."""
    finite = np.isfinite(vectors)
    if not finite.all():
        bad_rows = int((~finite).any(axis=1).sum())
        n_nan = int(np.isnan(vectors).sum())
        raise NonFiniteEmbeddingError(
            scan_id,
            f"the encoder gave non-finite values ({n_nan} NaN, {int((~finite).sum()) - n_nan} inf) "
            f"in {bad_rows} of {len(vectors)} rows; nothing of this scan was stored",
        )
    peak = float(np.abs(vectors).max()) if vectors.size else 0.0
    if peak > FLOAT16_MAX:
        raise NonFiniteEmbeddingError(
            scan_id,
            f"the encoder gave values up to {peak:.4g}, beyond float16's {FLOAT16_MAX:g} (they would be stored "
            "as inf); nothing of this scan was stored",
        )


def cohort_signature(sources: dict[str, str | None]) -> str | None:
    """One digest of the scan ids a table holds and their source signatures; ``None`` if any is unrecorded."""
    if not sources or any(sig is None for sig in sources.values()):
        return None
    lines = "\n".join(f"{scan_id}\t{sources[scan_id]}" for scan_id in sorted(sources))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def quote_list(values: Iterable[str]) -> str:
    """A SQL ``IN`` list of string literals."""
    return ", ".join(dbmod.sql_str(v) for v in values)


class EmbeddingTable:
    """A writable embedding table whose dim, provenance and windows have been checked."""

    def __init__(self, table: lancedb.table.Table, store: str | Path) -> None:
        self.table = table
        self.store = Path(store)
        self.name = table.name
        self.schema = table.schema
        self.dim = schema_dim(self.schema)

    def done(self) -> set[tuple[str, str]]:
        """The (scan_id, window) pairs already stored; read once when a run starts."""
        with dbmod.storage_faults(self.store, self.name):
            cols = self.table.search().select(["scan_id", "window"]).to_arrow()
        pairs = cols.group_by(["scan_id", "window"]).aggregate([])
        return set(zip(pairs["scan_id"].to_pylist(), pairs["window"].to_pylist(), strict=True))

    def stored_sources(self) -> dict[str, str | None]:
        """Each stored scan's source signature; ``None`` for rows written before signatures were recorded."""
        with dbmod.storage_faults(self.store, self.name):
            if SOURCE_SIG not in self.schema.names:
                return dict.fromkeys(self.table.search().select(["scan_id"]).to_arrow()["scan_id"].unique().to_pylist())
            rows = self.table.search().select(["scan_id", SOURCE_SIG]).to_arrow()
        pairs = rows.group_by(["scan_id", SOURCE_SIG]).aggregate([])
        return dict(zip(pairs["scan_id"].to_pylist(), pairs[SOURCE_SIG].to_pylist(), strict=True))

    def forget(self, scan_ids: Sequence[str]) -> None:
        """Delete every row of these scans (their vectors were made from files that have since changed)."""
        ids = sorted(set(scan_ids))
        with dbmod.storage_faults(self.store, self.name):
            for start in range(0, len(ids), 1000):
                self.table.delete(f"scan_id IN ({quote_list(ids[start : start + 1000])})")

    def to_arrow(self, scans: Sequence[ScanEmbeddings]) -> pa.Table:
        """Checked rows of whole scans as one Arrow table in the table's schema."""
        for scan in scans:
            if scan.vectors.ndim != 2 or scan.vectors.shape[1] != self.dim:
                raise DimensionMismatchError(
                    f"scan {scan.scan_id}: vectors of shape {scan.vectors.shape} do not fit table "
                    f"'{self.name}', which holds {self.dim}-d vectors"
                )
            check_vectors(scan.scan_id, scan.vectors)
        n = [s.n_rows for s in scans]
        scan_id = pa.array(np.repeat([s.scan_id for s in scans], n).astype(object), pa.string())
        patient = pa.array(np.repeat([s.patient_id for s in scans], n).astype(object), pa.string())
        window = pa.array(np.concatenate([np.asarray(s.window, dtype=object) for s in scans]), pa.string())
        slice_idx = pa.array(np.concatenate([np.asarray(s.slice_idx, dtype=np.int32) for s in scans]))
        z_mm = pa.array(np.concatenate([np.asarray(s.z_mm, dtype=np.float64) for s in scans]))
        flat = np.concatenate([s.vectors for s in scans]).astype(np.float16).reshape(-1)
        vector = pa.FixedSizeListArray.from_arrays(pa.array(flat), self.dim)
        key = pc.binary_join_element_wise(scan_id, window, pc.cast(slice_idx, pa.string()), "/")
        source_sig = pa.array(np.repeat([s.source_sig for s in scans], n).astype(object), pa.string())
        columns = {
            "key": key,
            "scan_id": scan_id,
            "patient_id": patient,
            "window": window,
            "slice_idx": slice_idx,
            "z_mm": z_mm,
            "vector": vector,
            SOURCE_SIG: source_sig,
        }
        # A table made before source signatures has no source_sig column: its rows are written without one.
        return pa.Table.from_arrays([columns[n] for n in self.schema.names], names=self.schema.names).cast(self.schema)

    def write(self, scans: Sequence[ScanEmbeddings]) -> int:
        """Commit whole scans in one transaction; rows whose key is already stored are left as they are.

        Returns the number of rows inserted. Raises :class:`NonFiniteEmbeddingError` (nothing written)
        when any scan holds a value float16 cannot represent.
        """
        if not scans:
            return 0
        rows = self.to_arrow(scans)
        with dbmod.storage_faults(self.store, self.name):
            result = self.table.merge_insert("key").when_not_matched_insert_all().execute(rows)
        return int(result.num_inserted_rows)


class EmbeddingStore:
    """Embedding tables in one LanceDB folder (default ``CLEARBENCH_HOME/store``)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = store_path(path)
        self.db = dbmod.connect(self.path)

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.path)!r})"

    @staticmethod
    def table_name(dataset: str, encoder: Any) -> str:
        """The default table of (dataset, encoder): ``{dataset}__{encoder}`` in characters lancedb allows."""
        encoder_name = encoder if isinstance(encoder, str) else encoder.name
        return dbmod.safe_table_name(f"{dataset}__{encoder_name}")

    # -- reading ---------------------------------------------------------------------------------------------

    def _open(self, name: str) -> lancedb.table.Table:
        dbmod.check_table_name(name)
        with dbmod.storage_faults(self.path, name):
            table = dbmod.open_table(self.db, name)
        if table is None or not is_embedding_schema(table.schema):
            known = ", ".join(self.tables()) or "none yet; run clearbench embed"
            raise TableNotFoundError(f"no embedding table '{name}' in {self.path} (tables: {known})")
        return table

    def _resolve(self, dataset: str | None, encoder: Any, table: str | None) -> str:
        if table is not None:
            return dbmod.check_table_name(table)
        if dataset is None or encoder is None:
            raise ClearbenchError("name the table, or both the dataset and the encoder")
        return self.table_name(dataset, encoder)

    def tables(self) -> list[str]:
        """The embedding tables in the store (other tables, such as run results, are not listed)."""
        names = []
        with dbmod.storage_faults(self.path):
            for name in dbmod.table_names(self.db):
                table = dbmod.open_table(self.db, name)
                if table is not None and is_embedding_schema(table.schema):
                    names.append(name)
        return names

    def provenance(self, table: str) -> dict[str, Any]:
        """What made the table's vectors: encoder provenance, dataset and its root, dim, windows, version."""
        return schema_provenance(self._open(table).schema)

    def info(self, table: str) -> dict[str, Any]:
        """Rows, scans, dim, rows per window, versions and provenance of one table."""
        tbl = self._open(table)
        with dbmod.storage_faults(self.path, table):
            cols = tbl.search().select(["scan_id", "window"]).to_arrow()
            versions = tbl.list_versions()
            latest: dict[str, Any] = versions[-1] if versions else {"version": tbl.version, "metadata": {}}
            indices = [index.name for index in tbl.list_indices()]
        windows = cols.group_by("window").aggregate([("scan_id", "count")])
        provenance = schema_provenance(tbl.schema)
        return {
            "table": table,
            "path": str(self.path / f"{table}.lance"),
            "rows": cols.num_rows,
            "scans": len(pc.unique(cols["scan_id"])),
            "dim": schema_dim(tbl.schema),
            "windows": dict(zip(windows["window"].to_pylist(), windows["scan_id_count"].to_pylist(), strict=True)),
            "version": int(latest["version"]),
            "versions": len(versions),
            "fragments": int(latest["metadata"].get("total_fragments", 0)),
            "indices": indices,
            "provenance": provenance,
            "cohort": {
                "root": provenance.get("dataset_root"),
                "signature": cohort_signature(EmbeddingTable(tbl, self.path).stored_sources()),
            },
        }

    def scan_ids(self, table: str) -> list[str]:
        """The scans stored in a table, sorted."""
        tbl = self._open(table)
        with dbmod.storage_faults(self.path, table):
            cols = tbl.search().select(["scan_id"]).to_arrow()
        return sorted(pc.unique(cols["scan_id"]).to_pylist())

    def bags(
        self,
        dataset: str | None = None,
        encoder: Any = None,
        scan_ids: Sequence[str] | None = None,
        windows: Sequence[str] | None = None,
        *,
        table: str | None = None,
    ) -> Bags:
        """Read the bags of all scans, or of ``scan_ids``, restricted to ``windows`` when given.

        With ``windows`` given, a scan lacking one of them is left out and listed in ``Bags.missing``, as are
        requested scans that are not stored.
        """
        name = self._resolve(dataset, encoder, table)
        tbl = self._open(name)
        where = []
        if scan_ids is not None:
            if not scan_ids:
                where.append("false")
            else:
                where.append(f"scan_id IN ({quote_list(sorted(set(scan_ids)))})")
        if windows is not None:
            where.append(f"window IN ({quote_list(windows)})")
        query = tbl.search().select(["scan_id", "patient_id", "window", "slice_idx", "z_mm", "vector"])
        if where:
            query = query.where(" AND ".join(where))
        with dbmod.storage_faults(self.path, name):
            rows = query.to_arrow()
        return group_bags(
            rows, list(windows) if windows is not None else None, list(scan_ids) if scan_ids is not None else None
        )

    # -- writing ---------------------------------------------------------------------------------------------

    def open_for_writing(
        self,
        name: str,
        dim: int,
        provenance: dict[str, Any],
        windows: Sequence[Window],
        *,
        overwrite: bool = False,
    ) -> EmbeddingTable:
        """Open (or create) ``name`` for vectors of ``dim`` made as ``provenance`` says.

        Refuses a table of another dim or another provenance, naming the two ways out: another table name, or
        ``--overwrite``. A window the table has not seen yet is recorded on it; a window name it knows with
        other HU bounds is refused.
        """
        dbmod.check_table_name(name)
        with dbmod.storage_faults(self.path, name):
            return self._open_for_writing(name, dim, provenance, windows, overwrite)

    def _open_for_writing(
        self, name: str, dim: int, provenance: dict[str, Any], windows: Sequence[Window], overwrite: bool
    ) -> EmbeddingTable:
        provenance = {**provenance, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        windows = list(windows)
        # Checked before --overwrite drops anything: the results tables (runs, predictions) share this store.
        existing = dbmod.open_table(self.db, name)
        if existing is not None and not is_embedding_schema(existing.schema):
            raise ClearbenchError(
                f"table '{name}' in {self.path} is not an embedding table; choose another name with --table"
            )
        if overwrite and existing is not None:
            self.db.drop_table(name)  # just found, so it exists
        table = dbmod.open_or_create(self.db, name, embedding_schema(dim, provenance, windows))
        fix = f"embed into a new table with --table NAME, or replace '{name}' with --overwrite"
        stored_dim = schema_dim(table.schema)
        if stored_dim != dim:
            raise DimensionMismatchError(
                f"table '{name}' holds {stored_dim}-d vectors but encoder '{provenance.get('encoder', '?')}' "
                f"gives {dim}-d vectors; {fix}"
            )
        diffs = provenance_differences(schema_provenance(table.schema), provenance)
        if diffs:
            raise ProvenanceMismatchError(f"table '{name}' was made differently ({'; '.join(diffs)}); {fix}")
        known = windows_from_metadata(table.schema.field("window").metadata)
        for window in windows:
            bounds = known.get(window.name)
            if bounds is not None and bounds != (window.lo, window.hi):
                raise ProvenanceMismatchError(
                    f"table '{name}' has window '{window.name}' as {bounds[0]:g}..{bounds[1]:g} HU, not "
                    f"{window.lo:g}..{window.hi:g}; give the custom window another name, or {fix}"
                )
        new = [w for w in windows if w.name not in known]
        if new:
            table.update_field_metadata({"path": "window", "metadata": window_metadata(new)})
        return EmbeddingTable(table, self.path)

    def optimize(self, table: str, *, keep_versions: timedelta = timedelta(minutes=10)) -> None:
        """Compact fragments, index ``scan_id`` for fast subset reads, and drop versions older than ``keep_versions``.

        Versions are kept for a while because a writer in another process may still be reading the version it
        started from (measured: pruning to the latest version makes concurrent ``merge_insert`` calls fail with
        missing files). The fragments this compaction replaces are therefore removed by the next optimize.

        Two runs that finish together both optimize; Lance refuses the later compaction as a retryable
        conflict, and it is retried against the table the other one compacted.
        """
        from lancedb.index import BTree

        tbl = self._open(table)
        with dbmod.storage_faults(self.path, table):
            if tbl.count_rows() == 0:
                return
            for attempt in range(_OPTIMIZE_ATTEMPTS):
                try:
                    if not any(index.columns == ["scan_id"] for index in tbl.list_indices()):
                        tbl.create_index("scan_id", config=BTree())
                    tbl.optimize(cleanup_older_than=keep_versions)
                    return
                except RuntimeError as exc:
                    if dbmod.classify(exc) != "conflict" or attempt == _OPTIMIZE_ATTEMPTS - 1:
                        raise
                    time.sleep(0.05 * (attempt + 1))

    def rm(self, table: str) -> None:
        """Delete an embedding table and its files."""
        self._open(table)
        with dbmod.storage_faults(self.path, table):
            self.db.drop_table(table)
