"""Does the MIL head train? Two problems with a known answer, each trained with the paper's recipe and with
clearbench's default, against logistic regression on mean-pooled features over the same splits.

- **digits bags**: Ilse et al.'s MNIST-bags set-up built from scikit-learn's bundled 8x8 digits. A bag
  holds 10 +- 2 digit images and is positive if it contains the target digit (9); test bags draw from
  held-out images only. The instance features are the 64 raw pixel values (0..16).
- **synthetic task 1**: a synthetic DeepLesion cohort (``clearbench synth deeplesion --scans 120 --seed
  0``) embedded with hu-hist in a temporary store, labelled and split exactly as ``clearbench run task1``
  labels and splits it (8 location labels, 20% patient hold-out, 5 folds).

For each it prints the test macro AUC (mean over folds) and the attention hit rate: the share of attention
mass on the target-digit instances of positive bags (digits), or on the slices within +-2 of a lesion's
key slice (task 1, the task card's ``hit_rate_k``), with :mod:`clearbench.explaining.hit_rate`; "chance" is
the share a uniform attention would put there.

Run: ``.venv/bin/python benchmarks/bench_mil_sanity.py`` (``--threads``, ``--scans``; a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from clearbench.embedding.pipeline import embed
from clearbench.explaining.hit_rate import hit_rate, near_key_slices
from clearbench.explaining.source import key_slices_by_scan
from clearbench.mil.data import BagSet
from clearbench.mil.train import TrainConfig
from clearbench.problems import ProblemLog
from clearbench.protocols.cv import run_fold
from clearbench.protocols.metrics import label_metrics, macro_average
from clearbench.protocols.splits import Fold, make_folds
from clearbench.scans.registry import open_dataset
from clearbench.scans.synth.deeplesion import write_cohort
from clearbench.store import EmbeddingStore
from clearbench.tasks.card import PAPER_TRAINING, TaskCard
from clearbench.tasks.labels import task_labels
from clearbench.tasks.registry import get_task


@dataclass
class Problem:
    """Bags with their folds, and per instance whether it is a "hit" (target digit, or near a key slice)."""

    name: str
    bags: BagSet
    labels: list[str]
    folds: list[Fold]
    hit: np.ndarray


@dataclass
class Score:
    auc: float
    hit_rate: float | None
    seconds: float


def digits_problem(card: TaskCard, n_bags: int, target: int, seed: int) -> Problem:
    """Bags of 10 +- 2 digits, half of them positive (holding 1 + Binomial(n - 1, 0.1) copies of ``target``).

    The bags' labels are drawn first and split by the card's protocol; only then are images drawn, the test
    bags' from a held-out fifth of the images and the other bags' from the rest, so that no image is seen
    in training and at test time (as Ilse et al. drew test bags from MNIST's test images).
    """
    digits = load_digits()
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.rint(rng.normal(10, 2, n_bags)), 2, None).astype(np.int64)
    y = (rng.random((n_bags, 1)) < 0.5).astype(np.float32)
    ids = [f"bag{i:04d}" for i in range(n_bags)]
    folds = make_folds(card.protocol, ids, y)
    in_test = np.zeros(n_bags, dtype=bool)
    in_test[folds[0].test] = True
    held_out = rng.random(len(digits.target)) < 0.2
    rows, hit = [], []
    for i, n in enumerate(lengths):
        pool = held_out == in_test[i]
        targets = np.flatnonzero(pool & (digits.target == target))
        others = np.flatnonzero(pool & (digits.target != target))
        k = 1 + rng.binomial(n - 1, 0.1) if y[i, 0] else 0
        bag = np.concatenate([rng.choice(targets, k), rng.choice(others, n - k)])
        order = rng.permutation(n)
        rows.append(bag[order])
        hit.append((np.arange(n) < k)[order])
    offsets = np.zeros(n_bags + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    x = digits.data[np.concatenate(rows)].astype(np.float32)
    bags = BagSet.from_arrays(ids, ids, x, offsets, y)
    return Problem(f"digits bags (target {target})", bags, [f"has_{target}"], folds, np.concatenate(hit))


def task1_problem(card: TaskCard, work: Path, n_scans: int, seed: int) -> Problem:
    """Synthetic DeepLesion embedded with hu-hist; labels and folds as ``clearbench run task1`` draws them."""
    root = write_cohort(work / "deeplesion", n_scans, seed)
    store = EmbeddingStore(work / "store")
    embed("hu-hist", "deeplesion", root=root, windows=list(card.windows), store=store, progress=False, workers=1)
    reader = open_dataset("deeplesion", root, problems=ProblemLog())
    records = {r.scan_id: r for r in reader.records()}
    labels = task_labels(card, list(records.values()), reader.label_names)
    raw = store.bags(table="deeplesion__hu-hist", scan_ids=labels.scan_ids, windows=list(card.windows))
    row = labels.index()
    idx = np.array([row[s] for s in raw.scan_ids], dtype=np.int64)
    y = labels.y[idx]
    patients = [labels.patient_ids[i] for i in idx]
    bags = BagSet.from_arrays(raw.scan_ids, patients, raw.vectors, raw.offsets, y)
    keys = key_slices_by_scan(records.values())
    hit = np.zeros(len(raw.vectors), dtype=bool)
    for i, scan_id in enumerate(raw.scan_ids):
        s, e = raw.offsets[i], raw.offsets[i + 1]
        hit[s:e] = near_key_slices(raw.slice_idx[s:e], keys.get(scan_id, ()), k=card.hit_rate_k)
    folds = make_folds(card.protocol, patients, y, [labels.splits[i] for i in idx])
    return Problem(f"synthetic task 1 ({len(bags)} scans, hu-hist)", bags, list(card.labels), folds, hit)


def _macro_auc(y: np.ndarray, prob: np.ndarray) -> float:
    return macro_average(label_metrics(y, prob, np.full(y.shape[1], 0.5))["auc"])


def _pooled(bags: BagSet, index: np.ndarray) -> np.ndarray:
    sub = bags.subset(index)
    sums = torch.zeros(len(sub), sub.dim, dtype=torch.float64).index_add_(
        0, torch.repeat_interleave(torch.arange(len(sub)), sub.lengths), sub.features.double()
    )
    return (sums / sub.lengths.unsqueeze(1)).numpy()


def pooled_logistic(p: Problem) -> Score:
    """Per label, standardised mean-pooled features -> logistic regression fitted on each fold's training bags."""
    start, aucs = time.perf_counter(), []
    y = p.bags.targets.numpy()
    for fold in p.folds:
        scaler = StandardScaler().fit(_pooled(p.bags, fold.train))
        x_train, x_test = scaler.transform(_pooled(p.bags, fold.train)), scaler.transform(_pooled(p.bags, fold.test))
        prob = np.zeros((len(fold.test), y.shape[1]))
        for j in range(y.shape[1]):
            yj = y[fold.train, j]
            if yj.min() == yj.max():
                prob[:, j] = yj[0]
                continue
            prob[:, j] = LogisticRegression(max_iter=2000).fit(x_train, yj).predict_proba(x_test)[:, 1]
        aucs.append(_macro_auc(y[fold.test], prob))
    return Score(float(np.nanmean(aucs)), None, time.perf_counter() - start)


def head(p: Problem, cfg: TrainConfig, card: TaskCard, seed: int) -> Score:
    """The card's slice head trained with ``cfg`` on every fold, as ``clearbench run`` trains it."""
    start, aucs, hits = time.perf_counter(), [], []
    spec = card.head_for("slice")
    for fold in p.folds:
        r = run_fold(p.bags, fold, spec, cfg, p.labels, seed)
        aucs.append(_macro_auc(r.test.y_true, r.test.prob))
        for i, b in enumerate(fold.test):
            s, e = int(p.bags.offsets[b]), int(p.bags.offsets[b + 1])
            rate = hit_rate(r.test.attention_of(i), p.hit[s:e])
            if r.test.y_true[i].any() and rate is not None and rate.n_near:
                hits.append(rate.hit)
    return Score(float(np.nanmean(aucs)), float(np.mean(hits)) if hits else None, time.perf_counter() - start)


def chance_hit_rate(p: Problem) -> float:
    """The hit rate of uniform attention over the positive test bags of the first fold."""
    rates = []
    for b in p.folds[0].test:
        s, e = int(p.bags.offsets[b]), int(p.bags.offsets[b + 1])
        if p.bags.targets[b].any() and p.hit[s:e].any():
            rates.append(p.hit[s:e].mean())
    return float(np.mean(rates))


def _fmt(x: float | None) -> str:
    return "    -" if x is None else f"{x:5.3f}"


def report(p: Problem, scores: dict[str, Score]) -> None:
    ref = scores["logistic regression (pooled)"].auc
    n_train = np.mean([len(f.train) for f in p.folds])
    print(
        f"\n{p.name}: {len(p.bags)} bags, {len(p.folds)} folds, ~{n_train:.0f} training bags per fold; "
        f"chance hit rate {chance_hit_rate(p):.3f}"
    )
    print(f"  {'model':34s} {'AUC':>6s} {'AUC - LR':>9s} {'AUC / LR':>9s} {'hit rate':>9s} {'seconds':>8s}")
    for name, s in scores.items():
        print(
            f"  {name:34s} {s.auc:6.3f} {s.auc - ref:+9.3f} {s.auc / ref:9.3f} {_fmt(s.hit_rate):>9s} {s.seconds:8.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", type=int, default=120, help="synthetic DeepLesion series (task 1)")
    ap.add_argument("--bags", type=int, default=500, help="digits bags")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    card = get_task("task1")
    default = card.train_config()
    recipes: dict[str, Callable[[], TrainConfig]] = {
        "ABMIL, paper recipe": lambda: replace(default, **PAPER_TRAINING),
        "ABMIL, clearbench default": lambda: default,
    }
    t = default
    print(
        f"clearbench default recipe (task card): lr {t.lr:g}, batch {t.batch_size}, epochs {t.max_epochs}, "
        f"patience {t.patience}, standardize {t.standardize}, min steps {t.min_steps}"
    )
    print(f"paper recipe (--paper-recipe): {PAPER_TRAINING}")
    with tempfile.TemporaryDirectory() as tmp:
        problems = [
            digits_problem(card, args.bags, 9, args.seed),
            task1_problem(card, Path(tmp), args.scans, args.seed),
        ]
        for p in problems:
            scores = {"logistic regression (pooled)": pooled_logistic(p)}
            for name, make in recipes.items():
                scores[name] = head(p, make(), card, args.seed)
            report(p, scores)


if __name__ == "__main__":
    main()
