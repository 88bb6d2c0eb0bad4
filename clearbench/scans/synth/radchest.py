"""A synthetic RAD-ChestCT cohort in the real on-disk layout.

Writes, under the root:

- ``{NoteAcc_DEID}.npz`` per scan (``trn00001``, ``val00001``, ``tst00001`` ...), key ``ct``, int16 HU
  clipped to [-1000, 1000], axes (superior→inferior, anterior→posterior, right→left) as in the
  release. The release resamples to 0.8 mm isotropic; a phantom at 64 px keeps the isotropic grid but
  at ``fov / size`` mm (about 6 mm), and that spacing is recorded in the metadata CSV's
  ``final_spacing`` column;
- ``img{train,valid,test}_Abnormality_and_Location_Labels.csv``: ``NoteAcc_DEID`` then 0/1 columns
  ``{abnormality}*{location}``. The real files have all 84 × 52 = 4,368 columns; these hold the subset
  (:data:`LABEL_COLUMNS`) that covers the CLEAR paper's 8 abnormalities at the locations the phantom
  draws them, plus a few other findings (cardiomegaly, lymphadenopathy, ...) and some that never occur;
- ``CT_Scan_Metadata_Complete_{n}.csv``: ``NoteAcc_DEID`` → ``MRN_DEID`` (about a quarter of the
  patients have two scans, always in the same split), set names and spacing.

Every label is drawn first, then painted by :func:`clearbench.scans.synth.phantom.chest_finding`, so
the labels are the ground truth of what the volume shows.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from clearbench.scans.synth import prepare_root
from clearbench.scans.synth.phantom import LOBES, Anatomy, chest_finding, render, sample_anatomy

# Prevalence of each finding in the synthetic cohort.
PREVALENCE: dict[str, float] = {
    "emphysema": 0.3,
    "bronchiectasis": 0.25,
    "pleural_effusion": 0.25,
    "atelectasis": 0.35,
    "fibrosis": 0.25,
    "opacity": 0.35,
    "calcification": 0.4,
    "nodule": 0.4,
    "cardiomegaly": 0.15,
    "pericardial_effusion": 0.1,
    "lymphadenopathy": 0.2,
}

_SIDES = ("right", "left")
_LOWER_MID = tuple(f"{s}_{lvl}" for s in _SIDES for lvl in ("lower", "mid"))
LABEL_COLUMNS: tuple[str, ...] = tuple(
    [f"emphysema*{s}_{lvl}" for s in _SIDES for lvl in ("upper", "mid")]
    + [f"emphysema*{s}_lung" for s in _SIDES]
    + ["emphysema*lung"]
    + [f"bronchiectasis*{loc}" for loc in _LOWER_MID]
    + ["bronchiectasis*airways"]
    + [f"pleural_effusion*{s}" for s in _SIDES]
    + [f"atelectasis*{loc}" for loc in _LOWER_MID]
    + [f"fibrosis*{loc}" for loc in _LOWER_MID]
    + ["fibrosis*lung"]
    + [f"opacity*{lobe}" for lobe in LOBES]
    + [f"calcification*{loc}" for loc in (*LOBES, "hilum", "mediastinum", "aorta", "heart")]
    + [f"nodule*{lobe}" for lobe in LOBES]
    + [f"nodulegr1cm*{lobe}" for lobe in LOBES]
    + [f"groundglass*{lobe}" for lobe in LOBES]
    + [f"reticulation*{s}_lower" for s in _SIDES]
    + [
        "atherosclerosis*aorta",
        "coronary_artery_disease*heart",
        "cardiomegaly*heart",
        "pericardial_effusion*heart",
        "lymphadenopathy*mediastinum",
        "lymphadenopathy*hilum",
    ]
    + [f"pneumothorax*{s}" for s in _SIDES]
    + [f"consolidation*{s}_lower" for s in _SIDES]
)
SPLITS: dict[str, tuple[str, str, str]] = {  # prefix -> (label CSV subset, Set_Assigned, Subset_Assigned)
    "trn": ("imgtrain", "imgtrain_notetrain", "imgtrain"),
    "val": ("imgvalid", "imgvalid_a", "imgvalid_a"),
    "tst": ("imgtest", "imgtest_a", "imgtest_a"),
}


def save_npz(path: Path, ct: np.ndarray) -> None:
    """Write ``{ct: array}`` like ``np.savez_compressed`` but byte-identical run to run.

    ``np.savez_compressed`` stamps the zip entry with the current time; a fixed timestamp keeps a
    seed's cohort reproducible to the byte.
    """
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(ct), allow_pickle=False)
    info = zipfile.ZipInfo("ct.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info, buf.getvalue())


def _write_volume(path: Path, anatomy: Anatomy, rng: np.random.Generator, size: int) -> tuple[set[str], float, int]:
    """Draw one scan's findings, render and save it; return its positive labels, spacing (mm) and slice count."""
    names = [name for name, p in PREVALENCE.items() if rng.random() < p]
    findings = [chest_finding(anatomy, name, rng) for name in names]
    positive = {label for f in findings for label in f.labels}
    stray = positive - set(LABEL_COLUMNS)
    if stray:
        raise RuntimeError(f"phantom labels missing from LABEL_COLUMNS: {sorted(stray)}")
    spacing = round(anatomy.fov_mm / size, 4)
    lo, hi = anatomy.regions["chest"]
    z_desc = np.arange(hi, lo, -spacing)  # superior -> inferior, as the release stores axis 0
    hu = render(
        anatomy,
        z_desc,
        size=size,
        spacing_mm=spacing,
        features=findings,
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )
    save_npz(path, np.clip(hu, -1000, 1000).astype(np.int16))
    return positive, spacing, int(hu.shape[0])


def _write_tables(
    out: Path, n_scans: int, label_rows: dict[str, list[list[int | str]]], meta_rows: list[list[str]]
) -> None:
    """The label CSV of each split and the metadata CSV, laid out as the release's."""
    for prefix, rows in label_rows.items():
        with (out / f"{SPLITS[prefix][0]}_Abnormality_and_Location_Labels.csv").open("w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["NoteAcc_DEID", *LABEL_COLUMNS])
            writer.writerows(rows)
    meta_rows.sort(key=lambda r: r[1])
    with (out / f"CT_Scan_Metadata_Complete_{n_scans}.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(
            [
                "VolumeAcc_DEID",
                "NoteAcc_DEID",
                "MRN_DEID",
                "Set_Assigned",
                "Subset_Assigned",
                "PatientAge",
                "PatientSex",
                "final_spacing",
                "final_numslices",
                "final_square",
            ]
        )
        writer.writerows(meta_rows)


def write_cohort(
    out: Path,
    n_scans: int,
    seed: int,
    *,
    size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``n_scans`` RAD-ChestCT volumes plus label and metadata CSVs under ``out``; return ``out``.

    The same ``seed`` gives byte-identical files. ``progress`` is called with 1 after each volume.
    """
    out = prepare_root(
        out, n_scans, size, dataset="RAD-ChestCT", markers=("*_Abnormality_and_Location_Labels.csv", "*.npz")
    )
    rng = np.random.default_rng(seed)

    counters = {prefix: 0 for prefix in SPLITS}
    label_rows: dict[str, list[list[int | str]]] = {prefix: [] for prefix in SPLITS}
    meta_rows: list[list[str]] = []
    written, patient = 0, 0
    while written < n_scans:
        patient += 1
        prefix = str(rng.choice(list(SPLITS), p=[0.7, 0.15, 0.15]))
        anatomy = sample_anatomy(rng)
        age = int(rng.integers(18, 90))
        for _ in range(2 if rng.random() < 0.25 else 1):
            if written == n_scans:
                break
            counters[prefix] += 1
            acc = f"{prefix}{counters[prefix]:05d}"
            positive, spacing, n_slices = _write_volume(out / f"{acc}.npz", anatomy, rng, size)
            label_rows[prefix].append([acc, *(1 if c in positive else 0 for c in LABEL_COLUMNS)])
            _, set_name, subset = SPLITS[prefix]
            meta_rows.append(
                [
                    f"{acc}.npz",
                    acc,
                    f"mrn{patient:05d}",
                    set_name,
                    subset,
                    str(age),
                    anatomy.sex,
                    f"{spacing:g}",
                    str(n_slices),
                    str(size),
                ]
            )
            written += 1
            if progress is not None:
                progress(1)

    _write_tables(out, n_scans, label_rows, meta_rows)
    return out
