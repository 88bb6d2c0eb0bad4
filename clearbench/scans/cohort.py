"""Bring-your-own cohorts: scans on disk plus a ``labels.csv`` that says who each scan belongs to.

The labels CSV sits at the dataset root and has one row per scan::

    scan_id,patient_id,label_a,label_b[,split]
    case001,P001,1,0
    case002,P001,0,NA

``scan_id`` names the scan on disk (a series folder for ``dicom``, a file stem for ``nifti``),
``patient_id`` is the real patient so that splits never put one patient on both sides, and every other
column is a numeric scan-level label (empty or ``NA`` = unknown). An optional ``split`` column is kept as
the record's split instead of a label. The CSV and the files on disk are matched both ways and every
mismatch is reported: a row without a scan, a scan without a row.
"""

from __future__ import annotations

import csv
import math
from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from clearbench.problems import ProblemLog
from clearbench.scans.base import DatasetReader, ScanRecord

LABELS_FILE = "labels.csv"
REQUIRED_COLUMNS = ("scan_id", "patient_id")
SPLIT_COLUMN = "split"
MISSING_VALUES = frozenset({"", "na", "nan", "n/a", "none", "null"})


@dataclass
class LabelsRow:
    patient_id: str | None
    split: str | None
    labels: dict[str, float | None]
    line: int


@dataclass
class LabelsTable:
    """The parsed labels CSV: label column names in file order, and one row per scan id."""

    path: Path
    label_names: tuple[str, ...] = ()
    rows: dict[str, LabelsRow] = field(default_factory=dict)


def parse_label(value: str) -> float:
    """A label cell as a float; raises ValueError for text or non-finite numbers."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def read_labels_csv(path: Path, problems: ProblemLog) -> LabelsTable | None:
    """Parse ``labels.csv``; problems go to ``problems``; ``None`` when the file cannot be used at all."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            body = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.report(path, f"cannot read the labels CSV ({exc})")
        return None

    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if "scan_id" in missing:
        problems.report(
            path,
            f"missing required column(s) {', '.join(missing)} (found: {', '.join(header) or 'no header'}); "
            "the CSV needs scan_id, patient_id and one column per label",
        )
        return None
    if missing:
        problems.report(
            path,
            "missing required column patient_id: patient-grouped splits need it; every scan is taken as its own patient",
        )
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        problems.report(path, f"duplicate column(s) {', '.join(duplicated)}; the first of each is used")

    reserved = {*REQUIRED_COLUMNS, SPLIT_COLUMN}
    label_names = tuple(dict.fromkeys(h for h in header if h and h not in reserved))
    col = {name: header.index(name) for name in header}
    table = LabelsTable(path=path, label_names=label_names)

    def cell(row: list[str], name: str) -> str:
        i = col.get(name)
        return row[i].strip() if i is not None and i < len(row) else ""

    for line, row in enumerate(body, start=2):
        if not any(c.strip() for c in row):
            continue
        scan_id = cell(row, "scan_id")
        if not scan_id:
            problems.report(path, f"line {line}: empty scan_id; row ignored")
            continue
        if scan_id in table.rows:
            problems.report(
                path,
                f"line {line}: scan '{scan_id}' already has a row (line {table.rows[scan_id].line}); row ignored",
                scan_id=scan_id,
            )
            continue
        labels: dict[str, float | None] = {}
        for name in label_names:
            raw = cell(row, name)
            if raw.lower() in MISSING_VALUES:
                labels[name] = None
                continue
            try:
                labels[name] = parse_label(raw)
            except ValueError:
                labels[name] = None
                problems.report(
                    path,
                    f"line {line}: label '{name}' of scan '{scan_id}' is '{raw}', not a number; taken as unknown",
                    scan_id=scan_id,
                )
        table.rows[scan_id] = LabelsRow(
            patient_id=cell(row, "patient_id") or None,
            split=cell(row, SPLIT_COLUMN) or None,
            labels=labels,
            line=line,
        )
    return table


class CohortReader(DatasetReader):
    """A user's cohort: scans found by :meth:`_find_scans` joined with the root's ``labels.csv``."""

    def __init__(self, root: str | Path, problems: ProblemLog | None = None) -> None:
        super().__init__(root, problems)
        self._label_names: tuple[str, ...] = ()

    @property
    def label_names(self) -> tuple[str, ...]:  # type: ignore[override]  # read from labels.csv, not a class constant
        """The label columns of this cohort's ``labels.csv``, in file order."""
        self.records()
        return self._label_names

    @abstractmethod
    def _find_scans(self) -> dict[str, Path]:
        """Every scan under the root as ``scan_id -> path``; report unusable entries to ``self.problems``."""

    def _index(self) -> Iterable[ScanRecord]:
        sources = self._find_scans()
        if not sources:
            self.problems.report(self.root, f"no scans found ({self.summary})")
        csv_path = self.root / LABELS_FILE
        table: LabelsTable | None = None
        if csv_path.is_file():
            table = read_labels_csv(csv_path, self.problems)
        else:
            self.problems.report(
                csv_path,
                "no labels CSV (columns scan_id, patient_id, then one column per label); scans are listed without labels",
            )
        rows = table.rows if table is not None else {}
        self._label_names = table.label_names if table is not None else ()

        for scan_id, row in rows.items():
            if scan_id not in sources:
                self.problems.report(
                    csv_path,
                    f"line {row.line}: scan '{scan_id}' has a labels row but no images under {self.root}",
                    scan_id=scan_id,
                )
        for scan_id in sorted(sources):
            found = rows.get(scan_id)
            if found is None and table is not None:
                self.problems.report(
                    sources[scan_id],
                    f"scan '{scan_id}' has no row in {LABELS_FILE}: its labels are unknown and its patient id is taken to be the scan id",
                    scan_id=scan_id,
                )
            labels = found.labels if found is not None else {name: None for name in self._label_names}
            yield ScanRecord(
                scan_id=scan_id,
                patient_id=(found.patient_id if found is not None else None) or scan_id,
                source=sources[scan_id],
                split=found.split if found is not None else None,
                labels=dict(labels),
                meta={"labels_line": found.line} if found is not None else {},
            )
