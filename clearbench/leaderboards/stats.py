"""Patient-level bootstrap intervals and paired tests on stored test predictions. No I/O.

Why patients and not scans: a patient's scans are correlated (same anatomy, same scanner, often the
same lesions), so resampling scans would treat one patient's three scans as three independent pieces of
evidence and give intervals that are too narrow. Every replicate draws *patients* with replacement, and
each scan carries the count of its patient as its weight.

What is resampled follows the protocol, so that a replicate is computed exactly like the point estimate
(the mean over folds of each fold's macro-averaged metric, the number in the paper's tables):

- ``holdout+kfold``: every fold's model predicts the same test patients. One draw of patients is
  applied to every fold; the metric is computed per fold on the weighted predictions and averaged.
- ``nested-kfold``: each patient is tested in exactly one outer fold. Patients are drawn *within* their
  fold (a stratified bootstrap), so every fold keeps its size and the average stays an average over
  the same five folds. In general a patient's stratum is the set of folds that test it, which covers
  both protocols (and anything in between) with one rule.

Metrics on weighted predictions are computed for all replicates at once (``(B, n)`` weight matrices),
with the same definitions as :mod:`clearbench.protocols.metrics`: AUC with ties counted one half
(sklearn's ``roc_auc_score``), AUPRC as sklearn's ``average_precision_score``, F1 from the thresholded
predictions stored with the fold (thresholds were chosen on validation). A label with one class in a
replicate is undefined there and left out of that replicate's macro average, as in the point estimate.

The paired test resamples the same patients for both rows and looks at the distribution of the
difference of their averages; its two-sided p-value is twice the smaller tail beyond zero (with the
usual +1 correction), so identical predictions give p = 1 and a difference that never changes sign in
B replicates gives p = 2 / (B + 1).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from clearbench.errors import ClearbenchError

METRIC_NAMES = ("auc", "auprc", "f1")
DEFAULT_BOOTSTRAP = 1000
DEFAULT_SEED = 0


class DifferentTestSets(ClearbenchError):
    """Two rows were not tested on the same patients (in the same folds), so they cannot be paired."""


@dataclass(frozen=True)
class FoldPredictions:
    """One fold's test predictions: per scan its patient, true labels, probabilities and thresholded calls."""

    patient_ids: np.ndarray  # (n,) str
    y_true: np.ndarray  # (n, L) 0/1
    prob: np.ndarray  # (n, L)
    pred: np.ndarray  # (n, L) bool


@dataclass(frozen=True)
class RunPredictions:
    """The test predictions of every fold of one run."""

    folds: tuple[FoldPredictions, ...]

    def patients(self) -> np.ndarray:
        """Every tested patient, sorted."""
        return np.unique(np.concatenate([f.patient_ids for f in self.folds]).astype(str))

    def strata(self) -> dict[str, frozenset[int]]:
        """Per patient, the folds that test it (the bootstrap resamples within groups of equal strata)."""
        out: dict[str, set[int]] = {}
        for k, fold in enumerate(self.folds):
            for p in np.unique(fold.patient_ids.astype(str)):
                out.setdefault(str(p), set()).add(k)
        return {p: frozenset(ks) for p, ks in out.items()}


def why_unpaired(a: RunPredictions, b: RunPredictions) -> str | None:
    """Why ``a`` and ``b`` cannot be paired (another set of patients, or patients in other folds), or None."""
    pa_, pb = set(a.strata()), set(b.strata())
    if pa_ != pb:
        shared = len(pa_ & pb)
        return f"tested on {len(pa_)} patients, {shared} of them among the {len(pb)} test patients of the other row"
    if a.strata() != b.strata() or len(a.folds) != len(b.folds):
        return "tested on the same patients but in other folds"
    return None


def bootstrap_weights(test: RunPredictions, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED) -> np.ndarray:
    """``(n_boot, n_patients)`` draw counts of the patients of :meth:`RunPredictions.patients`.

    Depends only on the patients, their strata, ``n_boot`` and ``seed``: two runs on the same test set get
    the same draws, which is what makes the paired test paired.
    """
    patients = test.patients()
    strata = test.strata()
    keys = sorted({tuple(sorted(s)) for s in strata.values()})
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_boot, len(patients)), dtype=np.float64)
    of_patient = [tuple(sorted(strata[str(p)])) for p in patients]
    for key in keys:
        members = np.flatnonzero([k == key for k in of_patient])
        m = len(members)
        counts[:, members] = rng.multinomial(m, np.full(m, 1.0 / m), size=n_boot)
    return counts


def _onehot(pidx: np.ndarray, n_patients: int) -> np.ndarray:
    """``(n, P)``: scan i belongs to patient ``pidx[i]``."""
    out = np.zeros((len(pidx), n_patients))
    out[np.arange(len(pidx)), pidx] = 1.0
    return out


def _defined(value: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray) -> np.ndarray:
    """``value`` where the replicate holds both classes, else NaN (the metric is undefined there)."""
    return np.where((n_pos > 0) & (n_neg > 0), value, np.nan)


def _weighted_auc(y: np.ndarray, score: np.ndarray, onehot: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUC under each row of patient weights ``w`` (B, P): P(positive scores above negative), ties one half.

    With scan weights equal to their patient's count, the weighted numerator is the quadratic form
    ``w K w`` where ``K[q, p]`` sums, over q's positive and p's negative scans, 1 for a correctly ordered
    pair and 1/2 for a tie; so every replicate costs one row of a matrix product.
    """
    sp, sn = score[y], score[~y]
    pairs = (sp[:, None] > sn[None, :]) + 0.5 * (sp[:, None] == sn[None, :])
    k = onehot[y].T @ pairs @ onehot[~y]
    n_pos, n_neg = w @ onehot[y].sum(axis=0), w @ onehot[~y].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _defined(((w @ k) * w).sum(axis=1) / (n_pos * n_neg), n_pos, n_neg)


def _weighted_ap(y: np.ndarray, score: np.ndarray, onehot: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision under each row of ``w``: each positive's weight times the precision at its score.

    Precision at a score s counts every scan scoring at least s, so tied scores share one threshold, as
    in sklearn's ``average_precision_score``.
    """
    sp = score[y]
    true_above = w @ (onehot[y].T @ (sp[:, None] >= sp[None, :]))
    all_above = w @ (onehot.T @ (score[:, None] >= sp[None, :]))
    own = w[:, onehot[y].argmax(axis=1)]  # each positive's own patient weight
    n_pos, n_neg = w @ onehot[y].sum(axis=0), w @ onehot[~y].sum(axis=0)
    precision = np.divide(true_above, all_above, out=np.zeros_like(true_above), where=all_above > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _defined((own * precision).sum(axis=1) / n_pos, n_pos, n_neg)


def _weighted_f1(y: np.ndarray, pred: np.ndarray, onehot: np.ndarray, w: np.ndarray) -> np.ndarray:
    """F1 of the stored thresholded calls under each row of ``w``; 0 when nothing is called positive."""
    tp = w @ (onehot.T @ (y & pred))
    wrong = w @ (onehot.T @ (y != pred))
    n_pos, n_neg = w @ onehot[y].sum(axis=0), w @ onehot[~y].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _defined(np.where(2 * tp + wrong > 0, 2 * tp / (2 * tp + wrong), 0.0), n_pos, n_neg)


_METRIC_FUNCTIONS = {"auc": _weighted_auc, "auprc": _weighted_ap, "f1": _weighted_f1}


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": undefined stays NaN
        return np.nanmean(x, axis=axis)


def check_metric(metric: str) -> str:
    if metric not in METRIC_NAMES:
        raise ClearbenchError(f"unknown metric '{metric}'; valid: {', '.join(METRIC_NAMES)}")
    return metric


def fold_label_scores(fold: FoldPredictions, pidx: np.ndarray, metric: str, weights: np.ndarray) -> np.ndarray:
    """``(B, L)``: the metric of every label of one fold under each row of patient ``weights`` (B, P).

    ``pidx[i]`` is the column of ``weights`` that holds scan i's patient.
    """
    fn = _METRIC_FUNCTIONS[check_metric(metric)]
    onehot = _onehot(pidx, weights.shape[1])
    y = np.asarray(fold.y_true) > 0.5
    second = np.asarray(fold.pred, dtype=bool) if metric == "f1" else np.asarray(fold.prob, dtype=np.float64)
    return np.stack([fn(y[:, j], second[:, j], onehot, weights) for j in range(y.shape[1])], axis=1)


def replicates(test: RunPredictions, metric: str, weights: np.ndarray) -> np.ndarray:
    """``(B,)``: the average (mean over folds of the macro over labels) under each row of patient ``weights``.

    ``weights`` is indexed like :meth:`RunPredictions.patients`; a row of ones gives the point estimate.
    """
    patients = test.patients()
    per_fold = []
    # Products of a few hundred columns gain nothing from BLAS threads and lose a lot on a busy machine.
    with threadpool_limits(1, user_api="blas"):
        for fold in test.folds:
            pidx = np.searchsorted(patients, np.asarray(fold.patient_ids, dtype=str))
            per_fold.append(_nanmean(fold_label_scores(fold, pidx, metric, weights), axis=1))
    return _nanmean(np.stack(per_fold, axis=1), axis=1)


def point_estimate(test: RunPredictions, metric: str) -> float:
    """The unresampled average: equals the mean over folds of the stored per-fold macro metric."""
    return float(replicates(test, metric, np.ones((1, len(test.patients()))))[0])


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval around ``estimate`` from ``n`` defined replicates."""

    estimate: float
    low: float
    high: float
    n: int
    level: float


def interval(reps: np.ndarray, estimate: float, level: float = 0.95) -> Interval:
    """Percentile interval of the defined replicates; NaN bounds when none is defined."""
    finite = reps[np.isfinite(reps)]
    if finite.size == 0:
        return Interval(estimate, float("nan"), float("nan"), 0, level)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high), int(finite.size), level)


def bootstrap_ci(
    test: RunPredictions, metric: str, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED, level: float = 0.95
) -> Interval:
    """Seeded patient-level bootstrap interval of the average ``metric`` of one run."""
    reps = replicates(test, metric, bootstrap_weights(test, n_boot, seed))
    return interval(reps, point_estimate(test, metric), level)


@dataclass(frozen=True)
class PairedTest:
    """``a`` minus ``b`` on the same patients: the observed difference, its interval, and the p-value."""

    difference: float
    low: float
    high: float
    p_value: float
    n: int


def paired_p_value(reps_a: np.ndarray, reps_b: np.ndarray) -> tuple[float, int]:
    """Two-sided bootstrap p-value of ``a - b`` != 0 from replicates drawn on the same patients."""
    d = reps_a - reps_b
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan"), 0
    tail = min(int(np.count_nonzero(d <= 0)), int(np.count_nonzero(d >= 0)))
    return min(1.0, 2 * (tail + 1) / (d.size + 1)), int(d.size)


def paired_test(
    a: RunPredictions,
    b: RunPredictions,
    metric: str,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> PairedTest:
    """Paired bootstrap of the difference of the average ``metric`` of ``a`` and ``b``.

    Raises :class:`DifferentTestSets` unless both were tested on the same patients in the same folds.
    """
    why = why_unpaired(a, b)
    if why is not None:
        raise DifferentTestSets(f"cannot pair the two rows: {why}")
    weights = bootstrap_weights(a, n_boot, seed)
    ra, rb = replicates(a, metric, weights), replicates(b, metric, weights)
    p, n = paired_p_value(ra, rb)
    diff = interval(ra - rb, point_estimate(a, metric) - point_estimate(b, metric), level)
    return PairedTest(diff.estimate, diff.low, diff.high, p, n)
