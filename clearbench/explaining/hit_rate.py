"""Attention hit rate: how much of a MIL head's attention falls near the slices where the lesion is.

DeepLesion marks a key slice for every lesion, so whether a head looks at the lesion can be measured
instead of shown as a picture. The *hit rate* of a bag is the share of its attention mass on instances
whose slice lies within ±k slices of a key slice. On its own that number means little: a bag of 20
slices with a key slice in the middle and k = 2 puts 5 of its 20 slices in the neighbourhood, so
uniform attention already "hits" 25 %. Every hit rate therefore comes with its *chance level*: the
share of the bag's instances inside the neighbourhood, which is exactly what uniform attention scores.
For a bag holding every slice once, that is the union of the key slices' windows (2k + 1 each, clipped
at the bag's ends) divided by the bag length.

Rates are given per window (attention renormalised within the window's instances) and per scan (the
whole bag, all windows together, which is what the head's softmax spans). Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from clearbench.tasks.spec import DEFAULT_K


def _lift(hit: float, chance: float) -> float:
    """How many times chance the head puts on the key slices (1 = no better than uniform)."""
    return hit / chance if chance > 0 else float("nan")


@dataclass(frozen=True)
class HitRate:
    """The attention share near key slices (``hit``) and what uniform attention would give (``chance``)."""

    hit: float
    chance: float
    n_instances: int
    n_near: int

    @property
    def lift(self) -> float:
        return _lift(self.hit, self.chance)


@dataclass(frozen=True)
class ScanHitRate:
    """One scan's hit rate over its whole bag and per window (window name -> rate)."""

    scan_id: str
    overall: HitRate
    windows: dict[str, HitRate]


@dataclass(frozen=True)
class HitRateSummary:
    """Hit and chance averaged over scans (each scan counts once, whatever its bag size)."""

    hit: float
    chance: float
    n_scans: int

    @property
    def lift(self) -> float:
        return _lift(self.hit, self.chance)


def near_key_slices(slice_idx: np.ndarray, key_slices: Iterable[int], k: int = DEFAULT_K) -> np.ndarray:
    """Boolean mask of the instances whose slice index lies within ±``k`` of any key slice."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    slices = np.asarray(slice_idx, dtype=np.int64)
    keys = np.unique(np.asarray(list(key_slices), dtype=np.int64))
    if keys.size == 0 or slices.size == 0:
        return np.zeros(slices.shape, dtype=bool)
    # Distance to the nearest key slice through a sorted search, not a slices x keys matrix.
    pos = np.searchsorted(keys, slices)
    below = np.abs(slices - keys[np.clip(pos - 1, 0, keys.size - 1)])
    above = np.abs(keys[np.clip(pos, 0, keys.size - 1)] - slices)
    return np.minimum(below, above) <= k


def hit_rate(attention: np.ndarray, near: np.ndarray) -> HitRate | None:
    """Share of ``attention`` on the ``near`` instances, with its chance level; None for an empty bag or
    one whose attention sums to zero (nothing to measure)."""
    att = np.asarray(attention, dtype=np.float64)
    near = np.asarray(near, dtype=bool)
    if att.shape != near.shape:
        raise ValueError(f"attention has {att.shape[0]} instances but the mask {near.shape[0]}")
    total = float(att.sum())
    if att.size == 0 or not total > 0:
        return None
    n_near = int(near.sum())
    return HitRate(
        hit=float(att[near].sum()) / total, chance=n_near / att.size, n_instances=int(att.size), n_near=n_near
    )


def scan_hit_rate(
    scan_id: str,
    attention: np.ndarray,
    window: Sequence[str] | np.ndarray,
    slice_idx: np.ndarray,
    key_slices: Iterable[int],
    k: int = DEFAULT_K,
) -> ScanHitRate | None:
    """The hit rate of one bag (instances given by their attention, window and slice index), overall and
    per window; None when the scan has no key slice or no attention to measure."""
    keys = list(key_slices)
    if not keys:
        return None
    near = near_key_slices(slice_idx, keys, k)
    overall = hit_rate(attention, near)
    if overall is None:
        return None
    att = np.asarray(attention, dtype=np.float64)
    win = np.asarray(window, dtype=object)
    per_window: dict[str, HitRate] = {}
    for name in dict.fromkeys(win.tolist()):
        rows = win == name
        rate = hit_rate(att[rows], near[rows])
        if rate is not None:
            per_window[str(name)] = rate
    return ScanHitRate(scan_id=scan_id, overall=overall, windows=per_window)


def summarise(rates: Iterable[HitRate]) -> HitRateSummary | None:
    """Mean hit and mean chance over scans; None when there is none."""
    rates = list(rates)
    if not rates:
        return None
    return HitRateSummary(
        hit=float(np.mean([r.hit for r in rates])),
        chance=float(np.mean([r.chance for r in rates])),
        n_scans=len(rates),
    )
