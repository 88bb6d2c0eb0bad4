"""Metrics: thresholds chosen on validation, undefined labels reported as undefined, never 0.5."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from clearbench.mil.train import Predictions
from clearbench.protocols.metrics import (
    MACRO,
    FoldScores,
    binary_f1,
    choose_thresholds,
    label_metrics,
    macro_average,
    summarise,
)


def _preds(y: np.ndarray, p: np.ndarray) -> Predictions:
    return Predictions([f"s{i}" for i in range(len(y))], y, p, None, np.arange(len(y) + 1))


def test_threshold_maximises_f1_on_validation() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((80, 3)) < 0.3).astype(np.float32)
    p = np.clip(0.6 * y + rng.normal(0.2, 0.25, y.shape), 0, 1).astype(np.float32)
    thresholds, defaulted = choose_thresholds(_preds(y, p))
    assert not defaulted.any()
    for j in range(3):
        best = max(f1_score(y[:, j], p[:, j] >= t) for t in np.unique(p[:, j]))
        assert f1_score(y[:, j], p[:, j] >= thresholds[j]) == pytest.approx(best)


def test_single_class_validation_label_falls_back_and_says_so() -> None:
    y = np.array([[0, 1], [0, 0], [0, 1]], dtype=np.float32)
    p = np.array([[0.2, 0.9], [0.7, 0.1], [0.4, 0.8]], dtype=np.float32)
    thresholds, defaulted = choose_thresholds(_preds(y, p))
    assert defaulted.tolist() == [True, False]
    assert thresholds[0] == 0.5


def test_label_with_one_class_in_test_is_undefined_and_left_out_of_the_macro() -> None:
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], dtype=np.float32)  # label b: negatives only
    p = np.array([[0.9, 0.2], [0.1, 0.3], [0.6, 0.1], [0.4, 0.7]], dtype=np.float32)
    scores = FoldScores.compute(["a", "b"], y, p, np.array([0.5, 0.5]))
    for m in ("auc", "auprc", "f1"):
        assert math.isnan(scores.values[m]["b"])
        assert scores.values[m][MACRO] == pytest.approx(scores.values[m]["a"])
    assert scores.values["auc"]["a"] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
    assert scores.undefined_labels() == ["b"]


def test_macro_of_nothing_defined_is_undefined() -> None:
    assert math.isnan(macro_average(np.array([np.nan, np.nan])))
    y = np.ones((3, 1), dtype=np.float32)
    out = label_metrics(y, np.full((3, 1), 0.5, dtype=np.float32), np.array([0.5]))
    assert all(math.isnan(out[m][0]) for m in out)


def test_summary_is_mean_and_sample_std_over_defined_folds() -> None:
    def fold(a_auc: float, b_auc: float) -> FoldScores:
        vals = {
            m: {"a": a_auc, "b": b_auc, MACRO: macro_average(np.array([a_auc, b_auc]))} for m in ("auc", "auprc", "f1")
        }
        return FoldScores(["a", "b"], vals)

    s = summarise([fold(0.8, np.nan), fold(0.9, 0.7), fold(0.7, np.nan)])
    assert s["auc"]["a"].mean == pytest.approx(0.8)
    assert s["auc"]["a"].std == pytest.approx(np.std([0.8, 0.9, 0.7], ddof=1))
    assert s["auc"]["a"].n == 3
    assert s["auc"]["b"].n == 1 and s["auc"]["b"].mean == pytest.approx(0.7) and s["auc"]["b"].std == 0.0
    assert s["auc"][MACRO].mean == pytest.approx(np.mean([0.8, 0.8, 0.7]))

    never = summarise([fold(0.8, np.nan), fold(0.9, np.nan)])["auc"]["b"]
    assert not never.defined and math.isnan(never.mean)


def test_binary_f1_equals_sklearn_including_no_predicted_positive() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        truth = rng.random(40) < rng.random()
        predicted = rng.random(40) < rng.random()
        assert binary_f1(truth, predicted) == pytest.approx(f1_score(truth, predicted, zero_division=0))
    none = np.zeros(10, dtype=bool)
    assert binary_f1(np.arange(10) < 3, none) == 0.0 == f1_score(np.arange(10) < 3, none, zero_division=0)
