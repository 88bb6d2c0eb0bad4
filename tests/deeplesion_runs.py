"""A synthetic DeepLesion cohort with two encoders' embeddings and their finished task1 runs.

The cohort is written by the real synthetic writer and read by the real reader; the two embedding tables are
written through the store's API (a real encoder would cost minutes on two shared cores); the runs go through
the real ``clearbench run`` CLI. ``lesion-aware`` puts each lesion's type into the slices around its key
slice, in the abdomen window only, so its head has something near the key slices to attend to;
``lesion-blind`` spreads the same signal over every slice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clearbench.cli import main
from clearbench.scans.registry import open_dataset
from clearbench.scans.synth.deeplesion import write_cohort
from clearbench.scans.windows import get_window
from clearbench.store import EmbeddingStore, ScanEmbeddings

ENCODERS = ("lesion-aware", "lesion-blind")
DIM = 12


def write_table(store: Path, root: Path, encoder: str, seed: int) -> None:
    reader = open_dataset("deeplesion", root)
    labels = reader.label_names
    emb = EmbeddingStore(store)
    provenance = {"encoder": encoder, "kind": "slice", "dim": DIM, "dataset": "deeplesion", "dataset_root": str(root)}
    windows = [get_window("abdomen"), get_window("lung")]
    table = emb.open_for_writing(emb.table_name("deeplesion", encoder), DIM, provenance, windows)
    rng = np.random.default_rng(seed)
    scans = []
    for rec in reader.records():
        n = int(rec.meta["n_slices"])
        signal = np.zeros((n, DIM), dtype=np.float32)
        for lesion in rec.meta["lesions"]:
            code = labels.index(lesion["type"])
            if encoder == "lesion-aware":
                lo, hi = max(0, lesion["slice_idx"] - 1), min(n, lesion["slice_idx"] + 2)
                signal[lo:hi, code] += 4.0
            else:
                signal[:, code] += 1.0
        abdomen = rng.normal(size=(n, DIM)).astype(np.float32) + signal
        lung = rng.normal(size=(n, DIM)).astype(np.float32)
        slices = np.concatenate([np.arange(n), np.arange(n)])
        window = np.array(["abdomen"] * n + ["lung"] * n)
        scans.append(ScanEmbeddings(rec.scan_id, rec.patient_id, window, slices, slices.astype(float), np.vstack([abdomen, lung])))
    table.write(scans)


def two_encoder_run(base: Path, n_scans: int = 30, epochs: int = 6) -> tuple[Path, Path]:
    """Write the cohort and both tables under ``base`` and run task1 on them; returns (store, root)."""
    root = write_cohort(base / "deeplesion", n_scans, 0, size=32)
    store = base / "store"
    for i, encoder in enumerate(ENCODERS):
        write_table(store, root, encoder, seed=i)
    main(["run", "task1", "--root", str(root), "--store", str(store), "--epochs", str(epochs), "--device", "cpu", "--json"])
    return store, root
