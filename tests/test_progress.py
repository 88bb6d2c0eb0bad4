"""Progress in logs: plain lines when the output is not a terminal, the rich bar when it is."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import BarColumn, TextColumn
from typer.testing import CliRunner

from clearbench.cli import app
from clearbench.progress import LoggedProgress, plain_interval


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=100), out


def test_a_log_gets_plain_lines_with_counts_and_fields() -> None:
    console, out = _console(terminal=False)
    with LoggedProgress(TextColumn("{task.description}"), BarColumn(), console=console, every=0) as progress:
        task = progress.add_task("embed deeplesion__hu-hist", total=4, rate="")
        for i in range(4):
            progress.update(task, advance=1, rate=f"{10 * (i + 1)}.0 slices/s")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("embed deeplesion__hu-hist  1/4 (25%)") and lines[0].endswith("10.0 slices/s")
    assert lines[-1].startswith("embed deeplesion__hu-hist  4/4 (100%)") and "ETA" not in lines[-1]
    assert len(lines) == 4  # one per change; the finished state is not repeated at stop
    assert "\x1b[" not in out.getvalue() and "━" not in out.getvalue()  # no escape codes, no bar


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def test_lines_come_every_interval_and_at_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr("clearbench.progress.time", clock)
    console, out = _console(terminal=False)
    with LoggedProgress(console=console, every=10) as progress:
        task = progress.add_task("pretrain", total=25)
        for _ in range(25):
            clock.now += 1
            progress.advance(task)
    assert [line.split("  ")[1] for line in out.getvalue().splitlines()] == [
        "10/25 (40%)",
        "20/25 (80%)",
        "25/25 (100%)",
    ]


def test_a_command_shorter_than_the_interval_prints_no_progress() -> None:
    console, out = _console(terminal=False)
    with LoggedProgress(console=console, every=3600) as progress:
        task = progress.add_task("quick", total=50)
        for _ in range(50):
            progress.advance(task)
    assert out.getvalue() == ""


def test_a_terminal_gets_the_bar_and_no_plain_lines() -> None:
    console, out = _console(terminal=True)
    with LoggedProgress(TextColumn("{task.description}"), BarColumn(), console=console, every=0) as progress:
        task = progress.add_task("folds", total=2)
        progress.advance(task, 2)
    assert not progress.plain
    assert "2/2 (100%)" not in out.getvalue() and "━" in out.getvalue()


def test_disabled_progress_prints_nothing_anywhere() -> None:
    for terminal in (False, True):
        console, out = _console(terminal)
        with LoggedProgress(console=console, every=0, disable=True) as progress:
            progress.advance(progress.add_task("quiet", total=3), 3)
        assert out.getvalue() == ""


def test_hidden_tasks_are_left_out_and_text_is_printed_whole() -> None:
    console, out = _console(terminal=False)
    with LoggedProgress(console=console, every=0) as progress:
        hidden = progress.add_task("epochs", total=5, visible=False)
        shown = progress.add_task(r"scan \[v2] · folds", total=2, info="")
        progress.advance(hidden)
        progress.update(shown, advance=1, info="fold 0 test macro AUC 71.0 [/b]")
    text = out.getvalue()
    assert "epochs" not in text
    assert "scan [v2] · folds  1/2 (50%)" in text and "fold 0 test macro AUC 71.0 [/b]" in text


def test_the_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARBENCH_PROGRESS_SECONDS", "2.5")
    assert plain_interval() == 2.5
    monkeypatch.setenv("CLEARBENCH_PROGRESS_SECONDS", "often")
    assert plain_interval() == 5.0
    monkeypatch.delenv("CLEARBENCH_PROGRESS_SECONDS")
    assert plain_interval() == 5.0


def test_a_command_whose_stderr_is_a_log_prints_progress_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARBENCH_PROGRESS_SECONDS", "0")
    result = CliRunner().invoke(
        app, ["synth", "deeplesion", "--out", str(tmp_path / "dl"), "--scans", "3", "--size", "32"]
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("writing deeplesion")]
    assert [line.split("  ")[1] for line in lines] == ["1/3 (33%)", "2/3 (67%)", "3/3 (100%)"]
