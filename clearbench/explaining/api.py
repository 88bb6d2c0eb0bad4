"""``clearbench.explain`` and the run-level attention hit rate, over a finished run's stored predictions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clearbench.errors import ClearbenchError
from clearbench.explaining.hit_rate import HitRateSummary, ScanHitRate, scan_hit_rate, summarise
from clearbench.explaining.source import ScanAttention, chosen_run, dataset_key_slices, stored_attention
from clearbench.store.results import ResultsStore


@dataclass(frozen=True)
class ExplainedScan:
    """One plot written: which scan, fold and run, where, and the scan's hit rate (None without key slices)."""

    scan_id: str
    fold: int
    run_id: str
    path: Path
    rate: ScanHitRate | None


@dataclass(frozen=True)
class RunHitRate:
    """A run's hit rate: per fold the mean over its test scans with key slices, then mean and std over folds."""

    hit: float
    hit_std: float
    chance: float
    n_scans: int
    n_folds: int
    k: int


def rate_of(scan: ScanAttention, k: int) -> ScanHitRate | None:
    return scan_hit_rate(scan.scan_id, scan.attention, scan.window, scan.slice_idx, scan.key_slices, k)


def run_hit_rate(scans: Sequence[ScanAttention], k: int) -> RunHitRate | None:
    """Fold means first, so that a fold with more annotated test scans does not outweigh the others;
    None when no test scan has both attention and key slices."""
    per_fold: dict[int, HitRateSummary] = {}
    for fold in sorted({s.fold for s in scans}):
        rates = [r.overall for s in scans if s.fold == fold and (r := rate_of(s, k)) is not None]
        summary = summarise(rates)
        if summary is not None:
            per_fold[fold] = summary
    if not per_fold:
        return None
    hits = np.array([s.hit for s in per_fold.values()])
    return RunHitRate(
        hit=float(hits.mean()),
        hit_std=float(hits.std(ddof=1)) if hits.size > 1 else 0.0,
        chance=float(np.mean([s.chance for s in per_fold.values()])),
        n_scans=len({s.scan_id for s in scans if s.key_slices and s.fold in per_fold}),
        n_folds=len(per_fold),
        k=k,
    )


def attention_hit_rate(
    task: str,
    encoder: str,
    *,
    run: str | None = None,
    store: str | Path | None = None,
    root: str | Path | None = None,
) -> RunHitRate | None:
    """The attention hit rate of ``encoder``'s newest finished run of ``task`` (or of ``run``), with the
    card's ±k; None for a head without attention or a dataset without key slices."""
    from clearbench.tasks.registry import get_task

    card = get_task(task)
    results = ResultsStore(store)
    chosen = chosen_run(results, card.name, encoder, run)
    keys = dataset_key_slices(card.dataset, root, store)
    return run_hit_rate(stored_attention(results, chosen, key_slices=keys), card.hit_rate_k)


def _first_fold_per_scan(scans: Sequence[ScanAttention]) -> list[ScanAttention]:
    """Each scan once, from the lowest fold that tested it (every fold under hold-out, one under k-fold CV)."""
    seen: dict[str, ScanAttention] = {}
    for s in sorted(scans, key=lambda s: (s.scan_id, s.fold)):
        seen.setdefault(s.scan_id, s)
    return list(seen.values())


def _target(out: Path | None, task: str, encoder: str, scan: ScanAttention, single: bool) -> Path:
    if single and out is not None and out.suffix.lower() == ".png":
        return out
    folder = out if out is not None else Path("explain") / task / encoder
    return folder / f"{scan.scan_id}_fold{scan.fold}.png"


def explain(
    task: str,
    encoder: str,
    *,
    scan: str | None = None,
    fold: int | None = None,
    out: str | Path | None = None,
    max_scans: int = 8,
    run: str | None = None,
    store: str | Path | None = None,
    root: str | Path | None = None,
) -> list[ExplainedScan]:
    """Plot attention across slices from ``encoder``'s stored test predictions on ``task``; nothing is retrained.

    With ``scan``: that scan (from ``fold``, else the lowest fold that tested it), written to ``out`` when
    it ends in ``.png``. Without: the test scans that have key slices, up to ``max_scans``, one PNG each
    in the folder ``out`` (default ``explain/TASK/ENCODER``).
    """
    from clearbench.explaining.plot import attention_figure, save_figure
    from clearbench.tasks.registry import get_task

    card = get_task(task)
    results = ResultsStore(store)
    chosen = chosen_run(results, card.name, encoder, run)
    keys = dataset_key_slices(card.dataset, root, store)
    scans = stored_attention(results, chosen, scan_ids=[scan] if scan else None, fold=fold, key_slices=keys)
    where = f"run {chosen['run_id']} of encoder {encoder} on task {card.name}"
    if not scans:
        if scan is not None:
            folds = f" in fold {fold}" if fold is not None else ""
            raise ClearbenchError(
                f"scan {scan} has no test prediction with attention{folds} in {where}; "
                f"pick a test scan (clearbench explain {card.name} --encoder {encoder} without --scan lists them)"
            )
        raise ClearbenchError(
            f"{where} stored no attention (a volume encoder's MLP head has none); explain needs a slice encoder"
        )
    chosen_scans = _first_fold_per_scan(scans)
    if scan is None:
        chosen_scans = [s for s in chosen_scans if s.key_slices][: max(0, max_scans)]
        if not chosen_scans:
            raise ClearbenchError(f"no test scan of {where} has key slices; pass --scan ID to plot one anyway")
    written = []
    out_path = Path(out) if out is not None else None
    for s in chosen_scans:
        rate = rate_of(s, card.hit_rate_k)
        fig = attention_figure(s, encoder=encoder, task=card.name, k=card.hit_rate_k, rate=rate)
        path = save_figure(fig, _target(out_path, card.name, encoder, s, single=scan is not None))
        written.append(ExplainedScan(s.scan_id, s.fold, chosen["run_id"], path, rate))
    return written
