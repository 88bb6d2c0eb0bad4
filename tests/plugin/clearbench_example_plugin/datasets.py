"""An example third-party dataset: one ``{scan_id}.npy`` int16 HU volume per scan plus ``labels.csv``.

It shows the whole contract a plugin reader fulfils: a cheap index from metadata, and a ``load`` that
raises :class:`~clearbench.errors.InputError` for a bad file so the rest of the cohort goes on.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable

import numpy as np

from clearbench.errors import InputError
from clearbench.scans.base import DatasetReader, ScanRecord
from clearbench.scans.scan import Scan


class ExampleNpyReader(DatasetReader):
    """Folder of ``.npy`` volumes ([Z, Y, X] int16 HU, increasing z, 1 mm) and ``labels.csv``."""

    name = "example-npy"
    summary = "Example plugin dataset: .npy volumes plus labels.csv (scan_id, patient_id, finding)"
    label_names = ("finding",)

    def _index(self) -> Iterable[ScanRecord]:
        with (self.root / "labels.csv").open(newline="") as fh:
            rows = {row["scan_id"]: row for row in csv.DictReader(fh)}
        for path in sorted(self.root.glob("*.npy")):
            row = rows.get(path.stem)
            if row is None:
                self.problems.report(path, "no row in labels.csv", scan_id=path.stem)
                continue
            yield ScanRecord(path.stem, row["patient_id"], path, labels={"finding": float(row["finding"])})

    def load(self, record: ScanRecord) -> Scan:
        try:
            hu = np.load(record.source)
        except (OSError, ValueError) as exc:
            raise InputError(record.source, f"cannot read .npy: {exc}") from None
        return Scan(record.scan_id, record.patient_id, hu.astype(np.int16), (1.0, 1.0, 1.0))
