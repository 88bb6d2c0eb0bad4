"""DICOM series reading: :func:`read_ct_series` against a bare pydicom decode of the same files.

Both read one CT series of real-sized slices (512 x 512 by default) written by the synthetic writer:

- **bare**: ``pydicom.dcmread`` of every file in name order, ``pixel_array``, stacked, times the slope plus
  the intercept. No sorting by position, no checks: the least work that gives a volume (in the wrong order).
- **read_ct_series**: headers, Modality/scout/orientation checks, sorting along the slice normal, duplicate
  and gap checks, the Modality LUT, int16 conversion and display orientation.

They are timed interleaved (bare, reader, bare, reader ...) so that load on a shared machine hits both alike,
and the medians are compared. The ratio is reader slices/s over bare slices/s (1.0 = no overhead).

    .venv/bin/python benchmarks/bench_dicom.py                   # 120 slices of 512 x 512, 5 rounds
    .venv/bin/python benchmarks/bench_dicom.py --slices 40 --size 256 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

from clearbench.scans.dicom_series import read_ct_series
from clearbench.scans.synth.dicom_ct import SeriesIds, stable_uid, write_ct_series


def bare(folder: Path) -> np.ndarray:
    volume = []
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        volume.append(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    return np.stack(volume)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=120)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 2000, size=(args.slices, args.size, args.size)).astype(np.int16)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        ids = SeriesIds("BENCH", stable_uid("study"), stable_uid("series"), stable_uid("frame"))
        write_ct_series(folder, hu, (2.5, 0.7, 0.7), ids, rng=rng)
        assert np.array_equal(read_ct_series(folder).hu, hu)  # the reader is timed on a volume it gets right

        times: dict[str, list[float]] = {"bare": [], "read_ct_series": []}
        for _ in range(args.rounds):
            for name, fn in (("bare", bare), ("read_ct_series", read_ct_series)):
                start = time.perf_counter()
                fn(folder)
                times[name].append(time.perf_counter() - start)

    rate = {name: args.slices / statistics.median(t) for name, t in times.items()}
    print(f"{args.slices} slices of {args.size}x{args.size}, median of {args.rounds} interleaved rounds")
    for name, r in rate.items():
        print(f"  {name:<15} {r:8.1f} slices/s")
    print(f"  ratio read_ct_series / bare = {rate['read_ct_series'] / rate['bare']:.2f}")


if __name__ == "__main__":
    main()
