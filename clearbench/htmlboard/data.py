"""Leaderboard DataFrames to the JSON the board page embeds: plain rows, marks and plot links; no I/O.

Every row keeps the leaderboard's columns as they are (values in percent, nulls as null, times as ISO
text), so the page shows exactly the numbers ``clearbench.leaderboard`` returns. The cells to set in bold
or underline come from the leaderboard's own ``marks``, so the page and the terminal agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import polars as pl

Marks = Callable[[pl.DataFrame, Sequence[str]], dict[tuple[int, str], str]]


@dataclass(frozen=True)
class PlotLink:
    """One attention plot of a run, by its path relative to the page."""

    scan: str
    fold: int
    href: str
    hit: float | None
    chance: float | None


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def frame_rows(df: pl.DataFrame, value_columns: Sequence[str], marks: Marks) -> list[dict[str, Any]]:
    """The rows of one leaderboard as JSON objects, each with ``_marks`` ({column: "best" | "second"})."""
    marked = marks(df, value_columns)
    rows = []
    for i, row in enumerate(df.iter_rows(named=True)):
        out = {k: _plain(v) for k, v in row.items()}
        out["_marks"] = {col: mark for (j, col), mark in marked.items() if j == i}
        rows.append(out)
    return rows


def task_entry(
    name: str,
    title: str,
    labels: Sequence[str],
    frames: Mapping[str, pl.DataFrame],
    marks: Marks,
    plots: Mapping[str, Sequence[PlotLink]] | None = None,
) -> dict[str, Any]:
    """One tab of the board: the task's leaderboard for every metric, and the plots of each run id."""
    values = [*labels, "average"]
    boards = {metric: frame_rows(df, values, marks) for metric, df in frames.items()}
    has_hit = any(r.get("hit_rate") is not None for rows in boards.values() for r in rows)
    return {
        "name": name,
        "title": title,
        "labels": list(labels),
        "boards": boards,
        "has_hit_rate": has_hit,
        "plots": {run: [p.__dict__ for p in links] for run, links in (plots or {}).items()},
    }


def board_data(tasks: Sequence[dict[str, Any]], metrics: Sequence[str], *, title: str, subtitle: str) -> dict[str, Any]:
    return {"title": title, "subtitle": subtitle, "metrics": list(metrics), "tasks": list(tasks)}
