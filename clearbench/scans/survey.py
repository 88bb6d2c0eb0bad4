"""A survey of a dataset: every scan decoded once, with its geometry, labels, annotations and problems.

This is what ``clearbench scans`` shows, as a Python API: run it before embedding a cohort to see what
will be skipped and why. The JSON form of a :class:`ScanSummary` is a stable contract for scripts; its
keys are exactly :data:`SUMMARY_KEYS`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from clearbench.errors import InputError
from clearbench.problems import Problem
from clearbench.scans.base import DatasetReader, ScanRecord
from clearbench.scans.scan import Scan

SUMMARY_KEYS = ("scan_id", "patient_id", "n_slices", "shape", "spacing", "labels", "annotations", "problems")


@dataclass
class ScanSummary:
    """One scan as surveyed; geometry is ``None`` when the scan could not be loaded."""

    record: ScanRecord
    scan: Scan | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def loaded(self) -> bool:
        return self.scan is not None

    def annotations(self) -> list[dict[str, Any]]:
        if self.scan is None:
            return []
        return [
            {"slice_idx": les.slice_idx, "box": [float(v) for v in les.box], "type": les.type}
            for les in self.scan.lesions
        ]

    def to_json(self) -> dict[str, Any]:
        """The stable JSON object of ``clearbench scans --json``: exactly the keys in :data:`SUMMARY_KEYS`."""
        scan = self.scan
        return {
            "scan_id": self.record.scan_id,
            "patient_id": self.record.patient_id,
            "n_slices": scan.n_slices if scan is not None else None,
            "shape": list(scan.shape) if scan is not None else None,
            "spacing": [float(s) for s in scan.spacing] if scan is not None else None,
            "labels": dict(self.record.labels),
            "annotations": self.annotations(),
            "problems": [p.to_dict() for p in self.problems],
        }


def survey(reader: DatasetReader, limit: int | None = None) -> Iterator[ScanSummary]:
    """Load the dataset's scans one at a time (the first ``limit`` by scan id) and summarise each.

    A scan that cannot be loaded is reported to ``reader.problems`` and still summarised, without geometry,
    as is a scan the index found unusable; with a strict problem log the first error raises instead.
    """
    unreadable = {r.scan_id for r in reader.unreadable()}
    found = sorted([*reader.records(), *reader.unreadable()], key=lambda r: r.scan_id)
    for record in found if limit is None else found[:limit]:
        if record.scan_id in unreadable:
            yield ScanSummary(record, None, reader.problems.for_scan(record.scan_id))
            continue
        try:
            scan: Scan | None = reader.load(record)
        except InputError as exc:
            reader.problems.report(exc.path, exc.reason, scan_id=record.scan_id)
            scan = None
        yield ScanSummary(record, scan, reader.problems.for_scan(record.scan_id))
