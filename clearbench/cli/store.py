"""``clearbench store ls | info TABLE | rm TABLE``: what the embedding store holds, and where it came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.table import Table

from clearbench.cli.common import check_table_option, console, esc, markup, print_json_line, say

if TYPE_CHECKING:
    from clearbench.store import EmbeddingStore

store_app = typer.Typer(help="List, inspect and delete embedding tables.", no_args_is_help=True)

_STORE_OPTION = typer.Option(None, "--store", help="Store folder (default: CLEARBENCH_HOME/store).")
_JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")
_TABLE_ARGUMENT = typer.Argument(..., callback=check_table_option, help="Table name (see: clearbench store ls).")


def _open(store: Path | None) -> EmbeddingStore:
    from clearbench.store import EmbeddingStore

    return EmbeddingStore(store)


@store_app.command("ls")
def ls(store: Path | None = _STORE_OPTION, json_out: bool = _JSON_OPTION) -> None:
    """One line per embedding table: dataset, encoder, dim, scans, rows and windows (--json: one object per table)."""
    embeddings = _open(store)
    infos = [embeddings.info(name) for name in embeddings.tables()]
    if json_out:
        for info in infos:
            print_json_line(
                {k: info[k] for k in ("table", "rows", "scans", "dim", "windows", "version", "path")}
                | {"dataset": info["provenance"].get("dataset"), "encoder": info["provenance"].get("encoder")}
            )
        return
    if not infos:
        say("no embedding tables in {}; make one with clearbench embed", embeddings.path, err=True)
        return
    # Tables named DATASET__ENCODER say what they hold; the column appears only when some table was renamed.
    origin = [f"{i['provenance'].get('encoder', '?')} / {i['provenance'].get('dataset', '?')}" for i in infos]
    renamed = any(
        i["table"] != embeddings.table_name(str(i["provenance"].get("dataset")), str(i["provenance"].get("encoder")))
        for i in infos
    )
    table = Table(title=esc(embeddings.path), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    # Names wrap on a narrow terminal; the counts never do, so no number is ever cut.
    table.add_column("table", overflow="fold", style="bold")
    for column in ("scans", "rows", "dim"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("windows", overflow="fold")
    if renamed:
        table.add_column("encoder / dataset", overflow="fold")
    for info, made_by in zip(infos, origin, strict=True):
        cells = [
            esc(info["table"]),
            str(info["scans"]),
            str(info["rows"]),
            str(info["dim"]),
            esc(",".join(sorted(info["windows"]))),
        ]
        table.add_row(*cells, *([esc(made_by)] if renamed else []))
    console.print(table)


@store_app.command("info")
def info(table: str = _TABLE_ARGUMENT, store: Path | None = _STORE_OPTION, json_out: bool = _JSON_OPTION) -> None:
    """Rows, scans, dim, rows per window, versions, fragments and full provenance of one table."""
    details = _open(store).info(table)
    if json_out:
        print_json_line(details)
        return
    grid = Table(title=markup("table {}", details["table"]), title_justify="left", show_header=False, box=box.SIMPLE)
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    rows_per_window = ", ".join(f"{w}: {n}" for w, n in sorted(details["windows"].items()))
    for key, value in (
        ("path", details["path"]),
        ("rows", details["rows"]),
        ("scans", details["scans"]),
        ("dim", details["dim"]),
        ("rows per window", rows_per_window),
        ("version", f"{details['version']} ({details['versions']} kept)"),
        ("fragments", details["fragments"]),
        ("indices", ", ".join(details["indices"]) or "none"),
    ):
        grid.add_row(key, esc(str(value)))
    for key, value in sorted(details["provenance"].items()):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        grid.add_row(f"provenance.{key}", esc(str(text)))
    console.print(grid)


@store_app.command("rm")
def rm(table: str = _TABLE_ARGUMENT, store: Path | None = _STORE_OPTION, json_out: bool = _JSON_OPTION) -> None:
    """Delete an embedding table and its files."""
    embeddings = _open(store)
    embeddings.rm(table)
    if json_out:
        print_json_line({"removed": table, "store": str(embeddings.path)})
    else:
        say("removed table {} from {}", table, embeddings.path, err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")
