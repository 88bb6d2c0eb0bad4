"""Leaderboard bootstrap: :func:`clearbench.leaderboards.stats.replicates` against a loop over sklearn.

One run's test predictions (holdout+kfold: every fold predicts the same scans, two per patient) are
resampled by patient, ``--boot`` times:

- **sklearn**: for each replicate, each fold and each label, ``roc_auc_score`` / ``average_precision_score``
  with the scans' draw counts as ``sample_weight``; the macro over labels, the mean over folds.
- **clearbench**: the same numbers for all replicates at once, as matrix products over patient weights.

Both get the same draws; the script checks that they agree and prints seconds and the ratio (how many
times faster clearbench is). The sklearn side is timed on ``--sklearn-boot`` replicates and scaled, since
it grows linearly with them. Rounds are interleaved so that load on a shared machine hits both alike.

    .venv/bin/python benchmarks/bench_bootstrap.py                       # 150 patients, 8 labels, 1000 replicates
    .venv/bin/python benchmarks/bench_bootstrap.py --patients 300 --boot 2000
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from clearbench.leaderboards import stats

SKLEARN = {"auc": roc_auc_score, "auprc": average_precision_score}


def make_run(n_patients: int, n_labels: int, n_folds: int, seed: int) -> stats.RunPredictions:
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i:04d}" for i in range(n_patients)], 2)
    y = (rng.random((len(patients), n_labels)) < 0.3).astype(np.float32)
    folds = []
    for _ in range(n_folds):
        prob = 1 / (1 + np.exp(-((2 * y - 1) + rng.normal(size=y.shape))))
        folds.append(stats.FoldPredictions(patients, y, prob, prob >= 0.5))
    return stats.RunPredictions(tuple(folds))


def sklearn_replicates(run: stats.RunPredictions, metric: str, weights: np.ndarray) -> np.ndarray:
    patients = run.patients()
    out = np.empty(len(weights))
    for b, w in enumerate(weights):
        per_fold = []
        for fold in run.folds:
            scan_w = w[np.searchsorted(patients, fold.patient_ids)]
            per_label = [
                SKLEARN[metric](fold.y_true[:, j], fold.prob[:, j], sample_weight=scan_w)
                for j in range(fold.y_true.shape[1])
                if 0 < np.sum(scan_w * fold.y_true[:, j]) < np.sum(scan_w)
            ]
            per_fold.append(np.mean(per_label) if per_label else np.nan)
        out[b] = np.nanmean(per_fold)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--labels", type=int, default=8)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--sklearn-boot", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    run = make_run(args.patients, args.labels, args.folds, seed=0)
    weights = stats.bootstrap_weights(run, args.boot, seed=0)
    print(
        f"{args.patients} patients, {2 * args.patients} scans, {args.labels} labels, {args.folds} folds, {args.boot} replicates"
    )
    for metric in ("auc", "auprc"):
        ours, theirs = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            fast = stats.replicates(run, metric, weights)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                slow = sklearn_replicates(run, metric, weights[: args.sklearn_boot])
            theirs.append((time.perf_counter() - t) * args.boot / args.sklearn_boot)
        assert np.allclose(fast[: args.sklearn_boot], slow, atol=1e-9), f"{metric}: the two disagree"
        a, b = statistics.median(ours), statistics.median(theirs)
        print(
            f"{metric:6s} clearbench {a:7.3f} s   sklearn loop {b:8.2f} s (scaled from {args.sklearn_boot})   ratio {b / a:6.1f}x"
        )


if __name__ == "__main__":
    main()
