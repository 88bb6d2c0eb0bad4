"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The bytes go to a temporary file in the target's own directory (a rename is atomic only within one file
system), named after this process (two processes writing the same target, such as the ranks of a
torchrun job or two commands sharing a home, never write into each other's temporary file), are flushed
and fsynced (so a crash right after the rename cannot leave an empty file under the final name), and
then renamed over the target. A write that fails removes its temporary file and leaves the target as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def temporary_name(path: Path) -> Path:
    """This process's temporary file for ``path``, beside it."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


@contextmanager
def open_atomic(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` when the ``with`` block ends without an exception."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with tmp.open("wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8)."""
    with open_atomic(path) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
