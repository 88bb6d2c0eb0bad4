"""The leaderboard's statistics: weighted metrics, the patient bootstrap and the paired test."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from clearbench.leaderboards import stats
from clearbench.protocols.metrics import FoldScores


def _fold(patients: np.ndarray, y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> stats.FoldPredictions:
    return stats.FoldPredictions(patients, y, prob, prob >= threshold)


def _holdout(n_patients: int = 60, n_labels: int = 3, n_folds: int = 5, signal: float = 1.0, seed: int = 0):
    """Five folds predicting the same test scans (two per patient); ``signal`` separates the classes."""
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i:03d}" for i in range(n_patients)], 2)
    y = (rng.random((len(patients), n_labels)) < 0.4).astype(np.float32)
    folds = []
    for _ in range(n_folds):
        prob = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=y.shape))))
        folds.append(_fold(patients, y, prob))
    return stats.RunPredictions(tuple(folds))


def test_weighted_metrics_equal_sklearn_with_sample_weights() -> None:
    rng = np.random.default_rng(3)
    n, n_patients = 80, 40
    pidx = np.repeat(np.arange(n_patients), 2)
    y = rng.random(n) < 0.35
    score = np.round(rng.random(n) + 0.4 * y, 1)  # rounded: many ties
    pred = score >= 0.6
    weights = rng.integers(0, 3, size=(5, n_patients)).astype(float)
    onehot = stats._onehot(pidx, n_patients)
    auc = stats._weighted_auc(y, score, onehot, weights)
    ap = stats._weighted_ap(y, score, onehot, weights)
    f1 = stats._weighted_f1(y, pred, onehot, weights)
    for b in range(5):
        w = weights[b][pidx]
        assert auc[b] == pytest.approx(roc_auc_score(y, score, sample_weight=w), abs=1e-12)
        assert ap[b] == pytest.approx(average_precision_score(y, score, sample_weight=w), abs=1e-12)
        keep = w > 0
        truth, called = np.repeat(y[keep], w[keep].astype(int)), np.repeat(pred[keep], w[keep].astype(int))
        tp = np.sum(truth & called)
        assert f1[b] == pytest.approx(2 * tp / (2 * tp + np.sum(truth != called)), abs=1e-12)


def test_point_estimate_is_the_mean_over_folds_of_the_macro_metric() -> None:
    run = _holdout()
    for metric in stats.METRIC_NAMES:
        per_fold = [
            FoldScores.compute(["a", "b", "c"], f.y_true, f.prob, np.full(3, 0.5)).values[metric]["macro"]
            for f in run.folds
        ]
        assert stats.point_estimate(run, metric) == pytest.approx(np.mean(per_fold), abs=1e-9)


def test_bootstrap_is_seeded_and_contains_its_estimate() -> None:
    run = _holdout()
    first = stats.bootstrap_ci(run, "auc", n_boot=500, seed=7)
    again = stats.bootstrap_ci(run, "auc", n_boot=500, seed=7)
    other = stats.bootstrap_ci(run, "auc", n_boot=500, seed=8)
    assert (first.low, first.high) == (again.low, again.high)
    assert (first.low, first.high) != (other.low, other.high)
    for metric in stats.METRIC_NAMES:
        ci = stats.bootstrap_ci(run, metric, n_boot=500)
        assert ci.low < ci.estimate < ci.high
        assert ci.n == 500


def test_bootstrap_resamples_patients_not_scans() -> None:
    run = _holdout(n_patients=30)
    weights = stats.bootstrap_weights(run, n_boot=200, seed=0)
    assert weights.shape == (200, 30)  # one weight per patient: both scans of a patient move together
    assert np.all(weights.sum(axis=1) == 30)


def test_nested_cv_resamples_within_each_outer_fold() -> None:
    rng = np.random.default_rng(0)
    folds = []
    for k in range(5):
        patients = np.array([f"f{k}p{i}" for i in range(8 + k)])
        y = (rng.random((len(patients), 1)) < 0.5).astype(np.float32)
        folds.append(_fold(patients, y, rng.random((len(patients), 1))))
    run = stats.RunPredictions(tuple(folds))
    weights = stats.bootstrap_weights(run, n_boot=100, seed=0)
    patients = run.patients()
    for k, fold in enumerate(folds):
        cols = np.searchsorted(patients, fold.patient_ids)
        assert np.all(weights[:, cols].sum(axis=1) == 8 + k)  # every fold keeps its size in every replicate


def test_paired_test_identical_better_and_refused() -> None:
    run = _holdout(signal=0.3)
    same = stats.paired_test(run, run, "auc", n_boot=1000)
    assert same.p_value == pytest.approx(1.0)
    assert same.difference == 0.0

    better = stats.RunPredictions(
        tuple(_fold(f.patient_ids, f.y_true, np.clip(f.y_true * 0.6 + f.prob * 0.4, 0, 1)) for f in run.folds)
    )
    for metric in stats.METRIC_NAMES:
        result = stats.paired_test(better, run, metric, n_boot=1000)
        assert result.difference > 0
        assert result.p_value < 0.01
        assert result.low > 0

    fewer = stats.RunPredictions(tuple(_fold(f.patient_ids[2:], f.y_true[2:], f.prob[2:]) for f in run.folds))
    with pytest.raises(stats.DifferentTestSets, match="tested on 59 patients, 59 of them among the 60"):
        stats.paired_test(fewer, run, "auc")
    shuffled = stats.RunPredictions(run.folds[:4])
    with pytest.raises(stats.DifferentTestSets, match="other folds"):
        stats.paired_test(shuffled, run, "auc")


def test_unknown_metric_is_refused() -> None:
    with pytest.raises(Exception, match="unknown metric 'acc'; valid: auc, auprc, f1"):
        stats.bootstrap_ci(_holdout(), "acc")
