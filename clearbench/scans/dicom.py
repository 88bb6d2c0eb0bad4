"""``dicom``: the user's own cohort as one folder of DICOM files per scan, plus ``labels.csv``.

Layout::

    ROOT/
      labels.csv            scan_id,patient_id,<label columns...>
      case001/              any files and subfolders; the one axial CT series inside is the scan
      case002/
      ...

A scan folder may hold other objects (RTSTRUCT, SEG, a scout series): they are recognised by their
tags and left out. Two axial CT series in one scan folder are an error for that scan, because which one
was meant is a guess; split them into two scan folders.
"""

from __future__ import annotations

from pathlib import Path

from clearbench.scans.base import ScanRecord
from clearbench.scans.cohort import CohortReader
from clearbench.scans.dicom_series import read_ct_series
from clearbench.scans.scan import Scan
from clearbench.scans.walk import has_files, subfolders


class DicomCohortReader(CohortReader):
    name = "dicom"
    summary = "your own cohort: one folder of DICOM files per scan under the root, plus labels.csv"

    def _find_scans(self) -> dict[str, Path]:
        scans: dict[str, Path] = {}
        for folder in subfolders(self.root, self.problems):
            if has_files(folder):
                scans[folder.name] = folder
            else:
                self._skip(folder.name, folder, "empty folder: no DICOM files; skipped")
        return scans

    def load(self, record: ScanRecord) -> Scan:
        scan = read_ct_series(
            record.source,
            scan_id=record.scan_id,
            patient_id=record.patient_id,
            problems=self.problems,
            recursive=True,
        )
        scan.split = record.split
        return scan
