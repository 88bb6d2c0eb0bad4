"""From decoded scans to encoder batches and back: windows on the device, batches across scan boundaries.

Each scan's HU volume is moved to the encoder's device once; every window is computed there from it, so a
slice is decoded once however many windows a task needs. Batches are cut from the stream of (scan, window,
slice) rows regardless of scan boundaries, so the encoder always sees full batches; a scan's vectors are
gathered into its own buffer and the scan is released as soon as its last row is embedded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from clearbench.scans.base import ScanRecord
from clearbench.scans.scan import Scan
from clearbench.scans.windows import Window
from clearbench.store.embeddings import ScanEmbeddings


def window_into(out: torch.Tensor, hu: torch.Tensor, window: Window) -> torch.Tensor:
    """Window HU values into ``out`` (float32 [0, 1], same device), with the arithmetic of ``apply_window``."""
    scale = float(np.float32(1.0 / (window.hi - window.lo)))
    return out.copy_(hu).sub_(float(np.float32(window.lo))).mul_(scale).clamp_(0.0, 1.0)


@dataclass
class ScanJob:
    """One scan being embedded: its HU on the device, the windows still to do, and its vector buffer."""

    record: ScanRecord
    scan: Scan
    hu: torch.Tensor
    windows: list[Window]
    dim: int
    vectors: np.ndarray = field(init=False)
    n_slices: int = field(init=False)
    filled: int = 0

    def __post_init__(self) -> None:
        self.n_slices = int(self.hu.shape[0])
        self.vectors = np.empty((self.n_rows, self.dim), dtype=np.float32)

    @property
    def n_rows(self) -> int:
        return self.n_slices * len(self.windows)

    @property
    def complete(self) -> bool:
        return self.filled == self.n_rows

    def embeddings(self) -> ScanEmbeddings:
        """The scan's rows, window-major then slice, as the store takes them."""
        z = self.n_slices
        return ScanEmbeddings(
            scan_id=self.scan.scan_id,
            patient_id=self.scan.patient_id,
            window=np.repeat(np.array([w.name for w in self.windows], dtype=object), z),
            slice_idx=np.tile(np.arange(z, dtype=np.int32), len(self.windows)),
            z_mm=np.tile(np.asarray(self.scan.z_mm, dtype=np.float64), len(self.windows)),
            vectors=self.vectors,
        )


@dataclass(frozen=True)
class Segment:
    """Rows ``z0:z1`` of window ``w`` of one scan: a contiguous piece of a batch."""

    job: ScanJob
    w: int
    z0: int
    z1: int

    @property
    def size(self) -> int:
        return self.z1 - self.z0

    @property
    def row0(self) -> int:
        return self.w * self.job.n_slices + self.z0


def cut_batches(jobs: Iterable[ScanJob], batch_size: int) -> Iterator[list[Segment]]:
    """Batches of ``batch_size`` rows across scans, windows and slices.

    A batch is smaller only at the end, or where the in-plane size changes from one scan to the next.

    ``jobs`` is consumed lazily, so the next scans are still being decoded while a batch is embedded.
    """
    batch: list[Segment] = []
    room = batch_size
    for job in jobs:
        if batch and batch[0].job.hu.shape[1:] != job.hu.shape[1:]:
            yield batch  # slices of another size cannot share a tensor: close the batch early
            batch, room = [], batch_size
        for w in range(len(job.windows)):
            z = 0
            while z < job.n_slices:
                take = min(room, job.n_slices - z)
                batch.append(Segment(job, w, z, z + take))
                z += take
                room -= take
                if room == 0:
                    yield batch
                    batch, room = [], batch_size
    if batch:
        yield batch


class BatchBuffer:
    """One reusable ``[batch, H, W]`` float32 tensor that each batch's windowed slices are written into.

    Windowing into fresh tensors cost 5-10x more than the arithmetic itself on the benchmark machine: a
    batch of 512-px slices is above glibc's mmap threshold, so every new tensor page-faults its memory in.
    Reuse is safe: the encoder has finished with (or, on a GPU, has been queued ahead of) the previous batch.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._buffer: torch.Tensor | None = None

    def assemble(self, segments: list[Segment]) -> torch.Tensor:
        """The windowed slices of a batch, ``[N, H, W]`` float32 on the scans' device."""
        hu = segments[0].job.hu
        shape = (self.batch_size, *hu.shape[1:])
        if self._buffer is None or self._buffer.shape != shape or self._buffer.device != hu.device:
            self._buffer = torch.empty(shape, dtype=torch.float32, device=hu.device)
        at = 0
        for s in segments:
            window_into(self._buffer[at : at + s.size], s.job.hu[s.z0 : s.z1], s.job.windows[s.w])
            at += s.size
        return self._buffer[:at]


def scatter(segments: list[Segment], vectors: np.ndarray) -> list[ScanJob]:
    """Store a batch's vectors in their scans' buffers; returns the scans this batch completed, in order."""
    done = []
    at = 0
    for s in segments:
        s.job.vectors[s.row0 : s.row0 + s.size] = vectors[at : at + s.size]
        s.job.filled += s.size
        at += s.size
        if s.job.complete:
            done.append(s.job)
    return done
