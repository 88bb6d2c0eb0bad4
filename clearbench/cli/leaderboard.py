"""``clearbench leaderboard [TASK ...]``: encoders compared on a task, or every task side by side."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from clearbench.cli.common import command_problems, console, fit_table
from clearbench.errors import ClearbenchError

if TYPE_CHECKING:
    import polars as pl
    from rich.table import Table


def terminal_board(df: pl.DataFrame, compact: bool = False) -> Table:
    """The leaderboard as a rich table that fits this terminal, numbers never cut.

    The bookkeeping columns go first, then per-label columns from the last one (the average stays); a
    caption says which labels were left out and where to see them all.
    """
    from clearbench.leaderboards.render import DROPPABLE, is_overview, to_rich
    from clearbench.leaderboards.table import label_columns

    labels = [] if compact or is_overview(df) else label_columns(df)
    table = fit_table(console, lambda dropped: to_rich(df, compact, dropped), [*DROPPABLE, *reversed(labels)])
    shown = {str(c.header) for c in table.columns}
    hidden = [label for label in labels if label not in shown]
    if hidden:
        note = f"{len(hidden)} label column(s) left out at this terminal width ({', '.join(hidden)}): --format md or csv shows them all"
        table.caption = f"{table.caption}\n{escape(note)}" if table.caption else escape(note)
    return table


def _check_choice(option: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ClearbenchError(f"{option} {value}: unknown; valid: {', '.join(valid)}")
    return value


def print_boards(frames: list, fmt: str, out: Path | None) -> None:
    """Draw ``frames`` on the terminal, or write them in ``fmt`` to stdout or ``out``."""
    from clearbench.leaderboards.render import render, to_rich

    if fmt == "table":
        if out is None:
            for df in frames:
                console.print(terminal_board(df))
            return
        from rich.console import Console

        with out.open("w", encoding="utf-8") as f:
            file_console = Console(file=f, width=240, highlight=False, color_system=None)
            for df in frames:
                file_console.print(to_rich(df))
        return
    text = render(frames, fmt)
    if out is None:
        print(text, end="", flush=True)
    else:
        out.write_text(text, encoding="utf-8")


def leaderboard(
    tasks: list[str] | None = typer.Argument(
        None, help="Task name(s); none: one overview of every task with finished runs."
    ),
    metric: str = typer.Option("auc", "--metric", "-m", help="auc, auprc or f1."),
    fmt: str = typer.Option("table", "--format", "-f", help="table (terminal), md, csv, latex or json."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to this file instead of the terminal."),
    published: bool = typer.Option(True, "--published/--no-published", help="Show the paper's rows beside yours."),
    run: list[str] | None = typer.Option(
        None, "--run", help="Show this run for its encoder instead of the newest (repeatable)."
    ),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", min=0, help="Bootstrap replicates for CIs and p-values (0: none)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    store: Path | None = typer.Option(None, "--store", help="The LanceDB store (default: CLEARBENCH_HOME/store)."),
) -> None:
    """Rank encoders on a task as in the paper's tables, with bootstrap CIs, paired tests and published rows."""
    from clearbench.leaderboards import leaderboard as board
    from clearbench.leaderboards import leaderboard_overview
    from clearbench.leaderboards.render import FORMATS
    from clearbench.leaderboards.stats import METRIC_NAMES

    _check_choice("--metric", metric, METRIC_NAMES)
    _check_choice("--format", fmt, FORMATS)

    if not tasks:
        if run:
            raise ClearbenchError(
                "--run picks a run of one task's board: name the task, e.g. clearbench leaderboard task1 --run ID"
            )
        print_boards([leaderboard_overview(metric=metric, published=published, store=store)], fmt, out)
        return
    problems = command_problems()  # a task that cannot be boarded is skipped: exit code 3 once the rest are shown
    frames = []
    for task in tasks:
        try:
            frames.append(
                board(task, metric=metric, published=published, store=store, run=run, n_boot=bootstrap, seed=seed)
            )
        except ClearbenchError as exc:
            if len(tasks) == 1:
                raise
            problems.report(f"task {task}", str(exc))
    if not frames:
        raise ClearbenchError(f"none of the tasks {', '.join(tasks)} could be boarded; the reason for each is above")
    print_boards(frames, fmt, out)


def register(app: typer.Typer) -> None:
    app.command("leaderboard")(leaderboard)
