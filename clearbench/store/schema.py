"""The layout of an embedding table, and the provenance written into it.

One row per (scan, window, slice): ``key`` (``scan_id/window/slice_idx``, the unenforced primary key that
makes concurrent writers unable to duplicate a row), ``scan_id``, ``patient_id``, ``window``,
``slice_idx``, ``z_mm``, ``vector`` as ``fixed_size_list<float16, D>`` and ``source_sig``, the scan's source
signature (:mod:`clearbench.scans.signature`) when its rows were written. Tables made before clearbench
recorded source signatures lack that column; they are read and appended to as they are.

Provenance is JSON in the schema metadata, written once when the table is created: the encoder's own
provenance (card, weights source and sha256, preprocessing hash), the dataset and its root, the dim, and
the clearbench version. The HU bounds of each window live in the ``window`` field's metadata, one key per
window, because a later run may add a window to an existing table.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from clearbench.scans.windows import Window

PROVENANCE_KEY = b"clearbench.provenance"
TABLE_KIND_KEY = b"clearbench.table"
TABLE_KIND = b"embeddings"
WINDOW_META_PREFIX = "clearbench:window:"
# Lance reads this field metadata as "this column is the (single-column) unenforced primary key". Setting it at
# creation, rather than with set_unenforced_primary_key() afterwards, gives racing creators identical schemas.
PRIMARY_KEY_META = {"lance-schema:unenforced-primary-key:position": "1"}

# The window, slice_idx and z_mm of the one row a volume encoder writes per scan: it sees the whole HU
# volume through its own 3D preprocessing, so there is no clearbench window and no slice.
VOLUME_WINDOW = "volume"
VOLUME_SLICE_IDX = -1

SOURCE_SIG = "source_sig"

# Provenance entries that may change without changing a single vector: a newer clearbench (what matters
# of it is in the preprocessing hash), a dataset that moved, and the time of creation. Windows are checked
# one by one (a run may add a window to a table).
_NOT_IDENTITY = frozenset({"clearbench_version", "dataset_root", "created", "windows"})
# Of the card, only what shapes the vectors; its description, licence or file location may change freely.
_CARD_IDENTITY = ("family", "params", "preprocessing", "dim")


def window_metadata(windows: list[Window]) -> dict[str, str]:
    return {f"{WINDOW_META_PREFIX}{w.name}": f"{w.lo!r} {w.hi!r}" for w in windows}


def windows_from_metadata(meta: dict[bytes, bytes] | None) -> dict[str, tuple[float, float]]:
    """Window name -> (lo, hi) HU, as recorded on the ``window`` field."""
    out: dict[str, tuple[float, float]] = {}
    prefix = WINDOW_META_PREFIX.encode()
    for key, value in (meta or {}).items():
        if key.startswith(prefix):
            lo, hi = (float(v) for v in value.decode().split())
            out[key[len(prefix) :].decode()] = (lo, hi)
    return out


def embedding_schema(dim: int, provenance: dict[str, Any], windows: list[Window]) -> pa.Schema:
    """The Arrow schema of a new table for ``dim``-d vectors, carrying ``provenance``."""
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False, metadata=PRIMARY_KEY_META),
            pa.field("scan_id", pa.string(), nullable=False),
            pa.field("patient_id", pa.string(), nullable=False),
            pa.field("window", pa.string(), nullable=False, metadata=window_metadata(windows)),
            pa.field("slice_idx", pa.int32(), nullable=False),
            pa.field("z_mm", pa.float64(), nullable=False),
            pa.field("vector", pa.list_(pa.float16(), dim), nullable=False),
            pa.field(SOURCE_SIG, pa.string(), nullable=True),
        ],
        metadata={
            TABLE_KIND_KEY: TABLE_KIND,
            PROVENANCE_KEY: json.dumps(provenance, sort_keys=True, default=str).encode(),
        },
    )


def is_embedding_schema(schema: pa.Schema) -> bool:
    return (schema.metadata or {}).get(TABLE_KIND_KEY) == TABLE_KIND


def schema_dim(schema: pa.Schema) -> int:
    return int(schema.field("vector").type.list_size)


def schema_provenance(schema: pa.Schema) -> dict[str, Any]:
    """The provenance recorded at creation, with the table's windows merged in under ``windows``."""
    raw = (schema.metadata or {}).get(PROVENANCE_KEY)
    provenance: dict[str, Any] = json.loads(raw) if raw else {}
    windows = windows_from_metadata(schema.field("window").metadata)
    provenance["windows"] = {name: list(bounds) for name, bounds in sorted(windows.items())}
    return provenance


def provenance_differences(stored: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The provenance entries that identify the vectors and differ, as ``name: stored -> new`` lines."""
    keys = sorted((set(stored) | set(new)) - _NOT_IDENTITY)
    if stored.get("weights_sha256") and stored.get("weights_sha256") == new.get("weights_sha256"):
        keys = [
            k for k in keys if k != "weights"
        ]  # the same file, perhaps moved: its path does not identify it, its hash does
    diffs = []
    for key in keys:
        a, b = _canonical(_identity(key, stored.get(key))), _canonical(_identity(key, new.get(key)))
        if a != b:
            diffs.append(f"{key}: {_short(stored.get(key))} -> {_short(new.get(key))}")
    return diffs


def _identity(key: str, value: Any) -> Any:
    if key == "card" and isinstance(value, dict):
        return {k: value.get(k) for k in _CARD_IDENTITY}
    return value


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any, width: int = 60) -> str:
    text = _canonical(value)
    return text if len(text) <= width else text[: width - 3] + "..."
