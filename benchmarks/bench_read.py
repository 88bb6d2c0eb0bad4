"""DeepLesion reader throughput against a bare decode of the same PNG files, measured side by side.

``bare`` decodes every slice file with ``np.asarray(Image.open(path))`` and nothing else: no CSV, no HU
conversion, no stacking, no annotations. ``reader`` runs ``DeepLesionReader.load`` on every series (the
index is built once beforehand and timed separately): HU conversion, stacking into int16 volumes, z
positions and lesions. Both read the same files in the same process, in interleaved repeats, so page
cache and CPU frequency affect both alike; the best repeat of each is compared. Times are CPU time of
this process (``time.process_time``), so other jobs on a shared machine do not blur the comparison
(the files are in the page cache after the warm-up, so there is no I/O wait to miss). Target ratio:
>= 0.9.

    .venv/bin/python benchmarks/bench_read.py                      # 8 synthetic series at 512 px
    .venv/bin/python benchmarks/bench_read.py --size 64 --scans 40
    .venv/bin/python benchmarks/bench_read.py --root /data/DeepLesion --limit 200   # a real download
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from clearbench.problems import ProblemLog
from clearbench.scans.deeplesion import DeepLesionReader
from clearbench.scans.synth.deeplesion import write_cohort


def bare_decode(paths: list[Path]) -> int:
    for path in paths:
        with Image.open(path) as im:
            np.asarray(im)
    return len(paths)


def reader_load(reader: DeepLesionReader, records: list) -> int:
    return sum(reader.load(rec).n_slices for rec in records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, help="an existing DeepLesion root (default: write a synthetic one)")
    ap.add_argument("--scans", type=int, default=8, help="synthetic series folders to write")
    ap.add_argument("--size", type=int, default=512, help="synthetic slice size in pixels (DeepLesion: 512)")
    ap.add_argument("--limit", type=int, default=None, help="read only the first N series")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            t0 = time.perf_counter()
            root = write_cohort(Path(tmp) / "deeplesion", args.scans, seed=0, size=args.size)
            print(f"wrote {args.scans} synthetic series at {args.size} px in {time.perf_counter() - t0:.1f} s")
        reader = DeepLesionReader(root, problems=ProblemLog())
        t0 = time.perf_counter()
        records = reader.records()[: args.limit]
        t_index = time.perf_counter() - t0
        paths = [rec.source / f"{n:03d}.png" for rec in records for n in rec.meta["slice_numbers"]]
        print(
            f"{len(records)} series, {len(paths)} slices; index (DL_info.csv + folder listing) {t_index * 1e3:.0f} ms"
        )

        bare_decode(paths)  # warm the page cache for both
        best_bare = best_reader = float("inf")
        for _ in range(args.repeats):
            t0 = time.process_time()
            n_bare = bare_decode(paths)
            best_bare = min(best_bare, time.process_time() - t0)
            t0 = time.process_time()
            n_read = reader_load(reader, records)
            best_reader = min(best_reader, time.process_time() - t0)
        if n_read != n_bare:
            raise SystemExit(
                f"reader returned {n_read} slices for {n_bare} files; problems: {reader.problems.problems}"
            )

    bare_rate, reader_rate = n_bare / best_bare, n_read / best_reader
    print(f"bare decode : {bare_rate:9.0f} slices per CPU second")
    print(f"reader      : {reader_rate:9.0f} slices per CPU second")
    print(f"ratio reader/bare = {reader_rate / bare_rate:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
