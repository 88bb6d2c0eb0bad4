"""Shared pieces of the CLI: consoles, JSON output, problem lines and the skipped inputs behind exit code 3."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape

from clearbench.scans.problems import Problem, ProblemLog

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


@dataclass
class _State:
    debug: bool = False
    skipped: dict[str, None] = field(default_factory=dict)  # inputs a command went past, in order, each once


state = _State()


def print_json_line(obj: Any) -> None:
    """One JSON object per line on stdout, for scripts; never styled or wrapped."""
    print(json.dumps(obj, default=str, sort_keys=False), flush=True)


def print_problem(problem: Problem) -> None:
    """A one-line problem report on stderr."""
    colour = {"error": "red", "warning": "yellow", "info": "cyan"}[problem.severity]
    err_console.print(f"[{colour}]{problem.severity}:[/] {escape(str(problem))}", soft_wrap=True)


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
    return f"done, but {len(items)} input error(s) were skipped over (exit code 3; --strict stops at the first): {escape(shown)}"


def check_table_option(value: str | None) -> str | None:
    """Typer callback for a table name: refused where it enters, with the allowed form (exit code 2)."""
    if value is None:
        return None
    from clearbench.store.db import check_table_name

    return check_table_name(value)
