"""``clearbench board``: every task's leaderboard on one offline HTML page, with attention plots."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import typer
from rich.markup import escape

from clearbench.cli.common import console, say


def board(
    out: Path = typer.Option(Path("board"), "--out", "-o", help="Folder for index.html and the plots/ it links to."),
    open_page: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
    published: bool = typer.Option(
        True, "--published/--no-published", help="Include the paper's rows (the page can still hide them)."
    ),
    plots: int = typer.Option(
        4, "--plots", min=0, help="Attention plots per run (test scans with key slices); 0: none."
    ),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", min=0, help="Bootstrap replicates for CIs and p-values (0: none)."
    ),
    root: Path | None = typer.Option(
        None, "--root", help="Dataset root for key slices (default: config.toml, else the root used at embed time)."
    ),
    store: Path | None = typer.Option(None, "--store", help="The LanceDB store (default: CLEARBENCH_HOME/store)."),
) -> None:
    """Write one self-contained HTML page of every task in the store: tabs, metric switch, sorting, provenance."""
    from clearbench.htmlboard.build import board as build

    with console.status("building the board") as status:
        result = build(
            out,
            store=store,
            published=published,
            plots=plots,
            n_boot=bootstrap,
            root=root,
            on_task=lambda task: status.update(f"building the board: {escape(task)}"),
        )
    for task, n in result.rows.items():
        say("{}: {} row(s)", task, n, err=True)
    say(
        "wrote {} ({} KiB, {} task(s)) and {} attention plot(s) under {}",
        result.path,
        f"{result.size / 1024:.1f}",
        len(result.rows),
        len(result.plots),
        out / "plots",
    )
    if open_page:
        webbrowser.open(result.path.resolve().as_uri())


def register(app: typer.Typer) -> None:
    app.command("board")(board)
