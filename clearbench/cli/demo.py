"""``clearbench demo``: the whole recipe on a synthetic cohort, with the leaderboard, plots and next steps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from clearbench.cli.common import console, err_console, esc, say

if TYPE_CHECKING:
    from clearbench.protocols.run import RunProgress


def _say(line: str) -> None:
    say("{}", line)


@contextmanager
def _run_progress() -> Iterator[RunProgress]:
    from clearbench.cli.run import RichRunProgress
    from clearbench.progress import LoggedProgress

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with LoggedProgress(*columns, console=err_console) as progress:
        yield RichRunProgress(progress)


def demo(
    out: Path = typer.Option(
        Path(".demo"), "--out", "-o", help="Folder for everything the demo makes (its own CLEARBENCH_HOME is OUT/home)."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="Smaller pretraining and training: about 2 minutes on two CPU cores instead of about 10."
    ),
) -> None:
    """Pretrain, embed, evaluate and compare four encoders on a synthetic DeepLesion cohort, end to end.

    MoCo and LECL-0 MambaOuts pretrained here, the same MambaOut at random init and hu-hist are run on task 1
    (the demo card task1-demo) over the same test patients; the leaderboard, attention plots and the next
    commands to try on real data are printed at the end. Run it again and it reuses what it made.
    """
    from clearbench.cli.leaderboard import terminal_board
    from clearbench.demo import TASK, describe_outputs, next_commands, run_demo
    from clearbench.leaderboards.render import to_rich

    result = run_demo(out, quick=quick, say=_say, run_progress=_run_progress)
    console.print()
    if console.is_terminal:
        console.print(terminal_board(result.leaderboard, compact=True))
    else:  # a log is read whole: the table at its natural width, every column kept
        Console(file=console.file, width=160, highlight=False, color_system=None).print(
            to_rich(result.leaderboard, compact=True)
        )
    say("[bold]verdict[/] {}", result.verdict)

    where = Table(title="[bold]where everything is[/]", title_justify="left", show_header=False, box=None)
    for what, path in describe_outputs(result):
        where.add_row(what, esc(path))
    console.print(where)

    steps = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.seconds.items())
    say("{} demo in {} s ({})", result.size.name, f"{sum(result.seconds.values()):.0f}", steps)
    say("\n[bold]next[/] (the demo's task {} has a recipe for ~100 scans; use task1 on real data)", TASK)
    for what, command in next_commands(result):
        say("  [dim]# {}[/]\n  {}", what, command)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
