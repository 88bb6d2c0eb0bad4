"""Attention hit rate against values worked out by hand, and against chance for uniform attention."""

from __future__ import annotations

import numpy as np
import pytest

from clearbench.explaining.hit_rate import hit_rate, near_key_slices, scan_hit_rate, summarise


def test_hand_computed_single_window() -> None:
    # Ten slices, key slice 1, k = 2: slices 0..3 are near (clipped at the bag's start), chance 4/10.
    attention = np.array([0.05, 0.30, 0.15, 0.10] + [0.4 / 6] * 6)
    rate = scan_hit_rate("s", attention, ["lung"] * 10, np.arange(10), [1], k=2)
    assert rate is not None
    assert rate.overall.hit == pytest.approx(0.60)
    assert rate.overall.chance == pytest.approx(0.40)
    assert rate.overall.n_near == 4
    assert rate.overall.lift == pytest.approx(1.5)
    assert rate.windows["lung"].hit == pytest.approx(0.60)


def test_two_windows_share_one_softmax() -> None:
    # Two windows over the same 5 slices, key slice 4 (k = 1: slices 3 and 4 near), one softmax over 10.
    att_abdomen = np.array([0.0, 0.0, 0.1, 0.2, 0.3])  # 0.5 near of 0.6
    att_lung = np.array([0.1, 0.1, 0.1, 0.05, 0.05])  # 0.1 near of 0.4
    rate = scan_hit_rate(
        "s",
        np.concatenate([att_abdomen, att_lung]),
        ["abdomen"] * 5 + ["lung"] * 5,
        np.tile(np.arange(5), 2),
        [4],
        k=1,
    )
    assert rate is not None
    assert rate.overall.hit == pytest.approx(0.6)
    assert rate.overall.chance == pytest.approx(2 / 5)
    assert rate.windows["abdomen"].hit == pytest.approx(0.5 / 0.6)
    assert rate.windows["lung"].hit == pytest.approx(0.1 / 0.4)
    assert rate.windows["lung"].chance == pytest.approx(2 / 5)


@pytest.mark.parametrize(
    ("n", "keys", "k", "union"),
    [
        (10, [5], 2, 5),
        (10, [0], 2, 3),
        (10, [9], 2, 3),
        (10, [3, 5], 2, 7),
        (10, [1, 8], 2, 8),
        (4, [1], 5, 4),
        (30, [10], 0, 1),
    ],
)
def test_uniform_attention_scores_chance(n: int, keys: list[int], k: int, union: int) -> None:
    """Chance is the union of the (2k+1)-slice windows, clipped at the ends, over the bag length."""
    rate = scan_hit_rate("s", np.full(n, 1.0 / n), ["w"] * n, np.arange(n), keys, k=k)
    assert rate is not None
    assert rate.overall.chance == pytest.approx(union / n)
    assert rate.overall.hit == pytest.approx(rate.overall.chance)


def test_uniform_random_bags_and_summary() -> None:
    rng = np.random.default_rng(0)
    rates = []
    for i in range(20):
        n = int(rng.integers(3, 40))
        keys = rng.choice(n, size=int(rng.integers(1, 3)), replace=False)
        r = scan_hit_rate(str(i), np.ones(2 * n), ["a"] * n + ["b"] * n, np.tile(np.arange(n), 2), keys.tolist())
        assert r is not None and r.overall.hit == pytest.approx(r.overall.chance)
        rates.append(r.overall)
    s = summarise(rates)
    assert s is not None and s.n_scans == 20 and s.hit == pytest.approx(s.chance) and s.lift == pytest.approx(1.0)


def test_nothing_to_measure() -> None:
    assert scan_hit_rate("s", np.ones(5), ["w"] * 5, np.arange(5), []) is None
    assert hit_rate(np.zeros(5), np.ones(5, dtype=bool)) is None
    assert summarise([]) is None
    with pytest.raises(ValueError):
        near_key_slices(np.arange(3), [1], k=-1)


def test_near_mask_with_gaps_in_slices() -> None:
    """Slices are matched by index, not by position in the bag: a subsampled bag keeps its meaning."""
    mask = near_key_slices(np.array([0, 4, 8, 12, 16]), [9, 14], k=2)
    assert mask.tolist() == [False, False, True, True, True]
