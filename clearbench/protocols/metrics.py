"""AUC, AUPRC and F1 per label, their macro average, and the mean +- std over folds (the paper's tables).

Two rules keep the numbers honest:

- The F1 threshold of each label is chosen on the *validation* predictions of the fold
  (:func:`choose_thresholds`) and recorded; the test set never sees a threshold search.
- A label with only one class in an evaluation set has no AUC, AUPRC or F1. It is reported as
  undefined (NaN here, None in stored results), left out of the macro average, and shown as such;
  never as 0.5 or 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
)

from clearbench.mil.train import Predictions
from clearbench.tasks.spec import METRICS

MACRO = "macro"
# Used when a validation set has a single class for a label, so no threshold can be chosen on it.
DEFAULT_THRESHOLD = 0.5


def has_both_classes(y: np.ndarray) -> bool:
    return bool(np.any(y == 1) and np.any(y == 0))


def choose_thresholds(val: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """Per label, the probability cut that maximises F1 on validation; and which labels fell back to 0.5."""
    n_labels = val.prob.shape[1]
    thresholds = np.full(n_labels, DEFAULT_THRESHOLD, dtype=np.float64)
    defaulted = np.ones(n_labels, dtype=bool)
    for j in range(n_labels):
        y, p = val.y_true[:, j], val.prob[:, j]
        if not has_both_classes(y):
            continue
        precision, recall, cuts = precision_recall_curve(y, p)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)[:-1]
        thresholds[j] = float(cuts[int(np.argmax(f1))])
        defaulted[j] = False
    return thresholds, defaulted


def label_metrics(y_true: np.ndarray, prob: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """``{metric: (n_labels,)}``; NaN for a label with a single class in ``y_true``."""
    n_labels = y_true.shape[1]
    out = {m: np.full(n_labels, np.nan) for m in METRICS}
    for j in range(n_labels):
        y, p = y_true[:, j], prob[:, j]
        if not has_both_classes(y):
            continue
        out["auc"][j] = roc_auc_score(y, p)
        out["auprc"][j] = average_precision_score(y, p)
        out["f1"][j] = binary_f1(y == 1, p >= thresholds[j])
    return out


def binary_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of boolean predictions; 0 when nothing is predicted positive (sklearn's ``zero_division=0``).

    Computed directly: sklearn's ``f1_score`` spends most of its time validating its inputs, and the
    protocol calls this once per label, set and fold.
    """
    tp = int(np.count_nonzero(truth & predicted))
    wrong = int(np.count_nonzero(truth != predicted))
    return 2 * tp / (2 * tp + wrong) if tp + wrong else 0.0


def macro_average(values: np.ndarray) -> float:
    """Mean over the labels where the metric is defined; NaN when it is defined for none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


@dataclass
class FoldScores:
    """One fold's metrics on one evaluation set: ``values[metric][label]`` including ``macro``."""

    labels: list[str]
    values: dict[str, dict[str, float]]

    @classmethod
    def compute(cls, labels: Sequence[str], y_true: np.ndarray, prob: np.ndarray, thresholds: np.ndarray) -> FoldScores:
        per_label = label_metrics(y_true, prob, thresholds)
        values = {
            m: {**{name: float(per_label[m][j]) for j, name in enumerate(labels)}, MACRO: macro_average(per_label[m])}
            for m in METRICS
        }
        return cls(list(labels), values)

    def undefined_labels(self) -> list[str]:
        return [name for name in self.labels if math.isnan(self.values["auc"][name])]


@dataclass(frozen=True)
class Summary:
    """Mean and sample std of one metric over the folds where it is defined (``n`` of them)."""

    mean: float
    std: float
    n: int

    @property
    def defined(self) -> bool:
        return self.n > 0


def summarise(folds: Sequence[FoldScores]) -> dict[str, dict[str, Summary]]:
    """``{metric: {label or macro: Summary}}`` over folds, the shape of the paper's tables."""
    if not folds:
        return {}
    names = [*folds[0].labels, MACRO]
    out: dict[str, dict[str, Summary]] = {}
    for m in METRICS:
        out[m] = {}
        for name in names:
            vals = np.array([f.values[m][name] for f in folds], dtype=np.float64)
            vals = vals[~np.isnan(vals)]
            if vals.size == 0:
                out[m][name] = Summary(math.nan, math.nan, 0)
            else:
                std = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
                out[m][name] = Summary(float(vals.mean()), std, int(vals.size))
    return out
