"""Stored values to the int16 HU a :class:`~clearbench.scans.scan.Scan` holds, one way for every reader.

A rescale (DICOM's slope, a scaled NIfTI, a float ``.npz``) can produce values int16 cannot hold. They are
clipped to its range, and how many were clipped is reported as a warning to the reader's
:class:`~clearbench.problems.ProblemLog`, never silently: a volume whose bone or metal saturated can still
be embedded, but its user should know. Integer input already inside the range is cast without a float
copy, whose temporaries would cost several times the volume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clearbench.problems import ProblemLog

INT16 = np.iinfo(np.int16)


def int16_hu(values: np.ndarray) -> tuple[np.ndarray, int]:
    """``values`` rounded to the nearest integer and clipped to the int16 range, as int16; and how many were clipped.

    ``values`` must be finite: what a NaN means (fill it, or refuse the volume) is the reader's decision.
    """
    if np.issubdtype(values.dtype, np.integer):
        if values.size == 0 or (INT16.min <= int(values.min()) and int(values.max()) <= INT16.max):
            return values.astype(np.int16, copy=False), 0
        values = values.astype(np.int64)
    else:
        values = np.rint(values.astype(np.float64, copy=False))
    clipped = int(np.count_nonzero((values < INT16.min) | (values > INT16.max)))
    return np.clip(values, INT16.min, INT16.max).astype(np.int16), clipped


def report_clipped(problems: ProblemLog, where: str | Path, clipped: int, scan_id: str | None = None) -> None:
    """One warning for a scan whose ``clipped`` voxels fell outside the int16 range (nothing when none did)."""
    if clipped:
        problems.report(
            where, f"{clipped} voxel(s) outside the int16 HU range were clipped", scan_id=scan_id, severity="warning"
        )


def to_int16_hu(values: np.ndarray, where: str | Path, problems: ProblemLog, scan_id: str | None = None) -> np.ndarray:
    """A whole volume as int16 HU (:func:`int16_hu`), its clipping reported to ``problems``."""
    hu, clipped = int16_hu(values)
    report_clipped(problems, where, clipped, scan_id)
    return hu
