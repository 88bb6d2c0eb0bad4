"""A synthetic NSCLC-Radiomics download: phantom chest CTs as DICOM in the NBIA layout, plus the clinical CSV.

What is written under ``out``::

    NSCLC-Radiomics-Lung1.clinical-version3-Oct-2019.csv      the TCIA header, exactly
    manifest-<digits>/metadata.csv                            NBIA's series list
    manifest-<digits>/NSCLC-Radiomics/LUNG1-001/
        09-18-2008-StudyID-NA-69331/
            1.000000-NA-82046/1-001.dcm ...                   the CT, files in shuffled order
            3.000000-NA-78236/1-1.dcm                         an RTSTRUCT with the GTV-1 contours

The ground truth is learnable: the primary tumour grows with the stage (I small … IIIb large) and stage
III patients also get enlarged mediastinal nodes, so ``stage_high`` can be read off the images. About one
patient in fifteen has stage NA, as a real export can. Everything follows from ``seed``; patient ``i``
depends only on ``(seed, i)`` and its stage.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clearbench.scans.nsclc import CLINICAL_COLUMNS
from clearbench.scans.synth import prepare_root
from clearbench.scans.synth.dicom_ct import SeriesIds, stable_uid, write_ct_series, write_rtstruct
from clearbench.scans.synth.phantom import PhantomLesion, lung_tumour, place_lesion, render, sample_anatomy

CLINICAL_FILE = "NSCLC-Radiomics-Lung1.clinical-version3-Oct-2019.csv"
NBIA_METADATA_COLUMNS = (
    "Series UID",
    "Collection",
    "3rd Party Analysis",
    "Data Description URI",
    "Subject ID",
    "Study UID",
    "Study Description",
    "Study Date",
    "Series Description",
    "Manufacturer",
    "Modality",
    "SOP Class Name",
    "SOP Class UID",
    "Number of Images",
    "File Size",
    "File Location",
    "Download Timestamp",
)
# Stages cycle in this order before shuffling, so that any cohort of two or more has both classes.
STAGE_CYCLE = ("I", "IIIb", "II", "IIIa")
NA_EVERY = 15
# Stage -> primary tumour diameter range (mm), mediastinal nodes (count, diameter range mm), N stage.
TUMOUR_MM = {"I": (12.0, 30.0), "II": (30.0, 48.0), "IIIa": (42.0, 62.0), "IIIb": (55.0, 80.0)}
NODES = {"I": (0, (0.0, 0.0), 0), "II": (0, (0.0, 0.0), 1), "IIIa": (1, (15.0, 24.0), 2), "IIIb": (2, (20.0, 30.0), 3)}
HISTOLOGY = ("adenocarcinoma", "large cell", "squamous cell carcinoma", "nos", "NA")
TUMOUR_CONTOUR_POINTS = 24


@dataclass(frozen=True)
class SynthPatient:
    """One synthetic patient: the CT as written (display orientation, increasing z) and its truth."""

    patient_id: str
    stage: str | None
    clinical: dict[str, str]
    hu: np.ndarray
    spacing: tuple[float, float, float]
    z_phantom: np.ndarray  # phantom z (mm) of every slice, increasing
    table_offset: float  # DICOM z = phantom z - table_offset
    tumour: PhantomLesion
    nodes: tuple[PhantomLesion, ...]
    unsigned: bool


def patient_id(index: int) -> str:
    return f"LUNG1-{index + 1:03d}"


def cohort_stages(n_scans: int, seed: int) -> list[str | None]:
    """The overall stage of each patient: balanced over I, II, IIIa, IIIb, with one NA per fifteen."""
    rng = np.random.default_rng([seed, 0x57A6E])
    stages: list[str | None] = [STAGE_CYCLE[k % len(STAGE_CYCLE)] for k in range(n_scans)]
    order = rng.permutation(n_scans)
    stages = [stages[k] for k in order]
    for k in rng.permutation(n_scans)[: n_scans // NA_EVERY]:
        stages[int(k)] = None
    return stages


def _t_stage(diameter_mm: float) -> int:
    return 1 if diameter_mm <= 30 else 2 if diameter_mm <= 50 else 3 if diameter_mm <= 70 else 4


def synth_patient(seed: int, index: int, stage: str | None, *, size: int = 64) -> SynthPatient:
    """Render patient ``index`` of a cohort: anatomy, a lung tumour sized by stage, nodes for stage III."""
    rng = np.random.default_rng([seed, index, 0x15C1C])
    anatomy = sample_anatomy(rng)
    drawn = stage if stage is not None else STAGE_CYCLE[int(rng.integers(len(STAGE_CYCLE)))]
    lo, hi = TUMOUR_MM[drawn]
    tumour = lung_tumour(anatomy, float(rng.uniform(lo, hi)), rng)
    n_nodes, (node_lo, node_hi), n_stage = NODES[drawn]
    nodes = tuple(
        place_lesion(anatomy, "mediastinum", rng, diameter_mm=float(rng.uniform(node_lo, node_hi)))
        for _ in range(n_nodes)
    )

    px = anatomy.fov_mm / size
    dz = float(np.clip(round(px * 2) / 2, 2.5, 5.0))
    z_lo, z_hi = anatomy.regions["chest"]
    z = np.arange(z_lo, z_hi, dz)
    hu = render(anatomy, z, size=size, features=[tumour, *nodes])
    table_offset = float(np.round(rng.uniform(350.0, 750.0), 1))

    dead = bool(rng.random() < (0.75 if drawn.startswith("III") else 0.45))
    survival = int(rng.integers(60, 900) if drawn.startswith("III") else rng.integers(400, 3500))
    clinical = {
        "PatientID": patient_id(index),
        "age": f"{rng.uniform(45.0, 88.0):.4f}",
        "clinical.T.Stage": str(_t_stage(tumour.diameter_mm)),
        "Clinical.N.Stage": str(n_stage),
        "Clinical.M.Stage": "0",
        "Overall.Stage": stage if stage is not None else "NA",
        "Histology": HISTOLOGY[int(rng.integers(len(HISTOLOGY)))],
        "gender": "female" if anatomy.sex == "F" else "male",
        "Survival.time": str(survival),
        "deadstatus.event": "1" if dead else "0",
    }
    return SynthPatient(
        patient_id=patient_id(index),
        stage=stage,
        clinical=clinical,
        hu=hu,
        spacing=(dz, px, px),
        z_phantom=z,
        table_offset=table_offset,
        tumour=tumour,
        nodes=nodes,
        unsigned=bool(rng.random() < 0.75),
    )


def _tumour_contours(p: SynthPatient) -> list[np.ndarray]:
    """The GTV outline on every CT slice it crosses, in DICOM patient coordinates (mm)."""
    t = np.linspace(0.0, 2.0 * math.pi, TUMOUR_CONTOUR_POINTS, endpoint=False)
    contours = []
    for z in p.z_phantom:
        sec = p.tumour.shape.section(float(z))
        if sec is None:
            continue
        c, s = math.cos(sec.angle), math.sin(sec.angle)
        u, v = sec.a * np.cos(t), sec.b * np.sin(t)
        xs, ys = sec.cx + u * c - v * s, sec.cy + u * s + v * c
        contours.append(np.stack([xs, ys, np.full_like(xs, z - p.table_offset)], axis=1))
    return contours


def _write_patient(patient_root: Path, p: SynthPatient, seed: int, index: int) -> list[dict[str, str]]:
    """Write one patient's study (CT + RTSTRUCT); return the NBIA metadata rows of its series."""
    rng = np.random.default_rng([seed, index, 0xD1C0])
    study_uid = stable_uid("nsclc", seed, index, "study")
    frame_uid = stable_uid("nsclc", seed, index, "frame")
    ct_uid = stable_uid("nsclc", seed, index, "ct")
    rt_uid = stable_uid("nsclc", seed, index, "rtstruct")
    year, month, day = int(rng.integers(2004, 2015)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    study_dir = patient_root / f"{month:02d}-{day:02d}-{year}-StudyID-NA-{study_uid[-5:]}"
    ct_number = int(rng.integers(0, 3))
    ct_dir = study_dir / f"{ct_number}.000000-NA-{ct_uid[-5:]}"
    rt_dir = study_dir / f"3.000000-NA-{rt_uid[-5:]}"
    date = f"{year}{month:02d}{day:02d}"

    ct_ids = SeriesIds(p.patient_id, study_uid, ct_uid, frame_uid, ct_number, "", date)
    paths = write_ct_series(
        ct_dir, p.hu, p.spacing, ct_ids, rng=rng, z0=float(p.z_phantom[0]) - p.table_offset, unsigned=p.unsigned
    )
    rt_ids = SeriesIds(p.patient_id, study_uid, rt_uid, frame_uid, 3, "", date)
    rt_path = write_rtstruct(rt_dir / "1-1.dcm", rt_ids, ct_uid, "GTV-1", _tumour_contours(p))

    def row(uid: str, modality: str, sop_name: str, sop_uid: str, files: list[Path], folder: Path) -> dict[str, str]:
        return {
            "Series UID": uid,
            "Collection": "NSCLC-Radiomics",
            "3rd Party Analysis": "NO",
            "Data Description URI": "https://doi.org/10.7937/K9/TCIA.2015.PF0M9REI",
            "Subject ID": p.patient_id,
            "Study UID": study_uid,
            "Study Description": "",
            "Study Date": f"{month:02d}-{day:02d}-{year}",
            "Series Description": "",
            "Manufacturer": "clearbench synthetic",
            "Modality": modality,
            "SOP Class Name": sop_name,
            "SOP Class UID": sop_uid,
            "Number of Images": str(len(files)),
            "File Size": f"{sum(f.stat().st_size for f in files) / 1e6:.2f} MB",
            "File Location": "./" + folder.relative_to(patient_root.parent.parent).as_posix(),
            "Download Timestamp": "2020-10-20T10:22:41.000",
        }

    return [
        row(ct_uid, "CT", "CT Image Storage", "1.2.840.10008.5.1.4.1.1.2", paths, ct_dir),
        row(rt_uid, "RTSTRUCT", "RT Structure Set Storage", "1.2.840.10008.5.1.4.1.1.481.3", [rt_path], rt_dir),
    ]


def write_cohort(
    out: Path, n_scans: int, seed: int, *, size: int = 64, progress: Callable[[int], None] | None = None
) -> Path:
    """Write ``n_scans`` synthetic NSCLC-Radiomics patients under ``out``; return ``out`` (the ``--root``).

    ``progress`` is called with 1 after each patient, for a progress bar.
    """
    # A second cohort written into the same folder would add a second CT series to every patient and replace
    # the clinical CSV, silently mixing two cohorts. Sizes down to 16 px still give a valid DICOM series (the
    # reader tests use them); the CLI asks for 32 px, as for the other datasets.
    out = prepare_root(
        out, n_scans, size, dataset="NSCLC-Radiomics", markers=("*Lung1.clinical*.csv", "manifest-*"), min_size=16
    )
    collection = out / f"manifest-{1603198545583 + seed}" / "NSCLC-Radiomics"
    collection.mkdir(parents=True)
    stages = cohort_stages(n_scans, seed)
    metadata: list[dict[str, str]] = []
    clinical: list[dict[str, str]] = []
    for index, stage in enumerate(stages):
        patient = synth_patient(seed, index, stage, size=size)
        metadata += _write_patient(collection / patient.patient_id, patient, seed, index)
        clinical.append(patient.clinical)
        if progress is not None:
            progress(1)
    with (collection.parent / "metadata.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=NBIA_METADATA_COLUMNS)
        writer.writeheader()
        writer.writerows(metadata)
    with (out / CLINICAL_FILE).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CLINICAL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(clinical)
    return out
