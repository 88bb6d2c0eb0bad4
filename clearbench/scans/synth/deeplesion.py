"""A synthetic NIH DeepLesion cohort in the real on-disk layout.

Writes ``Images_png/{patient:06d}_{study:02d}_{series:02d}/{slice:03d}.png`` (16-bit grayscale, value
= HU + 32768) and ``DL_info.csv`` with the 18 documented columns: quoted multi-value fields separated
by ", ", boxes, RECIST points and slice numbers counted from 1, and ``Train_Val_Test`` assigned by
patient. Each patient has one to three studies (one or two series each); each series holds one to
three phantom lesions, and only the slices inside each lesion's ``Slice_range`` (the key slice ±30
mm, more for large lesions) are written, so folders whose lesions lie far apart hold two or three
separate runs of slices, as real folders do.

Slice numbers run head to feet (slice 1 is the most superior), the order the official
``DL_save_nifti.py`` affine assumes.

Unlike the real dataset, **every row carries its coarse lesion type** (the real train split has
``Coarse_lesion_type = -1`` throughout), so that the lesion-location task can train on any split of a
synthetic cohort. ``Possibly_noisy`` is 0 everywhere: the synthetic annotations are exact.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clearbench.scans.deeplesion import DL_COLUMNS
from clearbench.scans.scan import LESION_TYPES
from clearbench.scans.synth import prepare_root
from clearbench.scans.synth.phantom import Anatomy, PhantomLesion, place_lesion, render, sample_anatomy

_TYPE_CODE = {name: code for code, name in LESION_TYPES.items()}
# DeepLesion boxes are the RECIST extent padded by 5 px of a 512-px image.
_BOX_PAD_512 = 5.0
_CONTEXT_MM = 30.0


def _fmt(values: tuple[float, ...] | list[float]) -> str:
    return ", ".join(f"{v:.6g}" for v in values)


@dataclass
class _Series:
    folder: str
    patient: int
    study: int
    series: int
    anatomy: Anatomy
    sex: str
    age: float | None
    split: int


def _plan(n_scans: int, rng: np.random.Generator) -> list[_Series]:
    """Patients, their studies and series, until there are ``n_scans`` series folders."""
    out: list[_Series] = []
    patient = 0
    while len(out) < n_scans:
        patient += 1
        anatomy = sample_anatomy(rng)
        split = int(rng.choice([1, 2, 3], p=[0.7, 0.15, 0.15]))
        age0 = None if rng.random() < 0.04 else float(rng.integers(22, 86))
        for study in range(1, int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2])) + 1):
            age = None if age0 is None else age0 + (study - 1) * float(rng.integers(0, 2))
            for series in range(1, (2 if rng.random() < 0.2 else 1) + 1):
                if len(out) == n_scans:
                    break
                folder = f"{patient:06d}_{study:02d}_{series:02d}"
                out.append(_Series(folder, patient, study, series, anatomy, anatomy.sex, age, split))
    return out


def _write_png(path: Path, hu: np.ndarray) -> None:
    raw = (hu.astype(np.int32) + 32768).astype(np.uint16)
    Image.fromarray(raw).save(path, format="PNG", compress_level=1)


def _series_rows(s: _Series, rng: np.random.Generator, size: int, images: Path) -> list[list[str]]:
    """Render and write one series folder; return its DL_info.csv rows."""
    an = s.anatomy
    z_step = 5.0 if rng.random() < 0.75 else 2.5
    px = round(an.fov_mm * float(rng.uniform(0.96, 1.04)) / size, 6)
    z_top = an.length_mm - float(rng.uniform(0.0, 10.0))
    n_total = int(z_top // z_step) + 1  # slice k (1-based) lies at z_top - (k - 1) * z_step
    numbers = np.arange(1, n_total + 1)
    z_of = z_top - (numbers - 1) * z_step

    n_lesions = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    lesions: list[PhantomLesion] = []
    for _ in range(n_lesions):
        kind = LESION_TYPES[int(rng.integers(1, 9))]
        lesions.append(place_lesion(an, kind, rng))

    ranges: list[tuple[int, int]] = []
    for les in lesions:
        key = int(numbers[np.argmin(np.abs(z_of - les.shape.center[2]))])
        half = math.ceil(max(_CONTEXT_MM, les.shape.radii[2] + 10.0) / z_step)
        ranges.append((max(1, key - half), min(n_total, key + half)))
    keep = sorted({k for lo, hi in ranges for k in range(lo, hi + 1)})

    folder = images / s.folder
    folder.mkdir(parents=True, exist_ok=False)
    zs = z_top - (np.asarray(keep) - 1) * z_step
    noise_seed = int(rng.integers(0, 2**31 - 1))
    hu = render(an, zs, size=size, spacing_mm=px, features=lesions, noise_seed=noise_seed)
    for number, img in zip(keep, hu, strict=True):
        _write_png(folder / f"{number:03d}.png", img)

    pad = _BOX_PAD_512 * size / 512.0
    rows = []
    for les, (lo, hi) in zip(lesions, ranges, strict=True):
        ann = les.annotate(zs, size=size, spacing_mm=px)
        key = keep[ann.key_index]
        x1, y1, x2, y2 = ann.box
        box = (
            max(x1 - pad, 0.0) + 1,
            max(y1 - pad, 0.0) + 1,
            min(x2 + pad, size - 1.0) + 1,
            min(y2 + pad, size - 1.0) + 1,
        )
        recist = tuple(v + 1 for v in ann.recist)
        location = (ann.center_px[0] / size, ann.center_px[1] / size, les.shape.center[2] / an.length_mm)
        window = "-1500, 500" if les.type == "lung" else "-175, 275"
        rows.append(
            [
                f"{s.folder}_{key:03d}.png",
                str(s.patient),
                str(s.study),
                str(s.series),
                str(key),
                _fmt(recist),
                _fmt(box),
                _fmt(ann.diameters_px),
                _fmt(location),
                str(_TYPE_CODE[les.type]),
                "0",
                f"{lo}, {hi}",
                f"{px:.6g}, {px:.6g}, {z_step:g}",
                f"{size}, {size}",
                window,
                s.sex,
                "" if s.age is None else f"{s.age:g}",
                str(s.split),
            ]
        )
    rows.sort(key=lambda r: (int(r[4]), r[5]))
    return rows


def write_cohort(
    out: Path,
    n_scans: int,
    seed: int,
    *,
    size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``n_scans`` DeepLesion series folders plus ``DL_info.csv`` under ``out``; return ``out``.

    The same ``seed`` gives byte-identical files. ``progress`` is called with 1 after each series.
    """
    out = prepare_root(out, n_scans, size, dataset="DeepLesion", markers=("Images_png", "DL_info.csv"))
    images = out / "Images_png"
    images.mkdir()
    rng = np.random.default_rng(seed)
    rows: list[list[str]] = []
    for series in _plan(n_scans, rng):
        rows += _series_rows(series, rng, size, images)
        if progress is not None:
            progress(1)
    with (out / "DL_info.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(DL_COLUMNS)
        writer.writerows(rows)
    return out
