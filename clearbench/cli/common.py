"""Shared pieces of the CLI: consoles, JSON output and problem lines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from clearbench.scans.problems import Problem

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


@dataclass
class _State:
    debug: bool = False


state = _State()


def print_json_line(obj: Any) -> None:
    """One JSON object per line on stdout, for scripts; never styled or wrapped."""
    print(json.dumps(obj, default=str, sort_keys=False), flush=True)


def print_problem(problem: Problem) -> None:
    """A one-line problem report on stderr."""
    colour = {"error": "red", "warning": "yellow", "info": "cyan"}[problem.severity]
    err_console.print(f"[{colour}]{problem.severity}:[/] {problem}", soft_wrap=True)
