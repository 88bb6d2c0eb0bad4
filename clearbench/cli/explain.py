"""``clearbench explain``: attention across slices from a finished run, as PNGs, with the attention hit rate."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from clearbench.cli.common import console, print_json_line, say


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def explain(
    task: str = typer.Argument(..., help="Task name (see clearbench tasks)."),
    encoder: str = typer.Option(
        ..., "--encoder", "-e", help="The encoder whose run to explain (a slice encoder: ABMIL head)."
    ),
    scan: str | None = typer.Option(
        None, "--scan", help="One test scan; default: the test scans with key slices, up to --max."
    ),
    fold: int | None = typer.Option(
        None, "--fold", min=0, help="The fold whose model to show (default: the lowest fold that tested the scan)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="A .png path with --scan, else a folder (default: explain/TASK/ENCODER)."
    ),
    max_scans: int = typer.Option(8, "--max", min=1, help="Without --scan: at most this many scans, one PNG each."),
    run: str | None = typer.Option(None, "--run", help="A run id (default: the newest finished run of the encoder)."),
    root: Path | None = typer.Option(
        None, "--root", help="Dataset root for the key slices (default: config.toml, else the root used at embed time)."
    ),
    store: Path | None = typer.Option(None, "--store", help="The LanceDB store (default: CLEARBENCH_HOME/store)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON line per plot, then one for the run's hit rate."),
) -> None:
    """Plot attention across slices (one line per window, key slices marked) from stored test predictions."""
    from clearbench.explaining.api import attention_hit_rate
    from clearbench.explaining.api import explain as explain_api

    written = explain_api(
        task, encoder, scan=scan, fold=fold, out=out, max_scans=max_scans, run=run, store=store, root=root
    )
    overall = attention_hit_rate(task, encoder, run=written[0].run_id, store=store, root=root)
    if json_out:
        for w in written:
            r = w.rate.overall if w.rate else None
            print_json_line(
                {
                    "scan_id": w.scan_id,
                    "fold": w.fold,
                    "run_id": w.run_id,
                    "path": str(w.path),
                    "hit_rate": r.hit if r else None,
                    "chance": r.chance if r else None,
                }
            )
        print_json_line(
            {
                "task": task,
                "encoder": encoder,
                "run_id": written[0].run_id,
                "hit_rate": overall.__dict__ if overall else None,
            }
        )
        return
    table = Table(title=f"{escape(task)} · {escape(encoder)} · run {escape(written[0].run_id)}", title_justify="left")
    for name in ("scan", "fold", "hit %", "chance %", "plot"):
        table.add_column(name, justify="right" if name in ("fold", "hit %", "chance %") else "left", overflow="fold")
    for w in written:
        r = w.rate.overall if w.rate else None
        table.add_row(
            escape(w.scan_id), str(w.fold), _pct(r.hit) if r else "–", _pct(r.chance) if r else "–", escape(str(w.path))
        )
    console.print(table)
    if overall is None:
        console.print("attention hit rate: none (no test scan has key slices)")
    else:
        say(
            "attention hit rate (±{} slices of a key slice), {} test scans, mean over {} fold(s): [bold]{}%[/] ± {}, chance {}%",
            overall.k,
            overall.n_scans,
            overall.n_folds,
            _pct(overall.hit),
            _pct(overall.hit_std),
            _pct(overall.chance),
        )


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)
