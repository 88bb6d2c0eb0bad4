"""``clearbench scans``: read every scan of a dataset once and show what was found and what is wrong."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from clearbench.cli.common import command_problems, console, err_console, esc, markup, print_json_line, say
from clearbench.errors import ClearbenchError
from clearbench.progress import LoggedProgress

if TYPE_CHECKING:
    from clearbench.scans.survey import ScanSummary

# Datasets with more label columns than this show only the positive ones in the table.
_LABELS_SHOWN_BY_VALUE = 2


def _mm(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _labels_cell(labels: dict[str, float | None]) -> str:
    if not labels:
        return "[dim]-[/]"
    if len(labels) <= _LABELS_SHOWN_BY_VALUE:
        return ", ".join(f"{esc(k)}={'?' if v is None else f'{v:g}'}" for k, v in labels.items())
    positive = [esc(k) for k, v in labels.items() if v is not None and v != 0]
    unknown = sum(v is None for v in labels.values())
    text = ", ".join(positive) if positive else "[dim]none positive[/]"
    return text + (f" [dim]({unknown} unknown)[/]" if unknown else "")


def _problems_cell(severities: Sequence[str]) -> str:
    errors, warnings = severities.count("error"), severities.count("warning")
    parts = [f"[red]{errors} error{'s' * (errors != 1)}[/]"] if errors else []
    parts += [f"[yellow]{warnings} warning{'s' * (warnings != 1)}[/]"] if warnings else []
    return ", ".join(parts) or "[green]ok[/]"


def _scans_table(title: str) -> Table:
    """The empty table, one row per scan."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("scan", no_wrap=True, overflow="fold")
    table.add_column("patient", no_wrap=True, overflow="fold")
    table.add_column("slices", justify="right", no_wrap=True)
    table.add_column("shape", justify="right", no_wrap=True)
    table.add_column("spacing mm", justify="right", no_wrap=True)
    table.add_column("labels", overflow="fold", min_width=12)
    table.add_column("problems")
    return table


def _scan_cells(summary: ScanSummary, severities: Sequence[str]) -> tuple[str, ...]:
    """One scan's row; a scan that could not be loaded keeps its ids and problems, with no geometry."""
    scan = summary.scan
    return (
        esc(summary.record.scan_id),
        esc(summary.record.patient_id),
        str(scan.n_slices) if scan else "[red]-[/]",
        "×".join(map(str, scan.shape)) if scan else "[red]not loaded[/]",
        "×".join(_mm(s) for s in scan.spacing) if scan else "",
        _labels_cell(summary.record.labels),
        _problems_cell(severities),
    )


def scans(
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="Dataset name: deeplesion, radchest, nsclc, dicom, nifti or a plugin's."
    ),
    root: Path | None = typer.Option(
        None, "--root", help="Dataset folder (default: the root set for the dataset in CLEARBENCH_HOME/config.toml)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object per scan instead of a table."),
    strict: bool = typer.Option(False, "--strict", help="Stop with a non-zero exit code at the first error."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Read only the first N scans (by scan id)."),
) -> None:
    """Read every scan once: slice counts, shape, spacing, labels and the problems found.

    Problems go to stderr as they occur, one line each, then a summary.

    --json prints one JSON object per scan (scan_id, patient_id, n_slices, shape, spacing, labels, annotations, problems).

    A scan that could not be loaded still gets its line, with null geometry.
    """
    from clearbench.scans.registry import open_dataset
    from clearbench.scans.survey import survey

    log = command_problems(strict)
    reader = open_dataset(dataset, root, problems=log)
    records = reader.records()
    n_found = len(records) + len(reader.unreadable())
    total = n_found if limit is None else min(limit, n_found)

    table = _scans_table(markup("{}: {}", dataset, reader.root))

    n_read = n_with_problems = n_skipped = 0
    progress = LoggedProgress(
        TextColumn("reading scans"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    with progress:
        task = progress.add_task("reading scans", total=total)
        for summary in survey(reader, limit=limit):
            progress.advance(task)
            severities = [p.severity for p in summary.problems if p.severity != "info"]
            n_read += summary.loaded
            n_skipped += not summary.loaded
            n_with_problems += bool(severities)
            if json_out:
                print_json_line(summary.to_json())
                continue
            table.add_row(*_scan_cells(summary, severities))
    if not json_out and total:
        console.print(table)
    errors, warnings = len(log.errors), len(log.warnings)
    say(
        "{} scan(s) read, {} with problems, {} skipped; {} error(s), {} warning(s) reported",
        n_read,
        n_with_problems,
        n_skipped,
        errors,
        warnings,
        err=True,
    )
    if not n_found:
        raise ClearbenchError(f"no {dataset} scans found under {reader.root}: check --root and the dataset layout")


def register(app: typer.Typer) -> None:
    app.command("scans")(scans)
