"""``clearbench encoders check NAME``: the family contract on one encoder, as a table or JSON."""

from __future__ import annotations

from typing import Literal

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from clearbench.cli.common import console, print_json_line, say

# --weights as the check takes it: random-initialised, or the card's own weights.
_WEIGHT_MODES: dict[str, Literal["random", "given"]] = {"random": "random", "given": "given"}


def check(
    name: str = typer.Argument(..., help="Encoder (card) name, as listed by `clearbench encoders`."),
    weights: str = typer.Option(
        "random",
        "--weights",
        help="random: a seeded random variant of the card (no file "
        "needed; the given weights when the family cannot build one); given: the card's own weights.",
    ),
    device: str = typer.Option("cpu", "--device", help="Device to run the checks on."),
    trust_checkpoint: bool = typer.Option(
        False, "--trust-checkpoint", help="Allow checkpoints that need pickled objects."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Check one encoder against the contract every family must meet; exit 1 when a check fails.

    Output (n, dim) float32 and finite, a batch equal to its items one by one, the same result twice, the input
    left untouched, no network access, and a complete provenance.
    """
    from clearbench.encoders.conformance import check_encoder

    mode = _WEIGHT_MODES.get(weights)
    if mode is None:
        raise typer.BadParameter(f"{weights!r}: use random or given", param_hint="--weights")
    report = check_encoder(name, mode, device, trust_checkpoint)
    if json_out:
        print_json_line(report.to_dict())
    else:
        title = f"encoder {escape(report.encoder)} ({escape(report.family)}"
        title += f", {report.kind}, dim {report.dim}, weights {escape(report.weights)})" if report.weights else ")"
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("check", no_wrap=True, style="bold")
        table.add_column("result", no_wrap=True)
        table.add_column("detail", overflow="fold")
        for item in report.checks:
            table.add_row(escape(item.name), "[green]pass[/]" if item.passed else "[red]FAIL[/]", escape(item.detail))
        console.print(table)
        if report.note:
            say("[yellow]note:[/] {}", report.note)
        verdict = "[green]conforms[/]" if report.passed else f"[red]{len(report.failures)} check(s) failed[/]"
        say("{}: " + verdict, report.encoder)
    if not report.passed:
        raise typer.Exit(1)
