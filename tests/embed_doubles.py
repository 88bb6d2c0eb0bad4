"""Test doubles for the store and embedding tests: a tiny cohort format and deterministic encoders.

They live here (never in ``clearbench/``) and are importable from a subprocess (the kill-and-resume test
runs ``embed`` in a child process that it SIGKILLs). The encoders are batch-independent by construction
(average pooling), so a resumed run, which cuts its batches differently, must give bit-identical vectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from clearbench.encoders.base import SliceEncoder, VolumeEncoder
from clearbench.errors import InputError
from clearbench.scans.base import DatasetReader, ScanRecord
from clearbench.scans.scan import Scan


def write_npy_cohort(root: Path, n_scans: int, seed: int = 0, size: int = 24, slices: tuple[int, int] = (3, 9)) -> Path:
    """``n_scans`` random int16 HU volumes as ``root/<scan_id>.npy`` (two scans per patient)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_scans):
        z = int(rng.integers(slices[0], slices[1] + 1))
        hu = rng.integers(-1200, 600, size=(z, size, size)).astype(np.int16)
        np.save(root / f"p{i // 2:03d}_s{i:03d}.npy", hu)
    return root


class NpyCohortReader(DatasetReader):
    """``<root>/<patient>_<scan>.npy`` int16 ``[Z, Y, X]`` volumes, 2 mm apart."""

    name: ClassVar[str] = "npycohort"
    summary: ClassVar[str] = "test cohort of .npy volumes"

    def _index(self) -> Iterable[ScanRecord]:
        for path in self.root.glob("*.npy"):
            yield ScanRecord(scan_id=path.stem, patient_id=path.stem.split("_")[0], source=path)

    def load(self, record: ScanRecord) -> Scan:
        try:
            hu = np.load(record.source)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(record.source, f"cannot read the volume ({exc})") from exc
        z = np.arange(hu.shape[0], dtype=np.float64) * 2.0 + 10.0
        return Scan(record.scan_id, record.patient_id, hu, (2.0, 1.0, 1.0), z_mm=z)


class PoolEncoder(SliceEncoder):
    """``dim = grid**2``: the slice averaged over a grid, times ``scale``; NaN for slices brighter than ``nan_above``.

    The provenance is the test family's; ``provenance`` overrides entries (to fake another weights file).
    """

    def __init__(
        self,
        grid: int = 4,
        scale: float = 1.0,
        nan_above: float | None = None,
        name: str = "pool",
        device: str = "cpu",
        provenance: dict[str, Any] | None = None,
        delay: float = 0.0,
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        model = nn.Sequential(nn.AdaptiveAvgPool2d(grid), nn.Flatten())
        prov = {
            "encoder": name,
            "family": "test-pool",
            "params": {"grid": grid, "scale": scale},
            "preprocessing_hash": "pool-v1",
            "weights": "none",
            "weights_sha256": None,
        }
        super().__init__(name, grid * grid, model, device, {**prov, **(provenance or {})})
        self.scale = scale
        self.nan_above = nan_above
        self.delay = delay  # seconds per batch: slows a run down so that a test can kill it half-way
        self.on_batch = on_batch  # called after each batch, so that a test can kill after the k-th

    def preprocess(self, slices: torch.Tensor) -> torch.Tensor:
        return slices.float()[:, None]

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        out = self.model(batch) * self.scale
        if self.nan_above is not None:
            bright = batch.flatten(1).mean(1) > self.nan_above
            out[bright] = float("nan")
        if self.on_batch is not None:
            self.on_batch()
        return out


def reference_vectors(reader: NpyCohortReader, encoder: PoolEncoder, windows: list) -> dict[str, np.ndarray]:
    """What the store must hold per scan, computed directly: windows in order, slices in order, float16."""
    from clearbench.scans.windows import apply_window, get_window

    out = {}
    for scan in reader.scans():  # unreadable scans are reported to reader.problems and left out
        hu = scan.hu
        rec = scan
        x = np.concatenate([apply_window(hu, get_window(w)) for w in windows])
        out[rec.scan_id] = encoder.encode(x).numpy().astype(np.float16).astype(np.float32)
    return out


class MeanVolumeEncoder(VolumeEncoder):
    """A volume encoder: the HU volume clipped to [-1000, 1000], scaled, and pooled to 2x2x2 (dim 8)."""

    def __init__(self, name: str = "meanvol", device: str = "cpu") -> None:
        model = nn.Sequential(nn.AdaptiveAvgPool3d(2), nn.Flatten())
        prov = {
            "encoder": name,
            "family": "test-meanvol",
            "preprocessing_hash": "meanvol-v1",
            "weights": "none",
            "weights_sha256": None,
        }
        super().__init__(name, 8, model, device, prov)

    def preprocess(self, scan: Scan) -> torch.Tensor:
        hu = torch.from_numpy(scan.hu.astype(np.float32)).clamp_(-1000, 1000) / 1000.0
        return hu[None, None]

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)


def embed_child(root: str, store: str, delay: float, conn: Any) -> None:
    """The body of a child process in the reliability tests: sends "start", "batch" after each batch, the summary."""
    import warnings

    from clearbench.embedding import embed

    warnings.simplefilter("ignore")  # lancedb warns that its fork support is experimental
    conn.send("start")
    encoder = PoolEncoder(delay=delay, on_batch=lambda: conn.send("batch"))
    summary = embed(
        encoder,
        NpyCohortReader(root),
        windows="abdomen,lung",
        batch_size=4,
        workers=2,
        store=store,
        progress=False,
        commit_seconds=0.0,
    )
    conn.send(summary.to_dict())


def optimize_child(root: str, store: str, conn: Any) -> None:
    """Like :func:`embed_child`, without delays, and announcing the final compaction.

    Sends "optimizing" as ``EmbeddingStore.optimize`` starts and "optimized" when it returns, then the summary,
    so that a test can kill the process while the table is being compacted.
    """
    import warnings

    from clearbench.embedding import embed
    from clearbench.store.embeddings import EmbeddingStore

    warnings.simplefilter("ignore")
    real_optimize = EmbeddingStore.optimize

    def announced(self: EmbeddingStore, table: str, **kwargs: Any) -> None:
        conn.send("optimizing")
        real_optimize(self, table, **kwargs)
        conn.send("optimized")

    EmbeddingStore.optimize = announced  # type: ignore[method-assign]  # this child process only
    conn.send("start")
    summary = embed(
        PoolEncoder(),
        NpyCohortReader(root),
        windows="abdomen,lung",
        batch_size=4,
        workers=2,
        store=store,
        progress=False,
        commit_seconds=0.0,
    )
    conn.send(summary.to_dict())
