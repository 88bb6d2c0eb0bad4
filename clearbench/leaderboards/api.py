"""``leaderboard`` and ``leaderboard_overview``: the store's results as polars DataFrames, ready to render.

The columns of a task's leaderboard are documented in :mod:`clearbench.leaderboards.table`; those of the
overview here, in :func:`leaderboard_overview`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from clearbench.config import store_path
from clearbench.errors import ClearbenchError
from clearbench.explaining.columns import with_hit_rates
from clearbench.leaderboards import stats
from clearbench.leaderboards.published import published_rows
from clearbench.leaderboards.records import current_split_id, read_records
from clearbench.leaderboards.table import AVERAGE, PUBLISHED, RANKED, DType, build_table
from clearbench.store.results import ResultsStore
from clearbench.tasks.card import TaskCard
from clearbench.tasks.registry import get_task, list_tasks


class NoRuns(ClearbenchError):
    """The store holds no finished run of the task."""

    def __init__(self, task: str, store: str | Path | None) -> None:
        super().__init__(
            f"no finished runs of task {task} in {store_path(store)}; make one with: clearbench run {task}"
        )


def leaderboard(
    task: str | Path | TaskCard,
    *,
    metric: str = "auc",
    published: bool = True,
    store: str | Path | None = None,
    run: str | Sequence[str] | None = None,
    encoders: Sequence[str] | None = None,
    n_boot: int = stats.DEFAULT_BOOTSTRAP,
    seed: int = stats.DEFAULT_SEED,
    hit_rate: bool = True,
) -> pl.DataFrame:
    """The leaderboard of ``task`` on ``metric``: one row per encoder, as in the paper's tables.

    Each encoder is shown with its newest finished run, unless ``run`` names run ids (one per encoder at
    most) to show instead. ``encoders`` restricts the reproduced rows; ``published`` adds the paper's rows.
    ``n_boot`` bootstrap replicates (seeded by ``seed``) give the CIs and p-values; 0 skips them.
    ``hit_rate`` adds the attention hit-rate columns (:mod:`clearbench.explaining.columns`).
    Raises :class:`NoRuns` when the task has no finished run in the store.
    """
    card = task if isinstance(task, TaskCard) else get_task(task)
    stats.check_metric(metric)
    results = ResultsStore(store)
    run_ids = [run] if isinstance(run, str) else list(run or [])
    records = read_records(results, card.name, run_ids, encoders)
    if not records:
        raise NoRuns(card.name, store)
    extra = published_rows(card.name, metric, list(card.labels)) if published else []
    df = build_table(
        card.name,
        list(card.labels),
        metric,
        records,
        extra,
        current_split=current_split_id(results, card.name),
        n_boot=n_boot,
        seed=seed,
    )
    return with_hit_rates(df, card, store) if hit_rate else df


def leaderboard_overview(
    *, metric: str = "auc", published: bool = True, store: str | Path | None = None
) -> pl.DataFrame:
    """Every task with finished runs side by side: one row per encoder, the average ``metric`` per task.

    Columns: ``metric``, ``encoder``, ``source`` (``reproduced`` or ``published``), ``card``, then for each
    task (in the order of ``clearbench tasks``) ``<task>`` (the average, percent), ``<task> std`` (over
    folds) and ``<task> rank`` (the encoder's rank on that task's board; null when shown apart there, and
    for published rows). Reproduced rows come first, best mean rank first; then the paper's rows.
    :func:`task_columns` gives the task names.
    """
    stats.check_metric(metric)
    boards: dict[str, pl.DataFrame] = {}
    for card in list_tasks():
        try:
            boards[card.name] = leaderboard(
                card, metric=metric, published=published, store=store, n_boot=0, hit_rate=False
            )
        except NoRuns:
            continue
    if not boards:
        raise ClearbenchError(
            f"no finished runs in {store_path(store)}; make one with: clearbench run TASK (see: clearbench tasks)"
        )
    rows: dict[tuple[str, str], dict] = {}
    for task, board in boards.items():
        for r in board.iter_rows(named=True):
            source = "published" if r["group"] == PUBLISHED else "reproduced"
            row = rows.setdefault(
                (source, r["encoder"]), {"metric": metric, "encoder": r["encoder"], "source": source, "card": r["card"]}
            )
            row[task], row[f"{task} std"] = r[AVERAGE], r[f"{AVERAGE} std"]
            row[f"{task} rank"] = r["rank"] if r["group"] == RANKED else None

    def order(row: dict) -> tuple:
        ranks = [rank for t in boards if (rank := row.get(f"{t} rank")) is not None]
        return (row["source"] != "reproduced", sum(ranks) / len(ranks) if ranks else float("inf"))

    schema: dict[str, DType] = {"metric": pl.String, "encoder": pl.String, "source": pl.String, "card": pl.String}
    for task in boards:
        schema.update({task: pl.Float64, f"{task} std": pl.Float64, f"{task} rank": pl.Int64})
    ordered = sorted(rows.values(), key=order)  # stable: published rows keep the paper's order
    return pl.DataFrame([{c: r.get(c) for c in schema} for r in ordered], schema=schema, orient="row")


def task_columns(df: pl.DataFrame) -> list[str]:
    """The task names of an overview, in column order."""
    return [c for c in df.columns[4:] if not c.endswith(" std") and not c.endswith(" rank")]
