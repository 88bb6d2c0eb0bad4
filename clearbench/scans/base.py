"""What every dataset reader provides: a cheap index of scans, and a loader for one scan.

The index (:meth:`DatasetReader.records`) reads only metadata, so that resuming an embedding run or
listing a cohort never decodes pixels it does not need. :meth:`DatasetReader.load` decodes one scan and
raises :class:`~clearbench.errors.InputError` for a bad one; :meth:`DatasetReader.scans` turns those
into reported problems and goes on with the rest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from clearbench.errors import InputError
from clearbench.problems import ProblemLog
from clearbench.scans.scan import Scan


@dataclass
class ScanRecord:
    """One scan as the index knows it, before any pixel is read."""

    scan_id: str
    patient_id: str
    source: Path
    split: str | None = None
    labels: dict[str, float | None] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class DatasetReader(ABC):
    """A dataset on disk in one known layout. Subclasses set ``name`` and ``summary``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # The scan-level label columns this dataset provides (tasks choose among them).
    label_names: ClassVar[tuple[str, ...]] = ()
    # The HU windows `clearbench embed` uses when none are asked for: those of the dataset's paper tasks
    # (DeepLesion's task 1 reads abdomen and lung; tasks 2 and 3 lung only). Empty: the user must choose.
    default_windows: ClassVar[tuple[str, ...]] = ()

    def __init__(self, root: str | Path, problems: ProblemLog | None = None) -> None:
        self.root = Path(root)
        self.problems = problems if problems is not None else ProblemLog()
        self._records: list[ScanRecord] | None = None
        self._unreadable: list[ScanRecord] = []

    def records(self) -> list[ScanRecord]:
        """The scans found under the root, sorted by ``scan_id``; indexing problems are reported once."""
        if self._records is None:
            self._records = sorted(self._index(), key=lambda r: r.scan_id)
        return self._records

    def unreadable(self) -> list[ScanRecord]:
        """Scans the index found but cannot use (a corrupt file, an empty folder), sorted by ``scan_id``.

        They are not in :meth:`records` (nothing can be loaded from them), but a survey lists them, so that
        every scan on disk has its line and its problems.
        """
        self.records()
        return sorted(self._unreadable, key=lambda r: r.scan_id)

    def _skip(self, scan_id: str, source: str | Path, reason: str, patient_id: str | None = None) -> None:
        """Report a scan the index found but cannot use, and keep it for :meth:`unreadable`."""
        self.problems.report(source, reason, scan_id=scan_id)
        self._unreadable.append(ScanRecord(scan_id=scan_id, patient_id=patient_id or scan_id, source=Path(source)))

    def record(self, scan_id: str) -> ScanRecord:
        for rec in self.records():
            if rec.scan_id == scan_id:
                return rec
        raise KeyError(f"{self.name}: no scan '{scan_id}' under {self.root}")

    @abstractmethod
    def _index(self) -> Iterable[ScanRecord]:
        """Find the scans and their labels from metadata only."""

    @abstractmethod
    def load(self, record: ScanRecord) -> Scan:
        """Decode one scan; raise InputError naming the file when it cannot be read."""

    def scans(self, records: Iterable[ScanRecord] | None = None) -> Iterator[Scan]:
        """Load scans one by one; a bad scan is reported (or raised when strict) and skipped."""
        for rec in self.records() if records is None else records:
            try:
                yield self.load(rec)
            except InputError as exc:
                self.problems.report(exc.path, exc.reason, scan_id=rec.scan_id)
