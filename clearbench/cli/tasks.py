"""``clearbench tasks``: the task cards clearbench knows, from the wheel, the user and plugins."""

from __future__ import annotations

import typer
from rich.table import Table

from clearbench.cli.common import command_problems, console, esc, markup, print_json_line


def tasks(json_out: bool = typer.Option(False, "--json", help="One JSON object per task card.")) -> None:
    """List the task cards: dataset, labels, windows and protocol; bad cards are reported."""
    from clearbench.tasks.registry import list_tasks

    problems = command_problems(show=not json_out)
    cards = list_tasks(problems)
    if json_out:
        for card in cards:
            print_json_line({**card.to_dict(), "source": card.source})
        return
    table = Table(title="clearbench tasks", title_justify="left")
    table.add_column("task", no_wrap=True)
    table.add_column("dataset", no_wrap=True)
    table.add_column("labels", ratio=1, min_width=16)
    table.add_column("windows", no_wrap=True)
    table.add_column("protocol", no_wrap=True)
    for card in cards:
        p = card.protocol
        if p.kind == "holdout+kfold":
            test = f"official '{p.test_split}'" if p.test_split else f"{p.test_fraction:.0%} test"
            protocol = f"{p.kind}\n{test}, {p.folds} folds"
        else:
            protocol = f"{p.kind}\n{p.folds} folds, {p.val_fraction:.0%} val"
        table.add_row(
            f"[bold]{esc(card.name)}[/]\n[dim]{_origin(card.source)}[/]",
            markup("{}\n{}", card.dataset, card.type),
            esc(", ".join(card.labels)),
            esc("\n".join(card.windows)),
            esc(protocol),
            end_section=True,
        )
    console.print(table)


def _origin(source: str) -> str:
    """built-in, user or plugin: where a card came from, in one word (the full path is in --json)."""
    from clearbench.config import user_card_dir
    from clearbench.tasks.registry import builtin_card_dir

    if source.startswith(str(builtin_card_dir())):
        return "built-in"
    if source.startswith(str(user_card_dir("tasks"))):
        return "user"
    return "plugin" if source.startswith("entry point") else esc(source)


def register(app: typer.Typer) -> None:
    app.command("tasks")(tasks)
