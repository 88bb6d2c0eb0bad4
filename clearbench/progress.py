"""Progress that shows in logs too: a rich bar on a terminal, a plain line every few seconds elsewhere.

A rich bar draws itself by rewriting the terminal; written to a file (a log, CI, ``nohup``) it shows
nothing until the end, so a long embedding or pretraining run looks hung. :class:`LoggedProgress` is a
``rich.progress.Progress`` that, when its console is not a terminal, turns the bar off and prints one
plain line per visible task every :func:`plain_interval` seconds, and a last line per task when it stops.
A command that ends within the first interval prints none, so short commands keep their logs clean.
Every long command of the CLI reports this way without checking where it writes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from rich.console import Console
from rich.errors import MarkupError
from rich.progress import Progress, ProgressColumn, Task, TaskID
from rich.text import Text

INTERVAL_ENV = "CLEARBENCH_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 5.0


def plain_interval() -> float:
    """Seconds between plain progress lines: ``CLEARBENCH_PROGRESS_SECONDS``, else 5."""
    value = os.environ.get(INTERVAL_ENV)
    try:
        return max(0.0, float(value)) if value else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _plain(text: str) -> str:
    """Markup as the bar would show it, without styles; text that is not valid markup is kept as it is."""
    try:
        return Text.from_markup(text).plain
    except MarkupError:
        return text


def _field(name: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{name} {value:,.1f}"
    return _plain(value) if isinstance(value, str) else f"{name} {value}"


def plain_line(task: Task) -> str:
    """One task as a line of plain text: ``description 12/40 (30%) 0:00:12 elapsed, ETA 0:00:28 info``."""
    parts = [_plain(task.description).strip()]
    if task.total:
        parts.append(f"{task.completed:g}/{task.total:g} ({100 * task.completed / task.total:.0f}%)")
    else:
        parts.append(f"{task.completed:g}")
    elapsed = task.finished_time if task.finished else task.elapsed  # a finished task's clock stops, as on the bar
    timing = f"{_clock(elapsed)} elapsed"
    if not task.finished and task.time_remaining is not None:
        timing += f", ETA {_clock(task.time_remaining)}"
    parts.append(timing)
    parts.extend(text for text in (_field(k, v) for k, v in task.fields.items()) if text)
    return "  ".join(p for p in parts if p)


class LoggedProgress(Progress):
    """A rich ``Progress`` that prints plain lines instead of a bar when its console is not a terminal.

    ``every`` overrides :func:`plain_interval`. ``disable=True`` silences both forms (``--json`` output,
    ranks other than 0). Lines are printed from :meth:`update` and :meth:`advance`, so a loop that
    reports after each step gets a line once ``every`` seconds have passed, and never more often.
    """

    def __init__(
        self,
        *columns: str | ProgressColumn,
        console: Console | None = None,
        disable: bool = False,
        every: float | None = None,
        **options: Any,
    ) -> None:
        console = console if console is not None else Console(stderr=True)
        self.plain = not disable and not console.is_terminal
        super().__init__(*columns, console=console, disable=disable or self.plain, **options)
        self.every = plain_interval() if every is None else every
        self._last_print = time.monotonic()
        self._printed: dict[TaskID, str] = {}

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._log()

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log()

    def stop(self) -> None:
        self._log(final=True)
        super().stop()

    def _log(self, final: bool = False) -> None:
        if not self.plain:
            return
        now = time.monotonic()
        if (final and not self._printed) or (not final and now - self._last_print < self.every):
            return
        self._last_print = now
        for task in self.tasks:
            if not task.visible:
                continue
            line = plain_line(task)
            if self._printed.get(task.id) == line:  # a finished task is printed once
                continue
            self._printed[task.id] = line
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
