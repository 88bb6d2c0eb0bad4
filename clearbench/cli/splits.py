"""``clearbench splits TASK``: the task's stored split, fold by fold: patients, scans and prevalence per role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from clearbench.cli.common import command_problems, console, print_json_line, say
from clearbench.cli.run import KEEP_SPLIT_HELP, RESPLIT_HELP, split_notes


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def overview_table(view: dict[str, Any]) -> Table:
    """One row per fold and role; the label columns are the percentage of the role's scans positive."""
    proto = view["protocol"]
    table = Table(
        title=(
            f"[bold]{escape(view['task'])} · split {escape(view['split_id'])}[/]  {escape(proto['kind'])}, "
            f"{len(view['folds'])} folds, seed {view['seed']}, {view['n_scans']} scans, {view['n_patients']} patients"
        ),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        caption=f"label columns: % of the role's scans positive\ncohort {escape(view['cohort_fingerprint'])}, stored {escape(view['created_at'])}",
        caption_justify="left",
    )
    table.add_column("fold", justify="right", no_wrap=True)
    table.add_column("role", no_wrap=True)
    table.add_column("patients", justify="right", no_wrap=True)
    table.add_column("scans", justify="right", no_wrap=True)
    for name in view["labels"]:
        table.add_column(escape(name), justify="right", overflow="fold", min_width=4)
    for fold in view["folds"]:
        for i, (role, r) in enumerate(fold["roles"].items()):
            first = str(fold["fold"]) + ("" if fold["stratified"] else " [dim](unstratified)[/]") if i == 0 else ""
            cells = [_pct(r["prevalence"][name]) for name in view["labels"]]
            table.add_row(first, role, str(r["patients"]), str(r["scans"]), *cells, end_section=role == "test")
    return table


def splits(
    task: str = typer.Argument(..., help="Task name (see clearbench tasks) or a task card .toml file."),
    root: Path | None = typer.Option(
        None, "--root", help="Dataset root for the labels (default: config.toml, else the root used at embed time)."
    ),
    store: Path | None = typer.Option(None, "--store", help="The LanceDB store (default: CLEARBENCH_HOME/store)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the split (default: the task card's)."),
    json_out: bool = typer.Option(False, "--json", help="Print the split as one JSON object."),
    resplit: bool = typer.Option(False, "--resplit", help=RESPLIT_HELP),
    keep_split: bool = typer.Option(False, "--keep-split", help=KEEP_SPLIT_HELP),
) -> None:
    """Show TASK's stored split (drawing and storing it on first use): every run of TASK uses these folds.

    JSON keys: task, split_id, cohort_fingerprint, seed, protocol, created_at, choice, labels, n_scans, n_patients, test_patients, folds (fold, stratified, roles: train/val/test with scans, patients, prevalence per label), cohort_change (added, removed, changed scan ids).
    """
    from clearbench.protocols.run import load_task_split
    from clearbench.protocols.stored_split import split_overview

    split, labels = load_task_split(
        task, root=root, store=store, seed=seed, resplit=resplit, keep_split=keep_split, problems=command_problems()
    )
    view = split_overview(split, labels)
    if json_out:
        print_json_line(view)
        return
    for line in split_notes(split):
        say("[cyan]note:[/] {}", line, err=True)
    console.print(overview_table(view))


def register(app: typer.Typer) -> None:
    app.command("splits")(splits)
