"""Render leaderboards and overviews: a rich table for the terminal, Markdown, CSV, LaTeX and JSON.

The paper's view is shared by the terminal, Markdown and LaTeX: one row per encoder, ``mean ± std`` over
folds per label and for the average, the best cell of each column bold and the second underlined within
the ranked rows and within the published rows (never across them). CSV and JSON carry every column of
the DataFrame, for scripts. Text from the store or the published files is escaped for each format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import polars as pl
from rich.markup import escape
from rich.table import Table

from clearbench.errors import ClearbenchError
from clearbench.explaining.columns import HIT_CHANCE, HIT_RATE, HIT_RATE_STD
from clearbench.leaderboards.api import task_columns
from clearbench.leaderboards.table import APART, AVERAGE, PUBLISHED, RANKED, label_columns, marks

FORMATS = ("table", "md", "csv", "latex", "json")
HIT_HEADER = "hit % (chance)"


@dataclass
class Cell:
    text: str
    mark: str | None = None  # "best" (bold) or "second" (underlined)


@dataclass
class Grid:
    """What the paper-style renderers draw: a title, headers, rows of cells, where groups start, notes."""

    title: str
    headers: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    group_starts: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    right: set[int] = field(default_factory=set)  # columns aligned right


def is_overview(df: pl.DataFrame) -> bool:
    return "task" not in df.columns


def _num(x: Any) -> TypeGuard[float]:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _mean_std(mean: float | None, std: float | None) -> str:
    if not _num(mean):
        return "–"
    return f"{mean:.1f} ± {std:.1f}" if _num(std) else f"{mean:.1f}"


def _p(p: float | None) -> str:
    if not _num(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _hit(r: dict[str, Any]) -> str:
    if not _num(r.get(HIT_RATE)):
        return ""
    return f"{_mean_std(r[HIT_RATE], r[HIT_RATE_STD])} ({r[HIT_CHANCE]:.1f})"


def _leaderboard_grid(df: pl.DataFrame) -> Grid:
    labels = label_columns(df)
    values = [*labels, AVERAGE]
    task, metric = df["task"][0], df["metric"][0]
    splits = {s for s, g in zip(df["split_id"].to_list(), df["group"].to_list(), strict=True) if g == RANKED and s}
    on_split = f" (split {splits.pop()})" if len(splits) == 1 else ""
    hits = HIT_RATE in df.columns and df[HIT_RATE].is_not_null().any()
    grid = Grid(
        title=f"{task} · {metric.upper()} (%), test set{on_split}, mean ± std over folds",
        headers=[
            "#",
            "encoder",
            *labels,
            AVERAGE,
            "95% CI",
            "p",
            *([HIT_HEADER] if hits else []),
            "patients/scans",
            "folds",
            "run / source",
            "note",
        ],
        right={0, *range(2, len(values) + 6 + hits)},
    )
    marked = marks(df, values)
    previous = None
    for i, r in enumerate(df.iter_rows(named=True)):
        if r["group"] != previous:
            grid.group_starts.append(i)
            previous = r["group"]
        published = r["group"] == PUBLISHED
        ci = f"[{r['ci_low']:.1f}, {r['ci_high']:.1f}]" if _num(r["ci_low"]) else ""
        size = "" if published else f"{r['n_test_patients']}/{r['n_test_scans']}"
        notes = [f"apart: {r['reason']}"] if r["group"] == APART else []
        if r["n_missing"]:
            notes.append(f"{r['n_missing']} scan{'s' if r['n_missing'] != 1 else ''} of the split without embeddings")
        note = "; ".join(notes)
        grid.rows.append(
            [
                Cell(str(r["rank"]) if r["rank"] is not None else ""),
                Cell(r["encoder"]),
                *(Cell(_mean_std(r[c], r[f"{c} std"]), marked.get((i, c))) for c in values),
                Cell(ci),
                Cell(_p(r["p_value"])),
                *([Cell(_hit(r))] if hits else []),
                Cell(size),
                Cell("" if published else str(r["n_folds"])),
                Cell(f"published: {r['published_in']}" if published else r["run_id"]),
                Cell(note),
            ]
        )
    grid.notes = [
        "CI: patient-level bootstrap 95% interval of the average on the test predictions (seeded).",
        "p: paired bootstrap test of the average against the best ranked row, on the same test patients.",
    ]
    if PUBLISHED in df["group"].to_list():
        grid.notes.append(
            "Published rows are the CLEAR paper's numbers; they are never ranked against reproduced rows."
        )
    if hits:
        grid.notes.append(
            "hit %: attention within ±k slices of a key slice, mean ± std over folds (chance: uniform attention)."
        )
    return grid


def _overview_grid(df: pl.DataFrame) -> Grid:
    tasks = task_columns(df)
    grid = Grid(
        title=f"average {df['metric'][0].upper() if df.height else ''} (%) per task, mean ± std over folds",
        headers=["encoder", "source", *tasks],
        right=set(range(2, len(tasks) + 2)),
    )
    marked = marks(df, tasks, group_column="source")
    previous = None
    for i, r in enumerate(df.iter_rows(named=True)):
        if r["source"] != previous:
            grid.group_starts.append(i)
            previous = r["source"]
        cells = []
        for t in tasks:
            text = _mean_std(r[t], r[f"{t} std"])
            rank = r[f"{t} rank"]
            cells.append(Cell(text + (f" (#{rank})" if rank is not None else ""), marked.get((i, t))))
        grid.rows.append([Cell(r["encoder"]), Cell(r["source"]), *cells])
    grid.notes = ["(#k): rank on the task's board; rows without one are published or shown apart there."]
    return grid


def grid(df: pl.DataFrame) -> Grid:
    """The paper-style view of a leaderboard or an overview."""
    return _overview_grid(df) if is_overview(df) else _leaderboard_grid(df)


COMPACT = ("#", "encoder", AVERAGE, "95% CI", "p", HIT_HEADER, "patients/scans", "folds", "run / source", "note")


def _only(g: Grid, headers: Sequence[str]) -> Grid:
    """``g`` with only the columns named in ``headers``."""
    keep = [j for j, h in enumerate(g.headers) if h in headers]
    return Grid(
        g.title,
        [g.headers[j] for j in keep],
        [[row[j] for j in keep] for row in g.rows],
        g.group_starts,
        g.notes,
        {i for i, j in enumerate(keep) if j in g.right},
    )


# Columns a narrow terminal may lose, first to last, before the numbers wrap (they are never cut).
DROPPABLE = ("run / source", "note", "folds", "patients/scans", HIT_HEADER)


def to_rich(df: pl.DataFrame, compact: bool = False, drop: Collection[str] = ()) -> Table:
    """A rich table; every piece of text is escaped before rich reads markup in it.

    ``compact`` keeps the average and the statistics and drops the per-label columns (``clearbench run``
    has just printed those per encoder). ``drop`` names further columns to leave out, so that a caller can
    fit the table to a narrow terminal; what still does not fit wraps inside its cell rather than being cut.
    """
    g = grid(df)
    if compact and not is_overview(df):
        g = _only(g, COMPACT)
    if drop:
        g = _only(g, [h for h in g.headers if h not in drop])
    table = Table(
        title=escape(g.title),
        title_justify="left",
        caption="\n".join(escape(n) for n in g.notes),
        caption_justify="left",
    )
    for j, h in enumerate(g.headers):
        table.add_column(escape(h), justify="right" if j in g.right else "left", overflow="fold")
    for i, row in enumerate(g.rows):
        texts = []
        for c in row:
            t = escape(c.text)
            texts.append(
                f"[bold]{t}[/bold]" if c.mark == "best" else f"[underline]{t}[/underline]" if c.mark == "second" else t
            )
        table.add_row(*texts, end_section=(i + 1) in g.group_starts)
    return table


_MD_SPECIAL = set("\\`*_{}[]<>|#")


def md_escape(text: str) -> str:
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in text)


def to_markdown(df: pl.DataFrame) -> str:
    g = grid(df)
    lines = [f"**{md_escape(g.title)}**", "", "| " + " | ".join(md_escape(h) for h in g.headers) + " |"]
    lines.append("|" + "|".join("---:" if j in g.right else "---" for j in range(len(g.headers))) + "|")
    for row in g.rows:
        cells = []
        for c in row:
            t = md_escape(c.text)
            cells.append(f"**{t}**" if c.mark == "best" and t else f"<u>{t}</u>" if c.mark == "second" and t else t)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *(md_escape(n) for n in g.notes)]
    return "\n".join(lines) + "\n"


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"\ensuremath{\pm}",
    "·": r"\textperiodcentered{}",
    "–": "--",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def _latex_cell(c: Cell) -> str:
    if " ± " in c.text:
        mean, std = c.text.split(" ± ", 1)
        rest = std.split(" ", 1)
        body = {"best": rf"\textbf{{{mean}}}", "second": rf"\underline{{{mean}}}"}.get(c.mark or "", mean)
        return body + rf" $\pm$ {latex_escape(rest[0])}" + (f" {latex_escape(rest[1])}" if len(rest) > 1 else "")
    t = latex_escape(c.text)
    return {"best": rf"\textbf{{{t}}}", "second": rf"\underline{{{t}}}"}.get(c.mark or "", t)


def to_latex(df: pl.DataFrame) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``): one row per encoder, a rule between groups."""
    g = grid(df)
    spec = "".join("r" if j in g.right else "l" for j in range(len(g.headers)))
    lines = [
        r"\begin{table}",
        r"\centering",
        rf"\caption{{{latex_escape(g.title)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in g.headers) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(g.rows):
        if i in g.group_starts and i > 0:
            lines.append(r"\midrule")
        lines.append(" & ".join(_latex_cell(c) for c in row) + r" \\")
    lines += [
        r"\bottomrule",
        r"\end{tabular}",
        *(rf"\par\footnotesize {latex_escape(n)}" for n in g.notes),
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def to_csv(frames: Sequence[pl.DataFrame]) -> str:
    """Every column of every board, one CSV (boards of tasks with other labels leave those cells empty)."""
    return pl.concat(list(frames), how="diagonal_relaxed").write_csv()


def to_json(df: pl.DataFrame) -> str:
    """One JSON object: the task (or tasks), metric, label (or task) columns and every row."""
    rows = df.to_dicts()
    if is_overview(df):
        head: dict[str, Any] = {"metric": df["metric"][0] if df.height else None, "tasks": task_columns(df)}
    else:
        head = {"task": df["task"][0], "metric": df["metric"][0], "labels": label_columns(df)}
    return json.dumps({**head, "rows": rows}, default=str)


def render(frames: Sequence[pl.DataFrame], fmt: str) -> str:
    """All ``frames`` in a text format (md, csv, latex, json); ``table`` is drawn by :func:`to_rich`."""
    if fmt == "md":
        return "\n".join(to_markdown(df) for df in frames)
    if fmt == "latex":
        return "\n".join(to_latex(df) for df in frames)
    if fmt == "csv":
        return to_csv(frames)
    if fmt == "json":
        return "".join(to_json(df) + "\n" for df in frames)
    raise ClearbenchError(f"unknown format '{fmt}'; valid: {', '.join(FORMATS)}")
