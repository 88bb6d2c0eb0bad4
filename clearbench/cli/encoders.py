"""``clearbench encoders`` and ``clearbench encoders show NAME``: which encoders exist and whether they can run."""

from __future__ import annotations

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from clearbench.cli.common import command_problems, console, print_json_line
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
        return f"[cyan]{escape(path)}[/]"
    if row["weights_found"]:
        return "[green]found[/]" + (f" {escape(path)}" if with_path else "")
    return "[yellow]missing[/]"


def _status_cell(row: dict) -> str:
    """One word or two: can this encoder run now, and if not, what is missing."""
    if row["problem"]:
        return "[red]error[/]"
    if row["missing_extra"]:
        return f"[yellow]needs extra {escape(row['missing_extra'])}[/]"
    if not row["weights_found"]:
        return "[yellow]no weights[/]"
    if row["weights_path"].startswith("random"):
        return "[green]ready[/] [cyan]random[/]"
    return "[green]ready[/]"


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
    table = Table(title=f"{len(rows)} encoders", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("paper row", no_wrap=True)
    table.add_column("family", no_wrap=True)
    table.add_column("kind", no_wrap=True, min_width=6)
    table.add_column("dim", justify="right", no_wrap=True)
    show_source = any(r["source"] != "builtin" for r in rows)
    if show_source:
        table.add_column("source")
    table.add_column("status", no_wrap=True, min_width=12)
    for row in rows:
        dim = str(row["dim"]) if row["dim"] is not None else ("?" if row["problem"] else "ckpt")
        cells = [escape(row["name"]), escape(row["paper_name"] or ""), escape(row["family"]), row["kind"] or "?", dim]
        if show_source:
            cells.append(escape(row["source"]) + ("*" if row["overrides"] else ""))
        table.add_row(*cells, _status_cell(row))
    console.print(table)
    notes = [f"[red]{escape(r['name'])}[/]: {escape(r['problem'])}" for r in rows if r["problem"]]
    notes += [f"[yellow]{escape(r['name'])}[/]: {escape(r['install'])}" for r in rows if r["install"] and not r["problem"]]
    if any(r["overrides"] for r in rows):
        notes.append("* your card in CLEARBENCH_HOME/encoders overrides a built-in card of the same name")
    if any(not r["weights_found"] and not r["problem"] for r in rows):
        notes.append("[dim]where a missing weights file goes: clearbench encoders show NAME[/]")
    for note in notes:
        console.print(note, soft_wrap=True)


@encoders_app.command("show")
def show(
    name: str = typer.Argument(..., help="Encoder (card) name, as listed by `clearbench encoders`."),
    json_out: bool = typer.Option(False, "--json", help="Print the card and its status as one JSON object."),
) -> None:
    """Show one card in full: source file, weights location and sha256 check, parameters, licence, citation."""
    from clearbench.encoders.registry import encoder_status, get_card

    card = get_card(name)
    info = {**encoder_status(card, check_sha256=True).to_dict(), "card": card.to_toml()}
    if json_out:
        print_json_line(info)
        return
    table = Table(title=f"encoder {escape(card.name)}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("paper row", escape(card.paper_name or "-"))
    table.add_row("family", f"{escape(card.family)} ({info['kind'] or '?'}, dim {info['dim'] or 'from weights'})")
    table.add_row("card file", f"{escape(info['file'] or '-')} ({escape(card.source)})")
    if card.overrides:
        table.add_row("overrides", escape(card.overrides))
    if card.description:
        table.add_row("description", escape(card.description))
    if info["problem"]:
        table.add_row("problem", f"[red]{escape(info['problem'])}[/]")
    if info["missing_extra"]:
        table.add_row("missing extra", f"[yellow]{escape(info['install'])}[/]")
    table.add_row("weights", _weights_cell(info, with_path=True))
    table.add_row("looked in", escape("\n".join(info["weights_looked_in"])))
    declared = card.weights.sha256
    sha_line = {"verified": f"[green]verified[/] {info['sha256']}",
                "mismatch": f"[red]MISMATCH[/] file {info['sha256']} vs card {declared}",
                "not declared": f"{info['sha256']} [dim](the card declares none; add sha256 to pin it)[/]"}
    table.add_row("sha256", sha_line.get(info["sha256_status"], f"[dim]{info['sha256_status']}[/]"))
    if card.weights.note:
        table.add_row("where to get it", escape(card.weights.note))
    for section in ("params", "preprocessing"):
        values = getattr(card, section)
        table.add_row(section, escape(", ".join(f"{k} = {v!r}" for k, v in values.items())) or "[dim]family defaults[/]")
    table.add_row("licence", escape(card.license or "-"))
    table.add_row("citation", escape(card.citation or "-"))
    console.print(table)


encoders_app.command("check")(check)


def register(app: typer.Typer) -> None:
    app.add_typer(encoders_app, name="encoders")
