"""``clearbench embed``: embed a dataset with a frozen encoder into the store (resumable; torchrun-aware)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from clearbench.cli.common import check_table_option, command_problems, note_skipped, print_json_line, say

if TYPE_CHECKING:
    from clearbench.embedding import EmbedSummary


def embed(
    encoder: str = typer.Option(..., "--encoder", "-e", help="Encoder card name (see: clearbench encoders)."),
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="Dataset name: deeplesion, radchest, nsclc, dicom, nifti or a plugin's."
    ),
    root: Path | None = typer.Option(
        None, "--root", help="Dataset folder (default: the root set in CLEARBENCH_HOME/config.toml)."
    ),
    windows: str | None = typer.Option(
        None,
        "--windows",
        "-w",
        help="Comma-separated HU windows, e.g. abdomen,lung or name:lo:hi "
        "(default: deeplesion abdomen,lung; radchest and nsclc lung).",
    ),
    batch_size: int = typer.Option(
        64, "--batch-size", "-b", min=1, help="Slices per encoder batch (batches run across scans)."
    ),
    device: str | None = typer.Option(
        None, "--device", help="cpu, cuda or cuda:N (default: this rank's GPU if any, else cpu)."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Threads decoding scans ahead of the encoder (default: one per core, up to 8)."
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Embed only the first N scans of the dataset (by scan id)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad scan instead of skipping it."),
    store: Path | None = typer.Option(None, "--store", help="Store folder (default: CLEARBENCH_HOME/store)."),
    table: str | None = typer.Option(
        None, "--table", callback=check_table_option, help="Table name (default: DATASET__ENCODER)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the table first and embed everything again."),
    trust_checkpoint: bool = typer.Option(
        False, "--trust-checkpoint", help="Allow a checkpoint that needs pickle to load (only for files you trust)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Embed every scan of a dataset, slice by slice in each window, into a LanceDB table.

    A restarted run skips the scans already stored. Bad scans are reported on stderr, one line each, and skipped.
    Several processes: torchrun --nproc-per-node N -m clearbench embed ... (each rank takes a share of the scans).
    """
    from clearbench.embedding import embed as run_embed
    from clearbench.runtime import env_ranks

    summary = run_embed(
        encoder,
        dataset,
        root=root,
        windows=windows,
        batch_size=batch_size,
        device=device,
        workers=workers,
        limit=limit,
        strict=strict,
        store=store,
        table=table,
        overwrite=overwrite,
        progress=not json_out,
        trust_checkpoint=trust_checkpoint,
        problems=command_problems(strict, record=False),  # rank 0 notes every rank's, from the summary
    )
    if env_ranks().rank != 0:
        return
    note_skipped(summary.problems)
    if json_out:
        print_json_line(summary.to_dict())
        return
    _say_summary(summary)


def _say_summary(summary: EmbedSummary) -> None:
    """The run in one line on stderr: what was embedded, how fast, and what was skipped or failed."""
    ranks = f" on {summary.world_size} processes" if summary.world_size > 1 else ""
    changed = f" ({summary.scans_changed} of them changed since they were stored)" if summary.scans_changed else ""
    say(
        "{}: {} scan(s) embedded{} ({} rows, {}/s{}), {} already stored, {} failed, of {} [dim]({})[/]",
        summary.table,
        summary.scans_done,
        changed,
        summary.slices_embedded,
        f"{summary.slices_per_s:.1f}",
        ranks,
        summary.scans_skipped,
        summary.scans_failed,
        summary.scans_total,
        summary.store,
        err=True,
    )


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
