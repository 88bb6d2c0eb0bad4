"""The source signature of a scan: which files it was read from, with their sizes and modification times.

An embedding table keeps each scan's source signature next to its vectors. A later run that finds another
signature for the same scan id knows the vectors were made from other files (the scan was re-exported, or
this is another cohort whose ids happen to collide), instead of counting the scan as already stored.
Sizes and times, not contents: hashing a cohort of CTs would cost as much as reading it.

Paths are taken relative to the scan's own source, plus the source's place under the dataset root, so a
cohort moved as a whole (``mv``, ``rsync -a``) keeps its signatures.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from clearbench.scans.base import ScanRecord

SIGNATURE_CHARS = 16


def source_signature(record: ScanRecord, root: str | Path) -> str:
    """A short hex digest of the scan's source path under ``root`` and every file under it (size, mtime)."""
    source = Path(record.source)
    try:
        place = os.path.relpath(source, root)
    except ValueError:  # another drive on Windows
        place = source.name
    digest = hashlib.sha256(place.encode())
    for rel, size, mtime_ns in _files(source):
        digest.update(f"\n{rel}\t{size}\t{mtime_ns}".encode())
    return digest.hexdigest()[:SIGNATURE_CHARS]


def _files(source: Path) -> list[tuple[str, int, int]]:
    """(path relative to source, size, mtime_ns) of the source file, or of every file under the source folder."""
    try:
        if not source.is_dir():
            st = source.stat()
            return [(".", st.st_size, st.st_mtime_ns)]
    except OSError:
        return [(".", -1, -1)]
    found = []
    for folder, dirs, files in os.walk(source):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder, name)
            try:
                st = path.stat()
            except OSError:
                continue
            found.append((path.relative_to(source).as_posix(), st.st_size, st.st_mtime_ns))
    return found
