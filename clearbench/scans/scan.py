"""The ``Scan``: one CT volume in Hounsfield units, with its identity and annotations.

Every reader returns this one type, so that everything downstream (windows, encoders, the store,
explanations) can ignore where a scan came from. ``scan_id`` and ``patient_id`` are separate on purpose:
splits are grouped by patient, bags are keyed by scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# DeepLesion's coarse lesion types, 1-based as in DL_info.csv.
LESION_TYPES: dict[int, str] = {
    1: "bone",
    2: "abdomen",
    3: "mediastinum",
    4: "liver",
    5: "lung",
    6: "kidney",
    7: "soft_tissue",
    8: "pelvis",
}


@dataclass(frozen=True)
class Lesion:
    """An annotated lesion, in the Scan's own 0-based coordinates.

    ``slice_idx`` indexes the Scan's z axis; ``box`` is ``(x1, y1, x2, y2)`` in 0-based pixels of that
    slice. ``type`` is a coarse type name from :data:`LESION_TYPES`, or ``None`` when unlabelled.
    """

    slice_idx: int
    box: tuple[float, float, float, float]
    type: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class Scan:
    """A CT volume: int16 HU ``[Z, Y, X]`` in increasing z order, with spacing ``(z, y, x)`` in mm.

    ``z_mm`` gives the position of every slice along z; it need not be evenly spaced (DeepLesion folders
    hold separate runs of slices). ``labels`` are filled by the task, not by the reader.
    """

    scan_id: str
    patient_id: str
    hu: np.ndarray
    spacing: tuple[float, float, float]
    z_mm: np.ndarray | None = None
    lesions: list[Lesion] = field(default_factory=list)
    labels: dict[str, float | None] = field(default_factory=dict)
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"scan {self.scan_id}: HU volume must be [Z, Y, X], got shape {self.hu.shape}")
        if self.hu.dtype != np.int16:
            raise ValueError(f"scan {self.scan_id}: HU volume must be int16, got {self.hu.dtype}")
        if self.z_mm is None:
            self.z_mm = np.arange(self.hu.shape[0], dtype=np.float64) * float(self.spacing[0])
        self.z_mm = np.asarray(self.z_mm, dtype=np.float64)
        if self.z_mm.shape != (self.hu.shape[0],):
            raise ValueError(
                f"scan {self.scan_id}: z_mm has {self.z_mm.shape[0]} entries for {self.hu.shape[0]} slices"
            )
        if self.z_mm.size > 1 and not np.all(np.diff(self.z_mm) > 0):
            raise ValueError(f"scan {self.scan_id}: slices are not in strictly increasing z order")

    @property
    def n_slices(self) -> int:
        return int(self.hu.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.hu.shape
        return int(z), int(y), int(x)

    @property
    def key_slices(self) -> list[int]:
        """The 0-based indices of the slices that carry an annotated lesion, sorted and unique."""
        return sorted({lesion.slice_idx for lesion in self.lesions})
