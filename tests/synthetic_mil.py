"""Synthetic MIL problems for the MIL, protocol and metric tests (helper G's tests share them)."""

from __future__ import annotations

import numpy as np

from clearbench.mil.data import BagSet


def key_instance_bags(
    n_bags: int = 240,
    dim: int = 16,
    n_labels: int = 1,
    min_len: int = 6,
    max_len: int = 30,
    scans_per_patient: int = 2,
    signal: float = 4.0,
    seed: int = 0,
) -> tuple[BagSet, np.ndarray]:
    """Bags of Gaussian noise; a bag is positive for label j iff one of its instances carries pattern j.

    Returns the bags and ``key`` ``(n_bags, n_labels)``: the instance index (within the bag) that carries
    label j's pattern, or -1 when the bag is negative for j.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, n_bags)
    offsets = np.zeros(n_bags + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    x = rng.normal(size=(int(offsets[-1]), dim)).astype(np.float32)
    y = (rng.random((n_bags, n_labels)) < 0.5).astype(np.float32)
    key = np.full((n_bags, n_labels), -1, dtype=np.int64)
    patterns = np.zeros((n_labels, dim), dtype=np.float32)
    for j in range(n_labels):
        patterns[j, 2 * j : 2 * j + 2] = signal
    for i in range(n_bags):
        for j in range(n_labels):
            if y[i, j] == 1:
                k = int(rng.integers(0, lengths[i]))
                key[i, j] = k
                x[offsets[i] + k] += patterns[j]
    scan_ids = [f"scan{i:04d}" for i in range(n_bags)]
    patient_ids = [f"pat{i // scans_per_patient:04d}" for i in range(n_bags)]
    return BagSet.from_arrays(scan_ids, patient_ids, x, offsets, y), key
