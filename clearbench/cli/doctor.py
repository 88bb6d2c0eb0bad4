"""``clearbench doctor``: what is installed and where clearbench keeps its state."""

from __future__ import annotations

import typer
from rich.table import Table

from clearbench.cli.common import console, esc, markup, print_json_line


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
    table.add_row("clearbench", esc(info["clearbench"]))
    table.add_row("python", markup("{} ({})", info["python"], info["platform"]))
    cuda = "available: " + ", ".join(info["gpus"]) if info["cuda_available"] else "not available (CPU only)"
    table.add_row(
        "torch", markup("{} (CUDA build {}); GPU {}", info["torch"], info["torch_cuda_build"] or "none", cuda)
    )
    for name, ver in info["packages"].items():
        table.add_row(esc(name), esc(ver) if ver else "[red]missing[/]")
    for extra, entry in info["extras"].items():
        status = "[green]installed[/]" if entry["installed"] else f"[dim]not installed: {esc(entry['install'])}[/]"
        table.add_row(markup("extra {}", extra), status + markup(" ({})", entry["enables"]))
    table.add_row("home", esc(info["home"]))
    table.add_row("config", esc(info["config"]) if info["config"] else "[dim]none[/]")
    table.add_row("store", esc(info["store"]))
    roots = info["dataset_roots"]
    table.add_row(
        "dataset roots", "\n".join(markup("{}: {}", k, v) for k, v in roots.items()) or "[dim]none configured[/]"
    )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
