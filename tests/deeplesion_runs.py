"""A synthetic DeepLesion cohort with two encoders' embeddings and their finished task1 runs.

The cohort is written by the real synthetic writer and read by the real reader; the two embedding tables are
written through the store's API (a real encoder would cost minutes on two shared cores); the runs go through
the real ``clearbench run`` CLI. ``lesion-aware`` puts each lesion's type into the slices around its key
slice, in the abdomen window only, so its head has something near the key slices to attend to;
``lesion-blind`` spreads the same signal over every slice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
        scans.append(
            ScanEmbeddings(
                rec.scan_id, rec.patient_id, window, slices, slices.astype(float), np.vstack([abdomen, lung])
            )
        )
    table.write(scans)


# A second DeepLesion task, as a user's card, so that a board has more than one tab.
SECOND_TASK = "lesion-trio"
_SECOND_CARD = f"""
name = "{SECOND_TASK}"
title = "DeepLesion bone, liver, lung"
dataset = "deeplesion"
type = "multilabel"
labels = ["bone", "liver", "lung"]
windows = ["abdomen", "lung"]
hit_rate_k = 1
[protocol]
kind = "holdout+kfold"
folds = 3
"""


@dataclass(frozen=True)
class DeepLesionRuns:
    store: Path
    root: Path
    home: Path  # holds the second task's card: set CLEARBENCH_HOME to it to see that task
    tasks: tuple[str, ...]


@contextmanager
def home_at(home: Path) -> Iterator[None]:
    before = os.environ.get("CLEARBENCH_HOME")
    os.environ["CLEARBENCH_HOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CLEARBENCH_HOME")
        else:
            os.environ["CLEARBENCH_HOME"] = before


def two_encoder_run(base: Path, n_scans: int = 30, epochs: int = 6, second_task: bool = False) -> DeepLesionRuns:
    """Write the cohort and both tables under ``base`` and run task1 (and the second task) on them."""
    root = write_cohort(base / "deeplesion", n_scans, 0, size=32)
    store, home = base / "store", base / "home"
    for i, encoder in enumerate(ENCODERS):
        write_table(store, root, encoder, seed=i)
    tasks = ("task1", SECOND_TASK) if second_task else ("task1",)
    if second_task:
        (home / "tasks").mkdir(parents=True, exist_ok=True)
        (home / "tasks" / f"{SECOND_TASK}.toml").write_text(_SECOND_CARD)
    with home_at(home):
        for task in tasks:
            main(
                [
                    "run",
                    task,
                    "--min-test-patients",
                    "2",
                    "--root",
                    str(root),
                    "--store",
                    str(store),
                    "--epochs",
                    str(epochs),
                    "--device",
                    "cpu",
                    "--json",
                ]
            )
    return DeepLesionRuns(store, root, home, tasks)
