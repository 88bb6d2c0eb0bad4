"""The progress of an embedding run: scans done out of the to-do list, slices per second, and ETA."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from clearbench.progress import LoggedProgress


class EmbedProgress:
    """A rich bar on stderr (rank 0), plain lines when stderr is not a terminal; a no-op when disabled,
    so the pipeline never checks."""

    def __init__(self, table: str, n_scans: int, enabled: bool = True) -> None:
        console = Console(stderr=True)
        self.enabled = enabled and n_scans > 0
        self._slices = 0
        self._start = time.perf_counter()
        self._progress = LoggedProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("scans"),
            TextColumn("{task.fields[rate]:>16}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.enabled,
        )
        self._task = self._progress.add_task(f"embed {escape(table)}", total=n_scans, rate="")

    def __enter__(self) -> EmbedProgress:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def slices(self, n: int) -> None:
        self._slices += n
        rate = self._slices / max(time.perf_counter() - self._start, 1e-9)
        self._progress.update(self._task, rate=f"{rate:,.1f} slices/s")

    def scan_done(self) -> None:
        self._progress.advance(self._task)
