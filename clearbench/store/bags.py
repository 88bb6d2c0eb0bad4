"""Bags: the rows of an embedding table grouped per scan, as numpy arrays ready for a MIL head.

Grouping is vectorised: the rows are ordered by (scan, window, slice) with one ``lexsort`` and one gather,
and scan ``i`` is the view ``vectors[offsets[i]:offsets[i + 1]]``. Nothing loops over rows in Python, so
reading a whole DeepLesion table costs about as much as decoding its columns.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch


@dataclass(frozen=True)
class Bags:
    """Slice embeddings grouped per scan: scan ``i`` owns rows ``offsets[i]:offsets[i + 1]``.

    Rows of a scan are ordered by window (in ``window_names`` order) and then by slice. ``window`` holds
    codes into ``window_names``. ``missing`` lists requested scans the table does not have (in full).
    """

    scan_ids: list[str]
    patient_ids: list[str]
    vectors: np.ndarray
    offsets: np.ndarray
    window: np.ndarray
    window_names: tuple[str, ...]
    slice_idx: np.ndarray
    z_mm: np.ndarray
    missing: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.scan_ids)

    @cached_property
    def _position(self) -> dict[str, int]:
        return {scan_id: i for i, scan_id in enumerate(self.scan_ids)}

    def rows(self, scan_id: str) -> slice:
        i = self._position[scan_id]
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def bag(self, scan_id: str) -> np.ndarray:
        """The ``(n_rows, dim)`` float32 embeddings of one scan (a view, not a copy)."""
        return self.vectors[self.rows(scan_id)]

    def sizes(self) -> np.ndarray:
        """Rows per scan."""
        return np.diff(self.offsets)


def _float32_rows(flat16: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """float16 rows -> float32, gathered in ``order``; torch converts on every core, numpy on one (2x slower here)."""
    with warnings.catch_warnings():
        # Arrow's buffers are read-only; they are only read here, into a new tensor.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        rows = torch.from_numpy(flat16)
    if order is not None:
        rows = rows.index_select(0, torch.from_numpy(order))
    return rows.float().numpy()


def _codes(column: pa.ChunkedArray | pa.Array, order: list[str]) -> np.ndarray:
    """Each value's position in ``order`` (values are known to be in it)."""
    return pc.index_in(column, value_set=pa.array(order, pa.string())).to_numpy(zero_copy_only=False).astype(np.int64)


def group_bags(table: pa.Table, window_names: list[str] | None = None, requested: list[str] | None = None) -> Bags:
    """Group embedding rows into :class:`Bags`.

    ``window_names`` fixes the window order (default: sorted); when given, a scan lacking any of these
    windows is left out and listed in ``missing``, so a task never trains on half a scan. ``requested`` is
    the list of scan ids asked for; those without rows are listed in ``missing`` too.
    """
    present_windows = sorted(pc.unique(table["window"]).to_pylist())
    complete_windows = window_names is not None
    names = list(window_names) if window_names is not None else present_windows
    scan_order = sorted(pc.unique(table["scan_id"]).to_pylist())
    scan_code = _codes(table["scan_id"], scan_order)
    window_code = _codes(table["window"], names)
    slice_idx = table["slice_idx"].to_numpy()

    keep_scans: np.ndarray = np.ones(len(scan_order), dtype=bool)
    if complete_windows and table.num_rows:
        seen = np.zeros((len(scan_order), len(names)), dtype=bool)
        seen[scan_code, window_code] = True
        keep_scans = np.asarray(seen.all(axis=1))  # asarray: numpy types all() along an axis as array or scalar
    incomplete = [s for s, keep in zip(scan_order, keep_scans, strict=True) if not keep]

    order = np.lexsort((slice_idx, window_code, scan_code))
    if not keep_scans.all():
        order = order[keep_scans[scan_code[order]]]
    scan_code_sorted = scan_code[order]
    kept_ids = [s for s, keep in zip(scan_order, keep_scans, strict=True) if keep]
    # Renumber the kept scans 0..n-1 so that bincount gives one count per kept scan.
    renumber = np.cumsum(keep_scans) - 1
    counts = np.bincount(renumber[scan_code_sorted], minlength=len(kept_ids))
    offsets = np.zeros(len(kept_ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])

    vector_col = table["vector"].combine_chunks()
    dim = vector_col.type.list_size
    flat = vector_col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    vectors = _float32_rows(flat, None if np.array_equal(order, np.arange(len(order))) else order)

    patient = table["patient_id"].to_numpy(zero_copy_only=False)
    first_rows = order[offsets[:-1]]
    requested_missing = sorted(set(requested) - set(scan_order)) if requested is not None else []
    return Bags(
        scan_ids=kept_ids,
        patient_ids=[str(p) for p in patient[first_rows]],
        vectors=vectors,
        offsets=offsets,
        window=window_code[order].astype(np.int16),
        window_names=tuple(names),
        slice_idx=slice_idx[order].astype(np.int32),
        z_mm=table["z_mm"].to_numpy()[order],
        missing=sorted(requested_missing + incomplete),
    )
