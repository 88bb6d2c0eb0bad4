"""Shared pieces of the CLI: consoles, safe markup, JSON output, problem lines and the skipped inputs behind exit code 3.

Every message rich renders is markup, so a ``[`` in a file name, a label cell, a card or an exception
would be read as a tag: ``clearbench[sam2]`` would lose ``[sam2]`` and ``[/b]`` would crash the command.
All console output of the CLI is therefore built with :func:`markup` (clearbench's own markup in the
template, every interpolated value escaped) or :func:`esc` (one table cell), and printed with :func:`say`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from clearbench.problems import Problem, ProblemLog

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


@dataclass
class _State:
    debug: bool = False
    skipped: dict[str, None] = field(default_factory=dict)  # inputs a command went past, in order, each once


state = _State()


def esc(value: object) -> str:
    """Text from data, files, cards, exceptions or the user, safe to embed in rich markup."""
    return escape(str(value))


def markup(template: str, *values: object) -> str:
    """``template`` with clearbench's own markup and ``{}`` fields, each value escaped before it is filled in."""
    return template.format(*(esc(v) for v in values))


def say(template: str, *values: object, err: bool = False, **print_options: Any) -> None:
    """Print one message (to stderr with ``err``); values are escaped, the template's markup is kept.

    Messages are never highlighted and never wrapped mid-path, so they can be copied back into a shell.
    """
    target = err_console if err else console
    print_options.setdefault("soft_wrap", True)
    target.print(markup(template, *values), highlight=False, **print_options)


def fit_table(target: Console, build: Callable[[set[str]], Table], droppable: Sequence[str]) -> Table:
    """The table ``build`` makes, without as few of the ``droppable`` columns (in that order) as fit the terminal.

    Dropping a column beats cutting a number: what still does not fit wraps in the columns that may wrap.
    """
    dropped: set[str] = set()
    table = build(dropped)
    unlimited = target.options.update_width(10_000)  # the table's natural width, not the width it is squeezed into
    for column in droppable:
        if Measurement.get(target, unlimited, table).maximum <= target.width:
            break
        dropped.add(column)
        table = build(dropped)
    return table


def print_json_line(obj: Any) -> None:
    """One JSON object per line on stdout, for scripts; never styled or wrapped."""
    print(json.dumps(obj, default=str, sort_keys=False), flush=True)


def print_problem(problem: Problem) -> None:
    """A one-line problem report on stderr."""
    colour = {"error": "red", "warning": "yellow", "info": "cyan"}[problem.severity]
    say(f"[{colour}]{problem.severity}:[/] {{}}", problem, err=True)


def note_skipped(problems: Iterable[Problem]) -> None:
    """Record the errors a command went past: it then exits with code 3 and lists them at the end."""
    for problem in problems:
        if problem.severity == "error":
            state.skipped.setdefault(str(problem), None)


def command_problems(strict: bool = False, *, show: bool = True, record: bool = True) -> ProblemLog:
    """The problem log of a command: each problem on stderr as it occurs, each error noted for exit code 3.

    Under ``strict`` the first error is raised instead, and printed once, by the CLI's error handler.
    ``record=False`` where another process reports for this one (a torchrun rank other than 0).
    """

    def on_problem(problem: Problem) -> None:
        if show and not (strict and problem.severity == "error"):
            print_problem(problem)
        if record:
            note_skipped([problem])

    return ProblemLog(strict=strict, on_problem=on_problem)


def skipped_summary(limit: int = 5) -> str:
    """One line: how many inputs were skipped and the first few, for the end of a command that exits with 3."""
    items = list(state.skipped)
    shown = "; ".join(items[:limit]) + (f"; ... ({len(items) - limit} more)" if len(items) > limit else "")
    return (
        f"done, but {len(items)} input error(s) were skipped over (exit code 3; --strict stops at the first): {shown}"
    )


def check_table_option(value: str | None) -> str | None:
    """Typer callback for a table name: refused where it enters, with the allowed form (exit code 2)."""
    if value is None:
        return None
    from clearbench.store.db import check_table_name

    return check_table_name(value)
