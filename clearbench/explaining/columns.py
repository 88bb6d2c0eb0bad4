"""The attention hit rate as leaderboard columns: ``hit_rate``, ``hit_rate std`` and ``hit_chance`` (percent).

Per reproduced row, from its run's stored test attention and the dataset's key slices, with the task card's
±k: the mean over folds of each fold's mean over its test scans with key slices, the std over folds, and
the chance level (what uniform attention scores on the same scans). Null for published rows, for heads
without attention (volume encoders) and when the dataset's scans have no key slices or its root cannot be
found.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from clearbench.explaining.api import RunHitRate, run_hit_rate
from clearbench.explaining.source import dataset_key_slices, stored_attention
from clearbench.store.results import ResultsStore
from clearbench.tasks.card import TaskCard

HIT_RATE, HIT_RATE_STD, HIT_CHANCE = "hit_rate", "hit_rate std", "hit_chance"


def hit_rates(df: pl.DataFrame, card: TaskCard, store: str | Path | None = None) -> dict[str, RunHitRate | None]:
    """Each reproduced row's hit rate by config hash (None where it cannot be measured).

    The rate does not depend on the metric, so a caller showing several metrics computes it once.
    """
    rates: dict[str, RunHitRate | None] = {}
    results = ResultsStore(store)
    keys: dict[str, tuple[int, ...]] | None = None
    for row in df.select("source", "config_hash").iter_rows(named=True):
        if row["source"] != "reproduced" or not row["config_hash"]:
            continue
        if keys is None:
            keys = dataset_key_slices(card.dataset, None, store)
        rates[row["config_hash"]] = (
            run_hit_rate(
                stored_attention(results, {"config_hash": row["config_hash"]}, key_slices=keys), card.hit_rate_k
            )
            if keys
            else None
        )
    return rates


def with_hit_rates(
    df: pl.DataFrame,
    card: TaskCard,
    store: str | Path | None = None,
    after: str = "average std",
    rates: dict[str, RunHitRate | None] | None = None,
) -> pl.DataFrame:
    """``df`` (a task's leaderboard) with the three hit-rate columns inserted after ``after``; ``rates``
    (from :func:`hit_rates`) saves reading the attention again."""
    if rates is None:
        rates = hit_rates(df, card, store)
    values: dict[str, list[float | None]] = {HIT_RATE: [], HIT_RATE_STD: [], HIT_CHANCE: []}
    for config_hash in df["config_hash"].to_list():
        rate = rates.get(config_hash) if config_hash else None
        values[HIT_RATE].append(100 * rate.hit if rate else None)
        values[HIT_RATE_STD].append(100 * rate.hit_std if rate else None)
        values[HIT_CHANCE].append(100 * rate.chance if rate else None)
    at = df.columns.index(after) + 1
    out = df
    for i, name in enumerate((HIT_RATE, HIT_RATE_STD, HIT_CHANCE)):
        out = out.insert_column(at + i, pl.Series(name, values[name], dtype=pl.Float64))
    return out
