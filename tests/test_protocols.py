"""Splits: grouped by patient in every protocol and fold, stratified where the labels allow, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from clearbench.errors import ClearbenchError
from clearbench.protocols.splits import Fold, assert_patient_disjoint, make_folds
from clearbench.tasks.spec import ProtocolSpec


def _cohort(n_patients: int = 60, n_labels: int = 3, seed: int = 0):
    """Patients with 1-4 scans each and patient-correlated labels."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 5, n_patients)
    patients = np.repeat([f"P{i:03d}" for i in range(n_patients)], counts)
    base = rng.random((n_patients, n_labels)) < 0.35
    y = np.repeat(base, counts, axis=0).astype(np.float32)
    y[rng.random(y.shape) < 0.1] = 0  # scans of a positive patient may be negative
    rng.shuffle(idx := np.arange(len(patients)))
    return list(patients[idx]), y[idx]


PROTOCOLS = [
    ProtocolSpec("holdout+kfold", folds=5, test_fraction=0.2, seed=0),
    ProtocolSpec("holdout+kfold", folds=3, test_fraction=0.3, seed=1),
    ProtocolSpec("nested-kfold", folds=5, val_fraction=0.2, seed=0),
    ProtocolSpec("nested-kfold", folds=4, val_fraction=0.25, seed=2),
]


@pytest.mark.parametrize("n_labels", [1, 3])
@pytest.mark.parametrize("spec", PROTOCOLS, ids=lambda s: f"{s.kind}-{s.folds}")
def test_no_patient_in_two_roles_in_any_fold(spec: ProtocolSpec, n_labels: int) -> None:
    patients, y = _cohort(n_labels=n_labels)
    folds = make_folds(spec, patients, y)
    pid = np.asarray(patients)
    assert len(folds) == spec.folds
    for fold in folds:
        train, val, test = set(pid[fold.train]), set(pid[fold.val]), set(pid[fold.test])
        assert train and val and test
        assert not (train & val) and not (train & test) and not (val & test)
        # every scan has exactly one role
        assert sorted(np.concatenate([fold.train, fold.val, fold.test]).tolist()) == list(range(len(pid)))


def test_holdout_kfold_shares_one_test_set_and_partitions_the_rest() -> None:
    patients, y = _cohort()
    folds = make_folds(PROTOCOLS[0], patients, y)
    test = folds[0].test
    assert all(np.array_equal(f.test, test) for f in folds)
    n_test_patients = len(set(np.asarray(patients)[test]))
    assert n_test_patients == round(0.2 * 60)
    vals = np.concatenate([f.val for f in folds])
    assert sorted(vals.tolist()) == sorted(set(range(len(patients))) - set(test.tolist()))


def test_nested_kfold_uses_each_outer_fold_as_test_once() -> None:
    patients, y = _cohort()
    folds = make_folds(PROTOCOLS[2], patients, y)
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests.tolist()) == list(range(len(patients)))


def test_folds_are_stratified_on_patient_labels() -> None:
    patients, y = _cohort(n_patients=200, n_labels=3, seed=3)
    folds = make_folds(ProtocolSpec("holdout+kfold", folds=5, seed=0), patients, y)
    overall = y.mean(axis=0)
    for fold in folds:
        assert fold.stratified
        assert np.all(np.abs(y[fold.val].mean(axis=0) - overall) < 0.1)
        assert np.all(np.abs(y[fold.test].mean(axis=0) - overall) < 0.1)


def test_binary_label_too_rare_to_stratify_falls_back_and_records_it() -> None:
    patients = [f"P{i}" for i in range(20)]
    y = np.zeros((20, 1), dtype=np.float32)
    y[:3] = 1  # 3 positive patients < 5 folds
    folds = make_folds(ProtocolSpec("nested-kfold", folds=5), patients, y)
    assert not any(f.stratified for f in folds)
    assert_patient_disjoint(folds, patients)


def test_same_seed_same_folds_other_seed_other_folds() -> None:
    patients, y = _cohort()
    a = make_folds(PROTOCOLS[0], patients, y)
    b = make_folds(PROTOCOLS[0], patients, y)
    c = make_folds(ProtocolSpec("holdout+kfold", folds=5, seed=9), patients, y)
    assert all(np.array_equal(x.val, z.val) and np.array_equal(x.test, z.test) for x, z in zip(a, b, strict=True))
    assert not np.array_equal(a[0].test, c[0].test)


def test_official_test_split_keeps_whole_patients_in_test() -> None:
    patients = ["A", "A", "B", "C", "C", "D", "E", "F", "G", "H"]
    splits = ["test", "train", "train", "val", "val", "train", "test", "train", "train", "val"]
    y = np.array([[i % 2] for i in range(10)], dtype=np.float32)
    folds = make_folds(ProtocolSpec("holdout+kfold", folds=2, test_split="test"), patients, y, splits)
    test_patients = {patients[i] for i in folds[0].test}
    assert test_patients == {"A", "E"}  # A's train-split scan follows its patient into test
    assert_patient_disjoint(folds, patients)


def test_leak_detector_catches_a_shared_patient() -> None:
    bad = Fold(0, np.array([0, 1]), np.array([2]), np.array([3]))
    with pytest.raises(AssertionError, match="P1"):
        assert_patient_disjoint([bad], ["P0", "P1", "P1", "P2"])


def test_too_few_patients_is_a_clear_error() -> None:
    with pytest.raises(ClearbenchError, match="at least"):
        make_folds(ProtocolSpec("nested-kfold", folds=5), ["a", "b", "c"], np.zeros((3, 1)))


@pytest.mark.parametrize("n_labels", [1, 3, 8])
@pytest.mark.parametrize(
    "spec", [ProtocolSpec("nested-kfold", folds=5), ProtocolSpec("holdout+kfold", folds=5)], ids=lambda s: s.kind
)
def test_smallest_cohorts_the_protocol_accepts_split_into_non_empty_roles(spec: ProtocolSpec, n_labels: int) -> None:
    """A stratified hold-out of one patient is impossible (sklearn needs one per class) and iterative
    stratification may hold out nobody on a few patients; both must fall back, not crash or leave a role empty."""
    rng = np.random.default_rng(0)
    smallest = spec.folds + (2 if spec.kind == "nested-kfold" else 1)
    for n in range(smallest, 14):
        for trial in range(10):
            patients = [f"P{i}" for i in range(n)]
            y = (rng.random((n, n_labels)) < rng.uniform(0.1, 0.8)).astype(np.float32)
            y[0], y[1] = 1, 0  # both classes present
            folds = make_folds(spec, patients, y)
            assert len(folds) == spec.folds
            for fold in folds:
                assert len(fold.train) and len(fold.val) and len(fold.test), (n, trial, fold)
            assert_patient_disjoint(folds, patients)


def test_a_hold_out_that_leaves_too_few_patients_for_the_folds_is_a_clear_error() -> None:
    with pytest.raises(ClearbenchError, match="too few patients"):
        make_folds(ProtocolSpec("holdout+kfold", folds=5, test_fraction=0.3), [f"P{i}" for i in range(6)], np.eye(6, 2))
