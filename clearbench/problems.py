"""Bad-input bookkeeping: one line per problem, the work goes on, a summary at the end.

Readers never print. They report a :class:`Problem` to the :class:`ProblemLog` they were given; the
CLI decides how to show it. With ``strict=True`` the first error stops the run instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from clearbench.errors import InputError

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Problem:
    """Something wrong with one input: the file, the reason, and the scan it affects if known."""

    path: str
    reason: str
    scan_id: str | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


class ProblemLog:
    """Collects problems; raises on the first error when ``strict``; calls ``on_problem`` for each."""

    def __init__(self, strict: bool = False, on_problem: Callable[[Problem], None] | None = None) -> None:
        self.strict = strict
        self.on_problem = on_problem
        self.problems: list[Problem] = []

    def report(
        self,
        path: str | Path,
        reason: str,
        scan_id: str | None = None,
        severity: Severity = "error",
    ) -> Problem:
        problem = Problem(str(path), reason, scan_id, severity)
        self.problems.append(problem)
        if self.on_problem is not None:
            self.on_problem(problem)
        if self.strict and severity == "error":
            raise InputError(path, reason)
        return problem

    def for_scan(self, scan_id: str) -> list[Problem]:
        return [p for p in self.problems if p.scan_id == scan_id]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]
