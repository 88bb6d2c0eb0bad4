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

from clearbench.explaining.api import run_hit_rate
from clearbench.explaining.source import dataset_key_slices, stored_attention
from clearbench.store.results import ResultsStore
from clearbench.tasks.card import TaskCard

HIT_RATE, HIT_RATE_STD, HIT_CHANCE = "hit_rate", "hit_rate std", "hit_chance"


def with_hit_rates(df: pl.DataFrame, card: TaskCard, store: str | Path | None = None, after: str = "average std") -> pl.DataFrame:
    """``df`` (a task's leaderboard) with the three hit-rate columns inserted after ``after``."""
    values: dict[str, list[float | None]] = {HIT_RATE: [], HIT_RATE_STD: [], HIT_CHANCE: []}
    results = ResultsStore(store)
    keys: dict[str, tuple[int, ...]] | None = None
    for row in df.select("source", "config_hash").iter_rows(named=True):
        rate = None
        if row["source"] == "reproduced" and row["config_hash"]:
            if keys is None:
                keys = dataset_key_slices(card.dataset, None, store)
            if keys:
                rate = run_hit_rate(stored_attention(results, {"config_hash": row["config_hash"]}, key_slices=keys), card.hit_rate_k)
        values[HIT_RATE].append(100 * rate.hit if rate else None)
        values[HIT_RATE_STD].append(100 * rate.hit_std if rate else None)
        values[HIT_CHANCE].append(100 * rate.chance if rate else None)
    at = df.columns.index(after) + 1
    out = df
    for i, name in enumerate((HIT_RATE, HIT_RATE_STD, HIT_CHANCE)):
        out = out.insert_column(at + i, pl.Series(name, values[name], dtype=pl.Float64))
    return out
