"""``clearbench synth``: write a synthetic cohort in a dataset's real on-disk layout."""

from __future__ import annotations

from enum import Enum
from importlib import import_module
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from clearbench.cli.common import err_console, esc, say
from clearbench.progress import LoggedProgress


class SynthDataset(str, Enum):
    deeplesion = "deeplesion"
    radchest = "radchest"
    nsclc = "nsclc"


def synth(
    dataset: SynthDataset = typer.Argument(..., help="Which layout to write."),
    out: Path = typer.Option(..., "--out", help="Folder to write the cohort into (created; must not hold one)."),
    scans: int = typer.Option(40, "--scans", min=1, help="Number of scans (DeepLesion: series folders)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed writes byte-identical files."),
    size: int = typer.Option(64, "--size", min=32, help="In-plane size of every slice, in pixels."),
) -> None:
    """Write a synthetic DeepLesion, RAD-ChestCT or NSCLC-Radiomics cohort of phantom CTs."""
    write_cohort = import_module(f"clearbench.scans.synth.{dataset.value}").write_cohort
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with LoggedProgress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(f"writing {esc(dataset.value)}", total=scans)
        root = write_cohort(out, scans, seed, size=size, progress=lambda n: bar.advance(task, n))
    say(
        "wrote {} synthetic {} scan(s) to {}\nnext: clearbench scans --dataset {} --root {}",
        scans,
        dataset.value,
        root,
        dataset.value,
        root,
    )


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
