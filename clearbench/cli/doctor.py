"""``clearbench doctor``: what is installed and where clearbench keeps its state."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from clearbench.cli.common import console, print_json_line


def doctor(json_out: bool = typer.Option(False, "--json", help="Print the report as one JSON object.")) -> None:
    """Show Python, torch and CUDA versions, installed extras, the store location and dataset roots."""
    from clearbench.doctor import report

    info = report()
    if json_out:
        print_json_line(info)
        return
    table = Table(title="clearbench doctor", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("clearbench", info["clearbench"])
    table.add_row("python", f"{info['python']} ({info['platform']})")
    cuda = "available: " + ", ".join(info["gpus"]) if info["cuda_available"] else "not available (CPU only)"
    table.add_row("torch", f"{info['torch']} (CUDA build {info['torch_cuda_build'] or 'none'}); GPU {cuda}")
    for name, ver in info["packages"].items():
        table.add_row(name, ver or "[red]missing[/]")
    for extra, entry in info["extras"].items():
        status = "[green]installed[/]" if entry["installed"] else f"[dim]not installed: {escape(entry['install'])}[/]"
        table.add_row(f"extra {extra}", f"{status} ({entry['enables']})")
    table.add_row("home", info["home"])
    table.add_row("config", info["config"] or "[dim]none[/]")
    table.add_row("store", info["store"])
    roots = info["dataset_roots"]
    table.add_row("dataset roots", "\n".join(f"{k}: {v}" for k, v in roots.items()) or "[dim]none configured[/]")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
