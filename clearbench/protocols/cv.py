"""One fold of a protocol on bags in memory: train, choose thresholds on validation, score on test.

The roles are kept apart by construction: :func:`run_fold` gives the training loop the training and
validation bags only (validation loss drives early stopping), chooses the F1 thresholds from the
validation predictions only, and touches the test bags once, after the model is final.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from clearbench.mil.data import BagSet
from clearbench.mil.heads import build_head
from clearbench.mil.train import EpochInfo, Predictions, TrainConfig, TrainResult, fit, predict
from clearbench.protocols.metrics import FoldScores, choose_thresholds
from clearbench.protocols.splits import Fold
from clearbench.tasks.card import HeadSpec


@dataclass
class FoldResult:
    fold: Fold
    seed: int
    train: TrainResult
    thresholds: np.ndarray
    thresholds_defaulted: np.ndarray
    val: Predictions
    test: Predictions
    val_scores: FoldScores
    test_scores: FoldScores
    seconds: float


def fold_seed(seed: int, fold: int) -> int:
    """A distinct, reproducible training seed per fold, derived from the run's seed."""
    return int(np.random.SeedSequence([seed, fold]).generate_state(1)[0])


def run_fold(
    bags: BagSet,
    fold: Fold,
    head: HeadSpec,
    cfg: TrainConfig,
    labels: Sequence[str],
    seed: int,
    on_epoch: Callable[[EpochInfo], None] | None = None,
) -> FoldResult:
    """Train a fresh head on ``fold.train``, early-stopped on ``fold.val``; evaluate on ``fold.test``."""
    start = time.perf_counter()
    n_out = cfg.n_out(len(labels))
    train_bags, val_bags = bags.subset(fold.train), bags.subset(fold.val)
    s = fold_seed(seed, fold.index)
    result = fit(lambda: build_head(head.head, bags.dim, n_out, **head.params), train_bags, val_bags, cfg, s, on_epoch)
    val = predict(result.model, val_bags, cfg)
    thresholds, defaulted = choose_thresholds(val)
    test = predict(result.model, bags.subset(fold.test), cfg)
    return FoldResult(
        fold=fold,
        seed=s,
        train=result,
        thresholds=thresholds,
        thresholds_defaulted=defaulted,
        val=val,
        test=test,
        val_scores=FoldScores.compute(labels, val.y_true, val.prob, thresholds),
        test_scores=FoldScores.compute(labels, test.y_true, test.prob, thresholds),
        seconds=time.perf_counter() - start,
    )
