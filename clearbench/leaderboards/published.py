"""The CLEAR paper's own numbers (Tables 1-3, Supplementary Tables 1-4), read from ``leaderboards/published``.

Each CSV is one table of the paper in long form: ``source`` (the table's number), ``task``, ``metric``,
``encoder`` (the paper's row name), ``card`` (the clearbench encoder card with that ``paper_name``),
``label`` (the task card's label name, or ``average``), ``paper_column`` (the column as the paper
prints it), ``mean`` and ``std`` (percent, mean and standard deviation over five folds). Transcription
notes, including the cells whose OCR text was damaged, are in that folder's README.

Table 3 (task 3, one label) has no average column: the average of a one-label task is its label.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from clearbench.errors import InputError

AVERAGE = "average"
_COLUMNS = ("source", "task", "metric", "encoder", "card", "label", "paper_column", "mean", "std")


@dataclass
class PublishedRow:
    """One encoder of one published table: ``values[label] = (mean, std)`` in percent."""

    source: str
    task: str
    metric: str
    encoder: str
    card: str | None
    values: dict[str, tuple[float, float]] = field(default_factory=dict)


def published_dir() -> Path:
    """``leaderboards/published`` of the repository, shipped in the wheel as ``clearbench/_cards/leaderboards``."""
    return Path(str(files("clearbench") / "_cards" / "leaderboards" / "published"))


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(path, f"not a published-table CSV: missing column(s) {', '.join(missing)}")
        return list(reader)


def load_published(folder: Path | None = None) -> list[PublishedRow]:
    """Every published row of every table, in the paper's row order."""
    folder = folder or published_dir()
    rows: dict[tuple[str, str, str, str], PublishedRow] = {}
    for path in sorted(folder.glob("*.csv")):
        for line_no, r in enumerate(_read(path), start=2):
            try:
                mean, std = float(r["mean"]), float(r["std"])
            except ValueError:
                raise InputError(
                    path, f"line {line_no}: mean '{r['mean']}' or std '{r['std']}' is not a number"
                ) from None
            key = (r["source"], r["task"], r["metric"], r["encoder"])
            row = rows.setdefault(
                key, PublishedRow(r["source"], r["task"], r["metric"], r["encoder"], r["card"] or None)
            )
            row.values[r["label"]] = (mean, std)
    return list(rows.values())


def published_rows(task: str, metric: str, labels: list[str], folder: Path | None = None) -> list[PublishedRow]:
    """The published rows of ``task`` and ``metric``, with ``average`` filled in for a one-label task."""
    out = [r for r in load_published(folder) if r.task == task and r.metric == metric]
    for r in out:
        if AVERAGE not in r.values and len(labels) == 1 and labels[0] in r.values:
            r.values[AVERAGE] = r.values[labels[0]]
    return out
