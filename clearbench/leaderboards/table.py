"""Build a task's leaderboard (a polars DataFrame) from run records and published rows.

Rows are encoders in three groups, in this order:

- ``ranked``: reproduced runs tested on the same patients (in the same folds), ranked by their average;
  each has a bootstrap CI and a paired p-value against the best of them;
- ``apart``: reproduced runs that cannot be compared with the ranked ones, with the reason (another
  test set, a split that is no longer the task's, folds missing, other labels); they get a CI on their
  own test set, but never a rank or a p-value;
- ``published``: the paper's rows, marked as such, never ranked against reproduced ones.

Columns, in order (``<label>`` stands for each label of the task card, in the card's order):

=====================  ===========================================================================
task, metric           the task name and the metric of every value column (auc, auprc or f1)
encoder                the encoder (a published row: the paper's row name)
source                 ``reproduced`` or ``published``
group                  ``ranked``, ``apart`` or ``published``
reason                 why a row is apart; null otherwise
<label>, <label> std   mean and standard deviation over folds of the label's test metric, percent
average, average std   the same for the macro average over labels (the paper's "Average")
hit_rate, hit_rate std  attention hit rate (share of attention within ±k slices of a key slice), mean and std
                       over folds, percent; null without attention or key slices (added by ``leaderboard``,
                       see :mod:`clearbench.explaining.columns`)
hit_chance             what uniform attention would score on the same scans, percent
ci_low, ci_high        patient-level bootstrap 95% CI of ``average`` on the test predictions, percent
p_value                paired bootstrap test of ``average`` against the best ranked row; null for that
                       row and for rows outside the ranked group
rank                   1 = best average among ranked rows; null outside the ranked group
n_test_scans           test scans with predictions (over all folds)
n_test_patients        test patients (over all folds)
n_folds                folds with stored results
n_missing              scans of the task's split that this encoder had no embeddings for (null when
                       the run predates stored splits); null for published rows
run_id, config_hash    the run shown, and its configuration hash (``clearbench run`` reuses folds by it)
split_id               the stored split the run used; null when it predates stored splits
published_in           the paper's table for a published row (e.g. "Table 1"); null otherwise
card                   encoder card name (for a published row, the card whose paper_name it is)
weights_sha256         sha256 of the encoder's weights file, when one was read
clearbench_version     the clearbench that made the run
finished_at            when the run finished (UTC)
=====================  ===========================================================================

:func:`label_columns` gives the ``<label>`` names of a leaderboard; :func:`marks` which cells renderers
set in bold (best) and underlined (second best), per group, as the paper does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from clearbench.errors import ClearbenchError
from clearbench.leaderboards import stats
from clearbench.leaderboards.published import AVERAGE, PublishedRow
from clearbench.leaderboards.records import RunRecord

RANKED, APART, PUBLISHED = "ranked", "apart", "published"
REPRODUCED = "reproduced"
_HEAD = ["task", "metric", "encoder", "source", "group", "reason"]
# A column type as polars takes it: a class (pl.Float64) or an instance (pl.Datetime("us", "UTC")).
DType = pl.DataType | type[pl.DataType]
_TAIL_TYPES: dict[str, DType] = {
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "p_value": pl.Float64,
    "rank": pl.Int64,
    "n_test_scans": pl.Int64,
    "n_test_patients": pl.Int64,
    "n_folds": pl.Int64,
    "n_missing": pl.Int64,
    "run_id": pl.String,
    "config_hash": pl.String,
    "split_id": pl.String,
    "published_in": pl.String,
    "card": pl.String,
    "weights_sha256": pl.String,
    "clearbench_version": pl.String,
    "finished_at": pl.Datetime("us", "UTC"),
}


def schema(labels: Sequence[str]) -> dict[str, DType]:
    """The leaderboard's columns and types for a task with ``labels``."""
    clash = sorted(set(labels) & {*_HEAD, AVERAGE, *_TAIL_TYPES})
    if clash:
        raise ClearbenchError(
            f"task label(s) {', '.join(clash)} clash with leaderboard column names; rename them in the task card"
        )
    out: dict[str, DType] = {c: pl.String for c in _HEAD}
    for name in [*labels, AVERAGE]:
        out[name] = pl.Float64
        out[f"{name} std"] = pl.Float64
    out.update(_TAIL_TYPES)
    return out


def label_columns(df: pl.DataFrame) -> list[str]:
    """The per-label value columns of a leaderboard, in the task card's order (``average`` excluded)."""
    cols = df.columns
    return cols[cols.index("reason") + 1 : cols.index(AVERAGE) : 2]


def _over_folds(values: np.ndarray) -> tuple[float | None, float | None]:
    """Mean and sample std in percent over the folds where the value is defined (std 0 for one fold)."""
    v = values[~np.isnan(values)]
    if v.size == 0:
        return None, None
    return 100 * float(v.mean()), 100 * (float(v.std(ddof=1)) if v.size > 1 else 0.0)


def _pct(x: float) -> float | None:
    return None if x is None or math.isnan(x) else 100 * x


def _record_row(rec: RunRecord, task: str, metric: str, labels: Sequence[str]) -> dict:
    row: dict = {"task": task, "metric": metric, "encoder": rec.encoder, "source": REPRODUCED}
    fm = rec.fold_metrics[metric]
    col = {name: j for j, name in enumerate([*rec.labels, "macro"])}
    for name in labels:
        row[name], row[f"{name} std"] = _over_folds(fm[:, col[name]]) if name in col else (None, None)
    row[AVERAGE], row[f"{AVERAGE} std"] = _over_folds(fm[:, col["macro"]])
    row.update(
        n_test_scans=rec.n_test_scans,
        n_test_patients=rec.n_test_patients,
        n_folds=rec.n_folds,
        n_missing=rec.n_missing,
        run_id=rec.run_id,
        config_hash=rec.config_hash,
        split_id=rec.split_id,
        card=rec.card,
        weights_sha256=rec.weights_sha256,
        clearbench_version=rec.clearbench_version,
        finished_at=rec.finished_at,
    )
    return row


def _own_reason(rec: RunRecord, task: str, labels: Sequence[str], current_split: str | None) -> str | None:
    """Why a run cannot join the ranked group whatever the others are, or None."""
    if rec.n_folds == 0:
        return "none of its folds is stored any more (deleted by a later --rerun of the same configuration)"
    if rec.expected_folds is not None and rec.n_folds < rec.expected_folds:
        return f"only {rec.n_folds} of its {rec.expected_folds} folds are stored"
    if sorted(rec.labels) != sorted(labels):
        return f"made with labels {', '.join(rec.labels)}, not the task card's"
    if current_split is not None and rec.split_id is not None and rec.split_id != current_split:
        return (
            f"ran on split {rec.split_id}, not the task's current split {current_split}; "
            f"rerun it with: clearbench run {task} -e {rec.encoder}"
        )
    return None


def _signature(rec: RunRecord) -> tuple:
    return tuple(sorted((p, tuple(sorted(ks))) for p, ks in rec.predictions.strata().items()))


def _reference(candidates: list[RunRecord]) -> RunRecord | None:
    """A run of the largest group of candidates sharing a test set.

    Ties go to the group tested on more patients (an encoder that lacks a test scan loses, not the split),
    then to the group with the newest run.
    """
    groups: dict[tuple, list[RunRecord]] = {}
    for rec in candidates:
        groups.setdefault(_signature(rec), []).append(rec)
    if not groups:
        return None

    def preference(g: list[RunRecord]) -> tuple[int, int, float]:
        newest = max((r.finished_at.timestamp() for r in g if r.finished_at is not None), default=0.0)
        return len(g), g[0].n_test_patients, newest

    best = max(groups.values(), key=preference)
    return best[0]


def _published_row(p: PublishedRow, task: str, metric: str, labels: Sequence[str]) -> dict:
    row: dict = {"task": task, "metric": metric, "encoder": p.encoder, "source": "published", "group": PUBLISHED}
    for name in [*labels, AVERAGE]:
        row[name], row[f"{name} std"] = p.values.get(name, (None, None))
    row.update(published_in=p.source, card=p.card)
    return row


def build_table(
    task: str,
    labels: Sequence[str],
    metric: str,
    records: Sequence[RunRecord],
    published: Sequence[PublishedRow] = (),
    *,
    current_split: str | None = None,
    n_boot: int = stats.DEFAULT_BOOTSTRAP,
    seed: int = stats.DEFAULT_SEED,
) -> pl.DataFrame:
    """The leaderboard of ``task`` (see the module docstring); ``n_boot = 0`` skips CIs and p-values."""
    stats.check_metric(metric)
    cols = schema(labels)
    rows = {rec.run_id: _record_row(rec, task, metric, labels) for rec in records}
    reasons = {rec.run_id: _own_reason(rec, task, labels, current_split) for rec in records}
    ref = _reference([rec for rec in records if reasons[rec.run_id] is None])
    for rec in records:
        if reasons[rec.run_id] is None and ref is not None:
            why = stats.why_unpaired(rec.predictions, ref.predictions)
            if why is not None:
                reasons[rec.run_id] = why.replace("the other row", "the ranked rows")
        rows[rec.run_id]["group"] = RANKED if reasons[rec.run_id] is None else APART
        rows[rec.run_id]["reason"] = reasons[rec.run_id]

    ranked = [rec for rec in records if rows[rec.run_id]["group"] == RANKED]
    estimate = {rec.run_id: rows[rec.run_id][AVERAGE] for rec in records}
    order = sorted(ranked, key=lambda r: -estimate[r.run_id] if estimate[r.run_id] is not None else math.inf)
    for i, rec in enumerate(r for r in order if estimate[r.run_id] is not None):
        rows[rec.run_id]["rank"] = i + 1

    if n_boot > 0:
        reps: dict[str, np.ndarray] = {}
        if ranked:
            shared = stats.bootstrap_weights(ranked[0].predictions, n_boot, seed)
            reps.update({rec.run_id: stats.replicates(rec.predictions, metric, shared) for rec in ranked})
        for rec in records:
            if rec.run_id not in reps and rec.predictions.folds:
                own = stats.bootstrap_weights(rec.predictions, n_boot, seed)
                reps[rec.run_id] = stats.replicates(rec.predictions, metric, own)
        for run_id, r in reps.items():
            ci = stats.interval(r, float("nan"))
            rows[run_id]["ci_low"], rows[run_id]["ci_high"] = _pct(ci.low), _pct(ci.high)
        best = order[0] if order and estimate[order[0].run_id] is not None else None
        for rec in ranked:
            if best is not None and rec is not best:
                rows[rec.run_id]["p_value"] = stats.paired_p_value(reps[best.run_id], reps[rec.run_id])[0]

    apart = sorted(
        (rec for rec in records if rows[rec.run_id]["group"] == APART),
        key=lambda r: -estimate[r.run_id] if estimate[r.run_id] is not None else math.inf,
    )
    out = [rows[r.run_id] for r in order] + [rows[r.run_id] for r in apart]
    out += [_published_row(p, task, metric, labels) for p in published]
    return pl.DataFrame([{c: r.get(c) for c in cols} for r in out], schema=cols, orient="row")


def marks(df: pl.DataFrame, value_columns: Sequence[str], group_column: str = "group") -> dict[tuple[int, str], str]:
    """``{(row, column): "best" | "second"}`` per value column, within each ranked or published group.

    Values are compared as displayed (one decimal), so rows that print the same get the same mark; rows
    apart are never marked.
    """
    out: dict[tuple[int, str], str] = {}
    groups = df[group_column].to_list()
    for column in value_columns:
        values = df[column].to_list()
        for group in (RANKED, PUBLISHED, REPRODUCED):
            idx = [
                i for i, g in enumerate(groups) if g == group and values[i] is not None and not math.isnan(values[i])
            ]
            distinct = sorted({round(values[i], 1) for i in idx}, reverse=True)
            # strict=False: a group may have a single distinct level, which gets "best" and no "second".
            for mark, level in zip(("best", "second"), distinct[:2], strict=False):
                if len(idx) < 2:
                    break
                out.update({(i, column): mark for i in idx if round(values[i], 1) == level})
    return out
