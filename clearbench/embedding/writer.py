"""The background writer: commits finished scans to the store while the encoder keeps running.

A scan is handed over only when all its rows are embedded. The writer groups whatever has finished into one
``merge_insert`` (whole scans per commit) at most every ``commit_seconds``, so a fast GPU does not make
thousands of tiny versions, and a killed run loses at most the scans of the last few seconds.
"""

from __future__ import annotations

import queue
import threading
import time

from clearbench.store.embeddings import EmbeddingTable, ScanEmbeddings

_STOP = object()


class StoreWriter:
    """Commits :class:`ScanEmbeddings` in groups from a thread; errors surface on the next call."""

    def __init__(
        self,
        table: EmbeddingTable,
        commit_seconds: float = 5.0,
        max_rows: int = 65536,
    ) -> None:
        self.table = table
        self.commit_seconds = commit_seconds
        self.max_rows = max_rows
        self.rows_written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=256)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="clearbench-store-writer", daemon=True)
        self._thread.start()

    def put(self, scan: ScanEmbeddings) -> None:
        self._raise_if_failed()
        self._queue.put(scan)

    def close(self) -> None:
        """Commit everything handed over so far and stop; re-raises a failed commit."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        pending: list[ScanEmbeddings] = []
        last_commit = time.monotonic()
        stop = False
        try:
            while not stop:
                timeout = max(0.0, self.commit_seconds - (time.monotonic() - last_commit)) if pending else None
                try:
                    item = self._queue.get(timeout=timeout)
                    if item is _STOP:
                        stop = True
                    else:
                        pending.append(item)
                except queue.Empty:
                    pass
                # Take whatever else is already waiting, so a group holds every scan that finished meanwhile.
                while not stop:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                    else:
                        pending.append(item)
                rows = sum(s.n_rows for s in pending)
                due = time.monotonic() - last_commit >= self.commit_seconds or rows >= self.max_rows
                if pending and (stop or due):
                    self._commit(pending)
                    pending = []
                    last_commit = time.monotonic()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self._error = exc
            # Keep draining until close() so that the producer never blocks on a full queue after a failure.
            while not stop:
                stop = self._queue.get() is _STOP

    def _commit(self, scans: list[ScanEmbeddings]) -> None:
        self.rows_written += self.table.write(scans)
