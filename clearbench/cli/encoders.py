"""``clearbench encoders`` and ``clearbench encoders show NAME``: which encoders exist and whether they can run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from rich import box
from rich.table import Table

from clearbench.cli.common import command_problems, console, esc, fit_table, markup, print_json_line
from clearbench.cli.encoders_check import check

encoders_app = typer.Typer(
    help="List the registered encoders (built-in, plugin and your own cards) and whether their weights are found.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _weights_cell(row: dict, with_path: bool = False) -> str:
    path = row["weights_path"]
    if path == "none":
        return "[dim]not needed[/]"
    if path and path.startswith("random"):
        return f"[cyan]{esc(path)}[/]"
    if row["weights_found"]:
        return "[green]found[/]" + (f" {esc(path)}" if with_path else "")
    return "[yellow]missing[/]"


def _status_cell(row: dict) -> str:
    """One word or two: can this encoder run now, and if not, what is missing."""
    if row["problem"]:
        return "[red]error[/]"
    if row["missing_extra"]:
        return f"[yellow]needs extra {esc(row['missing_extra'])}[/]"
    if not row["weights_found"]:
        return "[yellow]no weights[/]"
    if row["weights_path"].startswith("random"):
        return "[green]ready[/] [cyan]random[/]"
    return "[green]ready[/]"


def _list_table(rows: list[dict], dropped: set[str]) -> Table:
    """The listing without the ``dropped`` columns; paper row and family wrap, name, dim and status never do."""
    columns: list[tuple[str, dict[str, Any], Callable[[dict], str]]] = [
        ("name", {"no_wrap": True, "style": "bold"}, lambda r: esc(r["name"]) + ("*" if r["overrides"] else "")),
        ("paper row", {"overflow": "fold"}, lambda r: esc(r["paper_name"] or "")),
        ("family", {"overflow": "fold"}, lambda r: esc(r["family"])),
        ("kind", {"no_wrap": True}, lambda r: r["kind"] or "?"),
        (
            "dim",
            {"justify": "right", "no_wrap": True},
            lambda r: str(r["dim"]) if r["dim"] is not None else ("?" if r["problem"] else "ckpt"),
        ),
        ("source", {"overflow": "fold"}, lambda r: esc(r["source"])),
        ("status", {"no_wrap": True}, _status_cell),
    ]
    shown = [
        c for c in columns if c[0] not in dropped and (c[0] != "source" or any(r["source"] != "builtin" for r in rows))
    ]
    table = Table(
        title=f"{len(rows)} encoders", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0)
    )
    for header, options, _ in shown:
        table.add_column(header, **options)
    for row in rows:
        table.add_row(*(cell(row) for _, _, cell in shown))
    return table


@encoders_app.callback()
def encoders(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object per encoder instead of a table."),
) -> None:
    """List every encoder: paper row name, family, kind, dim, weights found, missing extra."""
    if ctx.invoked_subcommand is not None:
        return
    from clearbench.encoders.registry import encoder_status, list_cards

    cards = list_cards(command_problems())
    rows = [encoder_status(card).to_dict() for card in cards]
    if json_out:
        for row in rows:
            print_json_line(row)
        return
    show_source = any(r["source"] != "builtin" for r in rows)
    console.print(
        fit_table(console, lambda dropped: _list_table(rows, dropped), ["source", "kind"] if show_source else ["kind"])
    )
    notes = [markup("[red]{}[/]: {}", r["name"], r["problem"]) for r in rows if r["problem"]]
    notes += [markup("[yellow]{}[/]: {}", r["name"], r["install"]) for r in rows if r["install"] and not r["problem"]]
    if any(r["overrides"] for r in rows):
        notes.append("* your card in CLEARBENCH_HOME/encoders overrides a built-in card of the same name")
    if any(not r["weights_found"] and not r["problem"] for r in rows):
        notes.append("[dim]where a missing weights file goes: clearbench encoders show NAME[/]")
    for note in notes:
        console.print(note, soft_wrap=True, highlight=False)


@encoders_app.command("show")
def show(
    name: str = typer.Argument(..., help="Encoder (card) name, as listed by `clearbench encoders`."),
    json_out: bool = typer.Option(False, "--json", help="Print the card and its status as one JSON object."),
) -> None:
    """Show one card in full: source file, weights location and sha256 check, parameters, licence, citation."""
    from clearbench.encoders.registry import check_card_settings, encoder_status, get_card

    card = get_card(name)
    check_card_settings(card)  # a card its family refuses is an error, as a card file that does not parse is
    info = {**encoder_status(card, check_sha256=True).to_dict(), "card": card.to_toml()}
    if json_out:
        print_json_line(info)
        return
    table = Table(title=f"encoder {esc(card.name)}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("paper row", esc(card.paper_name or "-"))
    table.add_row("family", markup("{} ({}, dim {})", card.family, info["kind"] or "?", info["dim"] or "from weights"))
    table.add_row("card file", markup("{} ({})", info["file"] or "-", card.source))
    if card.overrides:
        table.add_row("overrides", esc(card.overrides))
    if card.description:
        table.add_row("description", esc(card.description))
    if info["problem"]:
        table.add_row("problem", f"[red]{esc(info['problem'])}[/]")
    if info["missing_extra"]:
        table.add_row("missing extra", f"[yellow]{esc(info['install'])}[/]")
    table.add_row("weights", _weights_cell(info, with_path=True))
    table.add_row("looked in", esc("\n".join(info["weights_looked_in"])))
    declared = card.weights.sha256
    sha_line = {
        "verified": markup("[green]verified[/] {}", info["sha256"]),
        "mismatch": markup("[red]MISMATCH[/] file {} vs card {}", info["sha256"], declared),
        "not declared": markup("{} [dim](the card declares none; add sha256 to pin it)[/]", info["sha256"]),
    }
    table.add_row("sha256", sha_line.get(info["sha256_status"], markup("[dim]{}[/]", info["sha256_status"])))
    if card.weights.note:
        table.add_row("where to get it", esc(card.weights.note))
    for section in ("params", "preprocessing"):
        values = getattr(card, section)
        table.add_row(section, esc(", ".join(f"{k} = {v!r}" for k, v in values.items())) or "[dim]family defaults[/]")
    table.add_row("licence", esc(card.license or "-"))
    table.add_row("citation", esc(card.citation or "-"))
    console.print(table)


encoders_app.command("check")(check)


def register(app: typer.Typer) -> None:
    app.add_typer(encoders_app, name="encoders")
