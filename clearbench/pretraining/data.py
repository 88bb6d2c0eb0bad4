"""Training slices from any dataset reader: an index, two ways to load, and view pairs.

Pretraining sees every axial slice of every scan (the paper: 873,849 DeepLesion slices). Decoding is the
cost to avoid: a DeepLesion scan is a folder of PNGs, and decoding a whole scan to use one slice would
multiply the I/O by the scan length. So each scan is decoded **once per epoch** at most:

- **memory** (small cohorts): every scan is decoded once, at start, and kept as int16 HU in RAM. Items are
  slices, shuffled by a :class:`ResumableSampler` (a DistributedSampler that also skips the batches a
  resumed run already did). Windows and augmentations are drawn per item.
- **stream** (cohorts larger than the cache budget, e.g. the whole of DeepLesion): each rank and loader
  worker reads its own share of the scans in a per-epoch random order, decodes each once, and draws slices
  from a shuffle buffer of recently decoded slices. Every stream yields exactly its share of batches, so
  all ranks run the same number of steps.

Both start from one pass over the cohort (:func:`index_cohort`) that records each scan's slice count and
lesion boxes; bad scans are reported to the reader's problem log there and left out.

Every item draws its randomness from a seed derived from ``(seed, epoch, position)``, never from the
process's generator, so the views do not depend on the number of workers (memory mode), and a resumed run
sees exactly the views an uninterrupted run would have seen.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, IterableDataset, get_worker_info

from clearbench.atomic import write_atomic
from clearbench.errors import InputError
from clearbench.pretraining.augment import TwoViews
from clearbench.scans.base import DatasetReader, ScanRecord
from clearbench.scans.scan import Scan
from clearbench.scans.windows import Window, apply_window

Box = tuple[float, float, float, float]


def sample_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (seed, epoch, position ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass
class SliceIndex:
    """Which scans are used, how many slices each has, and the lesion boxes of annotated slices."""

    scan_ids: list[str]
    n_slices: list[int]
    # scan position -> {slice index -> boxes (x1, y1, x2, y2) in that slice's pixels}
    boxes: list[dict[int, list[Box]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.offsets = np.concatenate([[0], np.cumsum(self.n_slices, dtype=np.int64)])

    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_lesion_slices(self) -> int:
        return sum(len(b) for b in self.boxes)

    def locate(self, i: int) -> tuple[int, int]:
        """Global slice number -> (scan position, slice index)."""
        s = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return s, int(i - self.offsets[s])

    def to_json(self) -> dict[str, Any]:
        return {
            "scan_ids": self.scan_ids,
            "n_slices": self.n_slices,
            "boxes": [{str(z): [list(b) for b in bs] for z, bs in per.items()} for per in self.boxes],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SliceIndex:
        boxes = [{int(z): [tuple(b) for b in bs] for z, bs in per.items()} for per in data["boxes"]]
        return cls(list(data["scan_ids"]), [int(n) for n in data["n_slices"]], boxes)

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: Path) -> SliceIndex:
        return cls.from_json(json.loads(path.read_text()))


def lesion_boxes(scan: Scan) -> dict[int, list[Box]]:
    """The usable lesion boxes of a scan by slice: inside the volume and with a positive area."""
    out: dict[int, list[Box]] = {}
    for lesion in scan.lesions:
        x1, y1, x2, y2 = (float(v) for v in lesion.box)
        if 0 <= lesion.slice_idx < scan.n_slices and x2 > x1 and y2 > y1:
            out.setdefault(int(lesion.slice_idx), []).append((x1, y1, x2, y2))
    return out


def index_cohort(
    reader: DatasetReader,
    records: Sequence[ScanRecord],
    cache_bytes: float,
    on_scan: Callable[[], None] | None = None,
) -> tuple[SliceIndex, list[ScanRecord], list[np.ndarray] | None]:
    """Decode every scan once: the index, the records that loaded, and the HU volumes if they fit.

    Volumes are kept while their total stays within ``cache_bytes`` (``math.inf``: always); past it they are dropped and the
    caller streams instead (None). Bad scans go to ``reader.problems`` (which raises when strict).
    """
    ids: list[str] = []
    counts: list[int] = []
    boxes: list[dict[int, list[Box]]] = []
    kept: list[ScanRecord] = []
    volumes: list[np.ndarray] | None = []
    held = 0
    by_id = {r.scan_id: r for r in records}
    for scan in reader.scans(records):
        ids.append(scan.scan_id)
        counts.append(scan.n_slices)
        boxes.append(lesion_boxes(scan))
        kept.append(by_id[scan.scan_id])
        if volumes is not None:
            held += scan.hu.nbytes
            if held <= cache_bytes:
                volumes.append(scan.hu)
            else:
                volumes = None
        if on_scan is not None:
            on_scan()
    return SliceIndex(ids, counts, boxes), kept, volumes


class SliceViews:
    """One training item from one HU slice: a random window, then :class:`TwoViews` (lesion-aware)."""

    def __init__(self, windows: Sequence[Window], views: TwoViews, lesion_crops: bool) -> None:
        if not windows:
            raise ValueError("at least one HU window is needed")
        self.windows = list(windows)
        self.views = views
        self.lesion_crops = lesion_crops

    def __call__(self, hu: np.ndarray, boxes: Sequence[Box], seed: int) -> dict[str, Any]:
        # The item's own seed; the process's generator is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            window = self.windows[int(torch.randint(len(self.windows), ()))]
            box = boxes[int(torch.randint(len(boxes), ()))] if self.lesion_crops and boxes else None
            image = torch.from_numpy(apply_window(hu, window))[None]
            view1, view2 = self.views(image, box)
        return {"view1": view1, "view2": view2, "lesion": box is not None}


class MemorySlices(Dataset):
    """Every slice of a cached cohort; an item key is ``(epoch, slice number)`` from :class:`ResumableSampler`."""

    def __init__(self, volumes: list[np.ndarray], index: SliceIndex, item: SliceViews, seed: int) -> None:
        if len(volumes) != len(index.scan_ids):
            raise ValueError("one cached volume per indexed scan is needed")
        self.volumes = volumes
        self.index = index
        self.item = item
        self.seed = seed

    def __len__(self) -> int:
        return self.index.total

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, i = key
        s, z = self.index.locate(i)
        return self.item(self.volumes[s][z], self.index.boxes[s].get(z, ()), sample_seed(self.seed, epoch, i))


class ResumableSampler(DistributedSampler):
    """A DistributedSampler that tags items with the epoch and can skip the batches already done."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, batch_size: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.skip_batches = 0

    def start(self, epoch: int, skip_batches: int = 0) -> None:
        self.set_epoch(epoch)
        self.skip_batches = skip_batches

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.skip_batches * self.batch_size :]
        return iter([(self.epoch, i) for i in indices])

    def __len__(self) -> int:
        return max(self.num_samples - self.skip_batches * self.batch_size, 0)


class StreamingSlices(IterableDataset):
    """Slices streamed scan by scan through a shuffle buffer; each scan decoded once per pass.

    A rank's batches are split among its ``workers`` streams round-robin, as the DataLoader collects them:
    batch ``b`` of an epoch comes from stream ``b % workers``. Stream ``s`` reads scans ``s, s + W ...`` of
    the rank's shard of a per-epoch permutation, and cycles through them again if its quota is not met.
    """

    def __init__(
        self,
        reader: DatasetReader,
        records: Sequence[ScanRecord],
        index: SliceIndex,
        item: SliceViews,
        *,
        seed: int,
        rank: int,
        world: int,
        workers: int,
        batch_size: int,
        steps_per_epoch: int,
        buffer_size: int = 2048,
    ) -> None:
        self.reader = reader
        self.records = list(records)
        self.index = index
        self.item = item
        self.seed, self.rank, self.world = seed, rank, world
        self.workers = max(workers, 1)
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.buffer_size = max(buffer_size, batch_size)
        self.epoch = 0
        self.start_step = 0

    def start(self, epoch: int, skip_batches: int = 0) -> None:
        """Set before iterating: the DataLoader's workers copy this state when they start."""
        self.epoch, self.start_step = epoch, skip_batches

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.batch_size

    def _batches_of(self, stream: int, below: int) -> int:
        """How many of batches ``0 .. below-1`` belong to ``stream``."""
        return below // self.workers + (1 if stream < below % self.workers else 0)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        w = info.id if info is not None else 0
        n_workers = info.num_workers if info is not None else 1
        if n_workers != self.workers:
            raise RuntimeError(f"StreamingSlices was set up for {self.workers} loader workers, got {n_workers}")
        stream = (w + self.start_step) % self.workers
        skip = self._batches_of(stream, self.start_step) * self.batch_size
        quota = self._batches_of(stream, self.steps_per_epoch) * self.batch_size
        yield from self._stream(stream, skip, quota)

    def _scan_order(self, stream: int, cycle: int) -> list[int]:
        n = len(self.records)
        perm = np.random.default_rng(sample_seed(self.seed, self.epoch, cycle, 1)).permutation(n)
        shard = perm[self.rank :: self.world][stream :: self.workers]
        if len(shard) == 0:  # more streams than scans: share scans rather than starve
            shard = perm[[(self.rank * self.workers + stream) % n]]
        return [int(s) for s in shard]

    def _stream(self, stream: int, skip: int, quota: int) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng(sample_seed(self.seed, self.epoch, self.rank, stream, 2))
        buffer: list[tuple[np.ndarray, int, int]] = []  # (volume, scan position, slice index)
        produced, cycle = 0, 0

        def take(keep: int) -> Iterator[dict[str, Any]]:
            """Items from random places in the buffer until ``keep`` slices are left or the quota is met."""
            nonlocal produced
            while len(buffer) > keep and produced < quota:
                j = int(rng.integers(len(buffer)))
                buffer[j], buffer[-1] = buffer[-1], buffer[j]
                vol, scan_pos, z = buffer.pop()
                # A resumed run replays its stream up to where it stopped, without augmenting.
                if produced >= skip:
                    seed = sample_seed(self.seed, self.epoch, self.rank, stream, produced, 3)
                    yield self.item(vol[z], self.index.boxes[scan_pos].get(z, ()), seed)
                produced += 1

        while produced < quota:
            loaded_any = False
            for s in self._scan_order(stream, cycle):
                try:
                    volume = self.reader.load(self.records[s]).hu
                except InputError:
                    continue  # reported in the index pass; a file that broke since is skipped
                loaded_any = True
                buffer.extend((volume, s, z) for z in range(volume.shape[0]))
                yield from take(self.buffer_size - 1)
                if produced >= quota:
                    return
            if not loaded_any:
                raise RuntimeError(f"stream {stream} of rank {self.rank}: none of its scans could be read")
            # End of a pass over the scans: use up the buffer before reading any scan again, so that every
            # slice of the pass is drawn once before any is drawn twice.
            yield from take(0)
            cycle += 1
