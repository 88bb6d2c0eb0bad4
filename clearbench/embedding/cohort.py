"""A table belongs to one cohort: check a dataset against the table it is about to be embedded into.

Scan ids are only unique within a cohort. Two synthetic cohorts, or two exports of one dataset, reuse
them; without a check a second cohort's scans would count as "already stored" and silently take the first
cohort's vectors. The table records the root it was made from (provenance ``dataset_root``) and each
scan's source signature (:mod:`clearbench.scans.signature`); this module compares them with the cohort
at hand, before anything is written:

- another root, and none of the scans the two share (or no scan at all) has the same source files:
  another cohort, refused with the fix (``--table NAME`` or ``--overwrite``);
- another root, but scans with the same source files: the same cohort, moved; it is appended to;
- a shared scan whose source files changed: reported, and embedded again (its old rows are deleted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clearbench.errors import ClearbenchError
from clearbench.scans.base import DatasetReader, ScanRecord
from clearbench.scans.signature import source_signature
from clearbench.store.embeddings import EmbeddingTable


class CohortMismatchError(ClearbenchError):
    """The table holds the scans of another cohort than the one being embedded."""


@dataclass
class CohortCheck:
    """What the table already holds of this cohort: scans stored from the same files, and changed ones."""

    unchanged: set[str] = field(default_factory=set)
    changed: list[ScanRecord] = field(default_factory=list)


def check_cohort(
    table: EmbeddingTable, recorded_root: str | None, reader: DatasetReader, records: list[ScanRecord]
) -> CohortCheck:
    """Compare ``records`` of ``reader`` with what ``table`` holds; raise :class:`CohortMismatchError` for another cohort.

    Scans stored without a signature (a table made before clearbench recorded them) count as unchanged
    when the root is the same, since nothing says otherwise.
    """
    stored = table.stored_sources()
    check = CohortCheck()
    if not stored:
        return check
    shared = [rec for rec in records if rec.scan_id in stored]
    known = [rec for rec in shared if stored[rec.scan_id] is not None]
    for rec in known:
        if stored[rec.scan_id] == source_signature(rec, reader.root):
            check.unchanged.add(rec.scan_id)
        else:
            check.changed.append(rec)
    check.unchanged |= {rec.scan_id for rec in shared if stored[rec.scan_id] is None}

    root = str(Path(reader.root).resolve())
    if recorded_root is None or recorded_root == root or (known and len(check.changed) < len(known)):
        return check
    if not shared:
        reason = f"none of its {len(stored)} stored scan(s) is among the {len(records)} of this cohort"
    elif not known:
        reason = "it was made before clearbench recorded each scan's source files, so the two cannot be matched"
    else:
        reason = f"all {len(known)} scan(s) the two share were read from other files"
    raise CohortMismatchError(
        f"table '{table.name}' holds another cohort: it was made from {recorded_root}, this is {root} ({reason}); "
        f"embed this cohort into a new table with --table NAME, or replace '{table.name}' with --overwrite"
    )
