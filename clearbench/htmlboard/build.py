"""``clearbench.board``: every task of the store on one HTML page, with each run's attention plots beside it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from clearbench.config import store_path
from clearbench.errors import ClearbenchError
from clearbench.htmlboard.data import PlotLink, board_data, task_entry
from clearbench.htmlboard.page import render_page
from clearbench.tasks.spec import METRICS

PAGE = "index.html"


@dataclass(frozen=True)
class BoardResult:
    """What was written: the page, its size in bytes, rows per task (all metrics show the same rows), plots."""

    path: Path
    size: int
    rows: dict[str, int]
    plots: list[Path] = field(default_factory=list)


def _run_plots(
    task: str, rows: Sequence[dict], out: Path, max_plots: int, store: str | Path | None, root: str | Path | None
) -> dict[str, list[PlotLink]]:
    """The attention plots of each reproduced run, written under ``out/plots``; runs whose head has no
    attention, or whose scans have no key slices, get none."""
    from clearbench.explaining.api import explain

    links: dict[str, list[PlotLink]] = {}
    for r in rows:
        if r["source"] != "reproduced" or not r["run_id"] or max_plots <= 0:
            continue
        folder = out / "plots" / task / r["encoder"]
        try:
            written = explain(
                task, r["encoder"], run=r["run_id"], out=folder, max_scans=max_plots, store=store, root=root
            )
        except ClearbenchError:
            continue
        links[r["run_id"]] = [
            PlotLink(
                w.scan_id,
                w.fold,
                w.path.relative_to(out).as_posix(),
                w.rate.overall.hit if w.rate else None,
                w.rate.overall.chance if w.rate else None,
            )
            for w in written
        ]
    return links


def board(
    out: str | Path = "board",
    *,
    store: str | Path | None = None,
    published: bool = True,
    plots: int = 4,
    n_boot: int = 1000,
    seed: int = 0,
    root: str | Path | None = None,
    on_task: Callable[[str], None] | None = None,
) -> BoardResult:
    """Write ``out/index.html``: a tab per task with finished runs, each with its AUC, AUPRC and F1
    leaderboards (``clearbench.leaderboard``), and up to ``plots`` attention plots per run under ``out/plots``.
    Raises :class:`ClearbenchError` when the store has no finished run at all."""
    from clearbench.explaining.columns import hit_rates, with_hit_rates
    from clearbench.leaderboards import leaderboard, marks
    from clearbench.leaderboards.api import NoRuns
    from clearbench.tasks.registry import list_tasks

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries, counts, written = [], {}, []
    for card in list_tasks():
        try:
            frames = {
                m: leaderboard(
                    card, metric=m, published=published, store=store, n_boot=n_boot, seed=seed, hit_rate=False
                )
                for m in METRICS
            }
        except NoRuns:
            continue
        rates = hit_rates(frames[METRICS[0]], card, store)  # the same for every metric: read once
        frames = {m: with_hit_rates(df, card, store, rates=rates) for m, df in frames.items()}
        if on_task is not None:
            on_task(card.name)
        rows = frames[METRICS[0]].to_dicts()
        links = _run_plots(card.name, rows, out, plots, store, root)
        written += [out / p.href for ps in links.values() for p in ps]
        entries.append(task_entry(card.name, card.title, card.labels, frames, marks, links))
        counts[card.name] = len(rows)
    if not entries:
        raise ClearbenchError(
            f"no finished runs in {store_path(store)}; make one with: clearbench run TASK (see: clearbench tasks)"
        )
    from clearbench.version import __version__

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    data = board_data(
        entries,
        METRICS,
        title="clearbench leaderboards",
        subtitle=f"{len(entries)} task(s) · clearbench {__version__} · generated {stamp}",
    )
    page = out / PAGE
    page.write_text(render_page(data), encoding="utf-8")
    return BoardResult(page, page.stat().st_size, counts, written)
