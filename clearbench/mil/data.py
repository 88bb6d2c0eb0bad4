"""Bags in memory: one float32 tensor of every instance, offsets per bag, and padded batches by gather.

The paper's code (like STAMP and TRIDENT) reads one file per bag in every epoch and pads each bag to a
fixed 512 instances. Here all bags of a task are loaded once; a batch is built by one index gather
``(B, K_max)`` into the instance tensor, and batches are bucketed by length so that ``K_max`` is close
to every bag's own length. No Python loop runs over instances, and no file is read inside an epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class BagSet:
    """Bags of instance vectors with their scan-level targets.

    ``features`` ``(N, D)`` float32 holds the instances of all bags back to back; bag ``i`` is
    ``features[offsets[i]:offsets[i+1]]``. ``targets`` ``(n_bags, n_labels)`` float32 holds 0/1 labels.
    """

    scan_ids: list[str]
    patient_ids: list[str]
    features: torch.Tensor
    offsets: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self) -> None:
        n = len(self.scan_ids)
        if len(self.patient_ids) != n or self.offsets.shape != (n + 1,) or self.targets.shape[0] != n:
            raise ValueError(
                f"BagSet: {n} scan ids, {len(self.patient_ids)} patient ids, {self.offsets.shape[0]} offsets "
                f"and {self.targets.shape[0]} target rows do not agree"
            )
        if n and int(self.offsets[-1]) != self.features.shape[0]:
            raise ValueError(
                f"BagSet: offsets end at {int(self.offsets[-1])} but there are {self.features.shape[0]} instances"
            )

    @classmethod
    def from_arrays(
        cls,
        scan_ids: Sequence[str],
        patient_ids: Sequence[str],
        vectors: np.ndarray,
        offsets: np.ndarray,
        targets: np.ndarray,
    ) -> BagSet:
        return cls(
            list(scan_ids),
            list(patient_ids),
            torch.as_tensor(np.ascontiguousarray(vectors, dtype=np.float32)),
            torch.as_tensor(np.asarray(offsets, dtype=np.int64)),
            torch.as_tensor(np.asarray(targets, dtype=np.float32)),
        )

    def __len__(self) -> int:
        return len(self.scan_ids)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def subset(self, index: np.ndarray | Sequence[int]) -> BagSet:
        """The bags at ``index`` as a new, compact BagSet (copies their instances once)."""
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        starts, lengths = self.offsets[idx], self.lengths[idx]
        offsets = torch.zeros(len(idx) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        # Instance rows of every chosen bag, by index arithmetic: start of its bag + position within it.
        bag_of_row = torch.repeat_interleave(torch.arange(len(idx)), lengths)
        rows = starts[bag_of_row] + (torch.arange(int(offsets[-1])) - offsets[:-1][bag_of_row])
        ids = idx.tolist()
        return BagSet(
            [self.scan_ids[i] for i in ids],
            [self.patient_ids[i] for i in ids],
            self.features[rows],
            offsets,
            self.targets[idx],
        )

    def to(self, device: str | torch.device) -> BagSet:
        return BagSet(
            self.scan_ids, self.patient_ids, self.features.to(device), self.offsets.to(device), self.targets.to(device)
        )


@dataclass
class Batch:
    """Bags ``index`` as ``mask`` ``(B, K)`` (True on real instances) and their instances ``x``.

    ``x`` is packed, ``(n_valid, D)`` in the row-major order of ``mask``, unless the batch was made with
    ``padded=True``: then it is ``(B, K, D)`` with zeros on padding. Heads accept both.
    """

    index: torch.Tensor
    x: torch.Tensor
    mask: torch.Tensor
    y: torch.Tensor


def make_batch(bags: BagSet, index: torch.Tensor, padded: bool = False) -> Batch:
    """Gather the instances of bags ``index`` with one index gather; see :class:`Batch` for the layout."""
    starts = bags.offsets[index]
    lengths = bags.offsets[index + 1] - starts
    k = int(lengths.max()) if len(index) else 0
    pos = torch.arange(k, device=starts.device)
    mask = pos.unsqueeze(0) < lengths.unsqueeze(1)
    rows = starts.unsqueeze(1) + pos.unsqueeze(0)
    if padded:
        rows = torch.where(mask, rows, torch.zeros((), dtype=rows.dtype, device=rows.device))
        x = bags.features[rows].masked_fill_(~mask.unsqueeze(-1), 0.0)
    else:
        x = bags.features[rows[mask]]
    return Batch(index, x, mask, bags.targets[index])


def bucketed_batches(
    lengths: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    chunk_batches: int = 8,
) -> list[torch.Tensor]:
    """Training batches: shuffle, cut into chunks of ``chunk_batches`` batches, sort each chunk by length.

    Sorting within a shuffled chunk keeps batches random from epoch to epoch while bags of similar length
    share a batch, so little compute is spent on padding. The batch order is shuffled again at the end.
    """
    n = len(lengths)
    order = torch.randperm(n, generator=generator)
    chunk = batch_size * chunk_batches
    batches: list[torch.Tensor] = []
    for start in range(0, n, chunk):
        part = order[start : start + chunk]
        part = part[torch.argsort(lengths[part], stable=True)]
        batches.extend(part.split(batch_size))
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


def sorted_batches(lengths: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Evaluation batches: all bags sorted by length, in fixed order (the result does not depend on it)."""
    order = torch.argsort(lengths, stable=True)
    yield from order.split(batch_size)
