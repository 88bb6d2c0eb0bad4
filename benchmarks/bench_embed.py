"""The embedding pipeline against the bare encoder, and reading bags against ``np.load``, side by side.

Figure 1 (target >= 0.9): slices/s of ``clearbench.embed`` on a synthetic DeepLesion cohort in both windows
(decode, windowing, batching across scans, float16 checks and LanceDB commits, table open, resume check and
the final optimize all included) divided by the slices/s of the same encoder object on the same slices,
already decoded and windowed, cut into batches of the same size: ``encoder.encode(batch)`` (the encoder's own
preprocessing plus its forward pass) and nothing else. A second reference, ``encoder.embed`` on batches that
are already preprocessed, is printed too.

Figure 2 (reported, no target): reading every bag of a table with ``EmbeddingStore.bags`` (float16 ->
float32, grouped per scan) divided by ``np.load`` of the same float32 array from a warm ``.npy``; on the
table of figure 1, and on a 120,000-row table of random vectors (the size of the notes' measurements).

Repeats are short and interleaved, alternating which side goes first, and figure 1 is the median of the
ratios of adjacent runs: on a machine shared with other jobs the load changes within seconds, so a ratio
of two runs taken moments apart is more trustworthy than a ratio of two bests taken minutes apart (both
are printed, with the wall and CPU seconds of every run).

    .venv/bin/python benchmarks/bench_embed.py                                   # mambaout-femto-random
    .venv/bin/python benchmarks/bench_embed.py --encoder hu-hist --scans 20 --size 512
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clearbench.embedding import embed
from clearbench.encoders.registry import load_encoder
from clearbench.problems import ProblemLog
from clearbench.scans.deeplesion import DeepLesionReader
from clearbench.scans.synth.deeplesion import write_cohort
from clearbench.scans.windows import WINDOWS, apply_window
from clearbench.store import EmbeddingStore, ScanEmbeddings


def windowed_batches(reader: DeepLesionReader, batch_size: int) -> list[torch.Tensor]:
    """Every slice of every scan in both windows, decoded and windowed once, cut into batches."""
    slices = []
    for scan in reader.scans():
        for window in (WINDOWS["abdomen"], WINDOWS["lung"]):
            slices.append(apply_window(scan.hu, window))
    stacked = torch.from_numpy(np.concatenate(slices))
    return list(stacked.split(batch_size))


def time_encoder(encoder, batches: list[torch.Tensor], preprocessed: bool) -> tuple[float, float]:
    """(wall, CPU) seconds."""
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in batches:
        encoder.embed(batch) if preprocessed else encoder.encode(batch)
    return time.perf_counter() - t0, time.process_time() - c0


def time_pipeline(encoder, root: Path, store: Path, batch_size: int, workers: int | None) -> tuple[float, float, int]:
    """(wall, CPU) seconds of a whole run into an emptied table, and the slices it embedded."""
    t0, c0 = time.perf_counter(), time.process_time()
    summary = embed(
        encoder,
        DeepLesionReader(root, problems=ProblemLog()),
        windows="abdomen,lung",
        batch_size=batch_size,
        workers=workers,
        store=store,
        overwrite=True,
        progress=False,
    )
    return time.perf_counter() - t0, time.process_time() - c0, summary.slices_embedded


def time_bags(store: EmbeddingStore, table: str, npy: Path, repeats: int) -> tuple[float, float, int]:
    bags = store.bags(table=table)
    np.save(npy, bags.vectors)
    best_bags = best_npy = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        store.bags(table=table)
        best_bags = min(best_bags, time.perf_counter() - t0)
        t0 = time.perf_counter()
        np.load(npy)
        best_npy = min(best_npy, time.perf_counter() - t0)
    return best_bags, best_npy, len(bags.vectors)


def random_table(store: EmbeddingStore, n_scans: int, n_slices: int, dim: int) -> str:
    """A table of random vectors written as an embed run would: whole scans, a few hundred rows per commit."""
    table = store.open_for_writing("bench__random", dim, {"encoder": "random"}, [WINDOWS["lung"]])
    rng = np.random.default_rng(0)
    group = []
    for i in range(n_scans):
        group.append(
            ScanEmbeddings(
                f"{i:06d}_01_01",
                f"{i:06d}",
                np.full(n_slices, "lung", dtype=object),
                np.arange(n_slices),
                np.arange(n_slices) * 2.5,
                rng.normal(size=(n_slices, dim)).astype(np.float32),
            )
        )
        if len(group) == 100:
            table.write(group)
            group = []
    table.write(group)
    store.optimize("bench__random")
    return "bench__random"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="mambaout-femto-random")
    ap.add_argument("--scans", type=int, default=2, help="synthetic DeepLesion series to write")
    ap.add_argument("--size", type=int, default=512, help="slice size in pixels (DeepLesion: 512)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="pipeline decode threads (default: the pipeline's)")
    ap.add_argument("--repeats", type=int, default=8, help="interleaved repeats of each side of figure 1")
    args = ap.parse_args()

    print(
        f"machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), torch threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = write_cohort(Path(tmp) / "deeplesion", args.scans, seed=0, size=args.size)
        print(f"wrote {args.scans} synthetic DeepLesion series at {args.size} px in {time.perf_counter() - t0:.1f} s")
        encoder = load_encoder(args.encoder, device="cuda" if torch.cuda.is_available() else "cpu")
        batches = windowed_batches(DeepLesionReader(root, problems=ProblemLog()), args.batch_size)
        n_slices = sum(len(b) for b in batches)
        preprocessed = [encoder.preprocess(b.to(encoder.device)) for b in batches]
        print(
            f"encoder {encoder.name} ({encoder.dim}-d) on {encoder.device}; {n_slices} slices (2 windows), "
            f"batch {args.batch_size}"
        )
        encoder.encode(batches[0])  # warm-up: first-call allocations and kernel selection

        store_dir = Path(tmp) / "store"
        runs: dict[str, list[tuple[float, float]]] = {"encode": [], "embed": [], "pipeline": []}
        for i in range(args.repeats):
            # Alternate which side goes first, so that a change of load between the two favours neither.
            for side in ("encode", "pipeline", "embed") if i % 2 == 0 else ("pipeline", "encode", "embed"):
                if side == "pipeline":
                    wall, cpu, rows = time_pipeline(encoder, root, store_dir, args.batch_size, args.workers)
                    assert rows == n_slices, (rows, n_slices)
                    runs[side].append((wall, cpu))
                else:
                    runs[side].append(
                        time_encoder(
                            encoder, preprocessed if side == "embed" else batches, preprocessed=side == "embed"
                        )
                    )
        rate = {k: n_slices / min(w for w, _ in v) for k, v in runs.items()}
        for key, label in (
            ("encode", "encoder only, encode() on windowed slices"),
            ("embed", "encoder only, embed() on preprocessed    "),
            ("pipeline", "pipeline, clearbench.embed end to end    "),
        ):
            print(
                f"{label}: best {rate[key]:7.1f} slices/s  (wall/CPU s per run: "
                + ", ".join(f"{w:.1f}/{c:.1f}" for w, c in runs[key])
                + ")"
            )
        pairs = [e[0] / p[0] for e, p in zip(runs["encode"], runs["pipeline"], strict=True)]
        pairs_embed = [e[0] / p[0] for e, p in zip(runs["embed"], runs["pipeline"], strict=True)]
        print(
            f"FIGURE 1  pipeline / encoder-only (encode): {statistics.median(pairs):.3f} median of {len(pairs)} "
            f"adjacent pairs; {rate['pipeline'] / rate['encode']:.3f} best run / best run   (target >= 0.9)"
        )
        print(
            f"          pipeline / encoder-only (embed):  {statistics.median(pairs_embed):.3f} median; "
            f"{rate['pipeline'] / rate['embed']:.3f} best / best"
        )
        store = EmbeddingStore(store_dir)
        table = store.table_name("deeplesion", encoder.name)
        bags_s, npy_s, rows = time_bags(store, table, Path(tmp) / "bags.npy", repeats=7)
        print(
            f"FIGURE 2  bags() / np.load on the cohort table ({rows} rows x {encoder.dim}): "
            f"{bags_s * 1e3:.1f} ms / {npy_s * 1e3:.2f} ms = {bags_s / npy_s:.1f}x"
        )
        big = random_table(store, n_scans=2000, n_slices=60, dim=encoder.dim)
        bags_s, npy_s, rows = time_bags(store, big, Path(tmp) / "big.npy", repeats=5)
        print(
            f"          bags() / np.load on a random table ({rows} rows x {encoder.dim}): "
            f"{bags_s * 1e3:.1f} ms / {npy_s * 1e3:.2f} ms = {bags_s / npy_s:.1f}x"
        )


if __name__ == "__main__":
    main()
