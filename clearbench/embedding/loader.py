"""Background decoding: scans are read by a few threads, ahead of the encoder, and handed over in order.

At most ``depth`` scans are in flight or waiting, which bounds memory (a RAD-ChestCT volume is ~140 MB of
int16). Decoding is PNG/DICOM/npz reading and numpy work, which release the GIL, so threads are enough and
nothing has to be pickled. A scan that cannot be read comes back as a :class:`Failed` entry, so that the
main thread decides between reporting it and stopping (``--strict``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from clearbench.errors import InputError
from clearbench.scans.base import ScanRecord

T = TypeVar("T")

# What a reader may raise for one bad file: its own InputError, or the decoder's OSError/ValueError.
SCAN_ERRORS = (InputError, OSError, ValueError)


@dataclass
class Failed:
    """A scan that could not be prepared: the file and the reason, for a one-line report."""

    record: ScanRecord
    path: str
    reason: str


def _guarded(fn: Callable[[ScanRecord], T], record: ScanRecord) -> T | Failed:
    try:
        return fn(record)
    except InputError as exc:
        return Failed(record, exc.path, exc.reason)
    except SCAN_ERRORS as exc:
        return Failed(record, str(record.source), f"{type(exc).__name__}: {exc}")


class Prefetcher(Generic[T]):
    """Runs ``fn`` on each record in ``workers`` threads, at most ``depth`` ahead; yields results in order."""

    def __init__(self, fn: Callable[[ScanRecord], T], records: Iterable[ScanRecord], workers: int, depth: int) -> None:
        self._fn = fn
        self._records = iter(records)
        self._depth = max(1, depth)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="clearbench-load")
        self._inflight: deque[Future] = deque()

    def _fill(self) -> None:
        while len(self._inflight) < self._depth:
            record = next(self._records, None)
            if record is None:
                return
            self._inflight.append(self._pool.submit(_guarded, self._fn, record))

    def __iter__(self) -> Iterator[T | Failed]:
        self._fill()
        while self._inflight:
            result = self._inflight.popleft().result()
            self._fill()
            yield result

    def close(self) -> None:
        """Stop reading ahead; scans being decoded right now are finished and dropped."""
        for future in self._inflight:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
