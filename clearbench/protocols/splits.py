"""Patient-grouped, stratified splits for the two protocols of the paper (section 4.3).

Every split is made on *patients*, never on scans: a patient's scans all land in the same one of train,
validation and test. Labels are aggregated per patient (a patient is positive for a label when any of
their scans is) and the patients are stratified on them: iterative stratification for multi-label tasks
(Sechidis et al., the ``iterative-stratification`` package), sklearn's stratified splitters for a single
label. When a binary label has fewer patients of a class than folds, stratification is impossible and
the split falls back to a plain seeded shuffle; the fold records that it did.

- ``holdout+kfold`` (tasks 1 and 2): a test set of ``test_fraction`` of the patients (or the dataset's
  official test split), then k-fold CV on the rest; fold k trains on k-1 parts, early-stops and picks
  thresholds on part k, and is evaluated on the common test set.
- ``nested-kfold`` (task 3): k outer folds, each the test set once; the outer-training patients are split
  again into train and validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit
from sklearn.model_selection import KFold, ShuffleSplit, StratifiedKFold, StratifiedShuffleSplit

from clearbench.errors import ClearbenchError
from clearbench.tasks.spec import PROTOCOLS, ProtocolSpec


@dataclass(frozen=True)
class Fold:
    """Scan indices of one fold's three roles, and whether its splits could be stratified."""

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    stratified: bool = True


class _Patients:
    """Scans grouped by patient, with patient-level labels (any positive scan makes a positive patient)."""

    def __init__(self, patient_ids: Sequence[str], y: np.ndarray) -> None:
        self.ids, self.scan_patient = np.unique(np.asarray(patient_ids, dtype=object).astype(str), return_inverse=True)
        y = np.asarray(y, dtype=np.float64).reshape(len(patient_ids), -1)
        self.y = np.zeros((len(self.ids), y.shape[1]), dtype=np.int64)
        np.maximum.at(self.y, self.scan_patient, (y > 0.5).astype(np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def scans_of(self, patients: np.ndarray) -> np.ndarray:
        """Sorted scan indices of the given patient indices."""
        return np.flatnonzero(np.isin(self.scan_patient, patients))


def _can_stratify(y: np.ndarray, n_splits: int) -> bool:
    """Whether a stratified splitter applies: always for multi-label (iterative stratification spreads
    rare labels as well as it can); for one label, when both classes have ``n_splits`` patients."""
    if y.shape[1] > 1:
        return True
    pos = int(y[:, 0].sum())
    return pos >= n_splits and len(y) - pos >= n_splits


def _kfold(y: np.ndarray, k: int, seed: int) -> tuple[list[np.ndarray], bool]:
    """``k`` disjoint parts of ``range(len(y))``, stratified on ``y`` when it allows."""
    x = np.zeros(len(y))
    stratified = _can_stratify(y, k)
    if not stratified:
        splitter = KFold(k, shuffle=True, random_state=seed)
    elif y.shape[1] == 1:
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
    else:
        splitter = MultilabelStratifiedKFold(k, shuffle=True, random_state=seed)
    parts = [np.sort(part) for _, part in splitter.split(x, y[:, 0] if y.shape[1] == 1 else y)]
    return parts, stratified


def _holdout(y: np.ndarray, fraction: float, seed: int, min_rest: int = 1) -> tuple[np.ndarray, np.ndarray, bool]:
    """A seeded (rest, held-out) split of ``range(len(y))``, stratified on ``y`` when it allows.

    ``min_rest`` is how many patients the rest needs (the folds cut from it). On a handful of patients a
    stratified split can be impossible (sklearn needs at least one patient of each class on each side) or
    can miss the requested size (iterative stratification trades size for label balance, down to holding
    out nobody); then the split is a plain seeded shuffle of exactly the requested size.
    """
    x = np.zeros(len(y))
    n_held = round(fraction * len(y))
    if n_held < 1 or len(y) - n_held < min_rest:
        raise ClearbenchError(
            f"cannot hold out {fraction:.0%} of {len(y)} patients and keep at least {min_rest} for training: "
            "too few patients; add patients or change the fraction in the task card's [protocol]"
        )
    stratified = _can_stratify(y, 2) and (y.shape[1] > 1 or min(n_held, len(y) - n_held) >= 2)
    if stratified:
        if y.shape[1] == 1:
            splitter = StratifiedShuffleSplit(1, test_size=n_held, random_state=seed)
        else:
            splitter = MultilabelStratifiedShuffleSplit(1, test_size=n_held, random_state=seed)
        rest, held = next(splitter.split(x, y[:, 0] if y.shape[1] == 1 else y))
        stratified = len(held) >= 1 and len(rest) >= min_rest
    if not stratified:
        rest, held = next(ShuffleSplit(1, test_size=n_held, random_state=seed).split(x))
    return np.sort(rest), np.sort(held), stratified


def holdout_kfold(
    patient_ids: Sequence[str],
    y: np.ndarray,
    spec: ProtocolSpec,
    test_mask: np.ndarray | None = None,
) -> list[Fold]:
    """A common test set, then ``spec.folds``-fold CV on the remaining patients.

    ``test_mask`` (per scan) marks an official test split; a patient with any scan in it is a test patient.
    """
    pats = _Patients(patient_ids, y)
    need_patients(len(pats), spec)
    if test_mask is not None:
        test_pat = np.zeros(len(pats), dtype=bool)
        test_pat[pats.scan_patient[np.asarray(test_mask, dtype=bool)]] = True
        held, rest = np.flatnonzero(test_pat), np.flatnonzero(~test_pat)
        if len(held) == 0 or len(rest) < spec.folds:
            raise ClearbenchError(
                f"official split '{spec.test_split}' gives {len(held)} test and {len(rest)} other patients; "
                f"need at least 1 and {spec.folds}"
            )
        holdout_stratified = True
    else:
        rest, held, holdout_stratified = _holdout(pats.y, spec.test_fraction, spec.seed, min_rest=spec.folds)
    parts, cv_stratified = _kfold(pats.y[rest], spec.folds, spec.seed)
    test = pats.scans_of(held)
    folds = []
    for k, part in enumerate(parts):
        val_pat = rest[part]
        train_pat = np.setdiff1d(rest, val_pat)
        folds.append(
            Fold(k, pats.scans_of(train_pat), pats.scans_of(val_pat), test, holdout_stratified and cv_stratified)
        )
    return folds


def nested_kfold(patient_ids: Sequence[str], y: np.ndarray, spec: ProtocolSpec) -> list[Fold]:
    """``spec.folds`` outer folds, each the test set once; the rest split into train and validation."""
    pats = _Patients(patient_ids, y)
    need_patients(len(pats), spec)
    outer, outer_stratified = _kfold(pats.y, spec.folds, spec.seed)
    all_patients = np.arange(len(pats))
    folds = []
    for k, test_pat in enumerate(outer):
        inner = np.setdiff1d(all_patients, test_pat)
        train_part, val_part, inner_stratified = _holdout(pats.y[inner], spec.val_fraction, spec.seed + 1 + k)
        folds.append(
            Fold(
                k,
                pats.scans_of(inner[train_part]),
                pats.scans_of(inner[val_part]),
                pats.scans_of(test_pat),
                outer_stratified and inner_stratified,
            )
        )
    return folds


def make_folds(
    spec: ProtocolSpec,
    patient_ids: Sequence[str],
    y: np.ndarray,
    splits: Sequence[str | None] | None = None,
) -> list[Fold]:
    """The folds of ``spec`` for scans with these patients, labels and (for an official split) split names."""
    if spec.kind == "holdout+kfold":
        test_mask = None
        if spec.test_split is not None:
            if splits is None:
                raise ClearbenchError(
                    f"the protocol names official test split '{spec.test_split}' but the records have no splits"
                )
            test_mask = np.array([s == spec.test_split for s in splits], dtype=bool)
        folds = holdout_kfold(patient_ids, y, spec, test_mask)
    elif spec.kind == "nested-kfold":
        folds = nested_kfold(patient_ids, y, spec)
    else:
        raise ClearbenchError(f"unknown protocol '{spec.kind}': use one of {', '.join(PROTOCOLS)}")
    assert_patient_disjoint(folds, patient_ids)
    return folds


def assert_patient_disjoint(folds: Sequence[Fold], patient_ids: Sequence[str]) -> None:
    """Raise if any patient has scans in two of train, validation and test of any fold."""
    pid = np.asarray(patient_ids, dtype=object)
    for fold in folds:
        roles = {"train": set(pid[fold.train]), "val": set(pid[fold.val]), "test": set(pid[fold.test])}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = roles[a] & roles[b]
            if shared:
                raise AssertionError(f"fold {fold.index}: patients {sorted(shared)[:5]} are in both {a} and {b}")


def min_patients(spec: ProtocolSpec) -> int:
    """The fewest patients ``spec`` can split: one per fold and a test patient (holdout), or one per
    outer fold and two for each inner train/validation split (nested)."""
    return spec.folds + (2 if spec.kind == "nested-kfold" else 1)


def need_patients(n: int, spec: ProtocolSpec, where: str = "") -> None:
    """Raise unless ``n`` labelled patients are enough for ``spec``; ``where`` says whose patients they are."""
    minimum = min_patients(spec)
    if n < minimum:
        raise ClearbenchError(f"protocol {spec.kind} needs at least {minimum} patients with labels, found {n}{where}")
