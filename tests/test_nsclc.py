"""NSCLC-Radiomics: the synthetic NBIA download read back, the clinical CSV, and the layout's pitfalls."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from clearbench.errors import InputError
from clearbench.problems import ProblemLog
from clearbench.scans.nsclc import NSCLCReader, normalise_stage, stage_high
from clearbench.scans.registry import open_dataset
from clearbench.scans.synth.dicom_ct import SeriesIds, stable_uid, write_ct_series
from clearbench.scans.synth.nsclc import CLINICAL_FILE, cohort_stages, synth_patient, write_cohort

SIZE = 32
HEADER = "PatientID,age,clinical.T.Stage,Clinical.N.Stage,Clinical.M.Stage,Overall.Stage,Histology,gender,Survival.time,deadstatus.event"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cohort(tmp_path_factory.mktemp("nsclc") / "download", 4, seed=5, size=SIZE)


@pytest.fixture
def copy(cohort: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(cohort, tmp_path / "download"))


def _csv(root: Path) -> Path:
    return root / CLINICAL_FILE


def _patient_dir(root: Path, pid: str) -> Path:
    return next(root.glob(f"manifest-*/NSCLC-Radiomics/{pid}"))


@pytest.mark.slow
def test_round_trip_fifteen_patients(tmp_path: Path) -> None:
    root = write_cohort(tmp_path / "nsclc", 15, seed=11, size=24)
    stages = cohort_stages(15, 11)
    assert stages.count(None) == 1 and {"I", "II", "IIIa", "IIIb"} <= set(stages)
    reader = open_dataset("nsclc", root)
    records = reader.records()
    assert [r.scan_id for r in records] == [f"LUNG1-{i:03d}" for i in range(1, 16)]
    na = [r.scan_id for r, s in zip(records, stages, strict=True) if s is None]
    assert [p.reason for p in reader.problems.problems] == [
        f"line {int(na[0][-3:]) + 1}: patient {na[0]} has Overall.Stage NA; excluded from stage_high"
    ]
    for i, (rec, stage) in enumerate(zip(records, stages, strict=True)):
        assert rec.patient_id == rec.scan_id
        assert rec.meta["stage"] == stage
        assert rec.labels == {"stage_high": stage_high(stage)}
        scan = reader.load(rec)
        assert scan.n_slices == rec.meta["n_files"] and scan.shape[1:] == (24, 24)
        if i >= 3 and stage is not None:
            continue  # re-rendering the truth is the slow part: compare pixels for three patients and the NA one
        truth = synth_patient(11, i, stage, size=24)
        assert np.abs(scan.hu.astype(np.int32) - truth.hu).max() <= 1
        assert scan.spacing == pytest.approx(truth.spacing)
        assert scan.z_mm == pytest.approx(truth.z_phantom - truth.table_offset, abs=1e-3)
    assert reader.problems.errors == []


def test_written_layout_looks_like_an_nbia_download(cohort: Path) -> None:
    assert _csv(cohort).read_text().splitlines()[0] == HEADER
    patient = _patient_dir(cohort, "LUNG1-001")
    [study] = list(patient.iterdir())
    series = {pydicom.dcmread(next(s.iterdir())).Modality: s for s in study.iterdir()}
    assert set(series) == {"CT", "RTSTRUCT"}
    ct = sorted(series["CT"].iterdir())
    assert ct[0].name == "1-001.dcm"
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in ct]
    assert z != sorted(z) and z != sorted(z, reverse=True)  # name order is not position order
    first = pydicom.dcmread(ct[0])
    assert first.RescaleIntercept == -1024 and first.ImageOrientationPatient == [1, 0, 0, 0, 1, 0]
    assert (cohort / next(cohort.glob("manifest-*")).name / "metadata.csv").is_file()


def test_stage_mapping_of_the_small_cohort(cohort: Path) -> None:
    reader = NSCLCReader(cohort)
    stages = cohort_stages(4, 5)
    assert sorted(stages) == ["I", "II", "IIIa", "IIIb"]
    assert [r.labels["stage_high"] for r in reader.records()] == [stage_high(s) for s in stages]
    assert reader.problems.problems == []


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
        return h.hexdigest()

    a = write_cohort(tmp_path / "a", 2, seed=7, size=16)
    b = write_cohort(tmp_path / "b", 2, seed=7, size=16)
    c = write_cohort(tmp_path / "c", 2, seed=8, size=16)
    assert digest(a) == digest(b) != digest(c)


@pytest.mark.parametrize(
    ("raw", "canonical", "high"),
    [
        ("I", "I", 0.0),
        ("ii", "II", 0.0),
        ("IIIa", "IIIa", 1.0),
        ("IIIB", "IIIb", 1.0),
        (" iiib ", "IIIb", 1.0),
        ("Stage IV", "IV", 1.0),
        ("NA", None, None),
        ("", None, None),
    ],
)
def test_normalise_stage(raw: str, canonical: str | None, high: float | None) -> None:
    assert normalise_stage(raw) == canonical
    assert stage_high(normalise_stage(raw)) == high


def test_unknown_stage_value_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a stage"):
        normalise_stage("T2N1")


def test_stage_na_and_unknown_are_excluded_and_reported(copy: Path) -> None:
    text = _csv(copy).read_text().splitlines()
    rows = [line.split(",") for line in text[1:]]
    rows[0][5], rows[1][5] = "NA", "stage 5"
    _csv(copy).write_text("\n".join([text[0], *(",".join(r) for r in rows)]) + "\n")
    reader = NSCLCReader(copy)
    labels = {r.scan_id: r.labels["stage_high"] for r in reader.records()}
    assert labels["LUNG1-001"] is None and labels["LUNG1-002"] is None
    [na, unknown] = reader.problems.problems
    assert (
        na.severity == "warning"
        and na.scan_id == "LUNG1-001"
        and "Overall.Stage NA; excluded from stage_high" in na.reason
    )
    assert unknown.severity == "error" and "line 3: patient LUNG1-002: 'stage 5' is not a stage" in unknown.reason
    assert na.path == str(_csv(copy))


def test_csv_and_images_are_matched_both_ways(copy: Path) -> None:
    with _csv(copy).open("a") as fh:
        fh.write("LUNG1-301,70.1,2,0,0,I,nos,male,1000,0\nLUNG1-302,70.1,2,0,0,II,nos,male,1000,0\n")
    shutil.rmtree(_patient_dir(copy, "LUNG1-003").parent / "LUNG1-003")
    text = _csv(copy).read_text().splitlines()
    _csv(copy).write_text("\n".join(line for line in text if not line.startswith("LUNG1-004")) + "\n")
    reader = NSCLCReader(copy)
    assert [r.scan_id for r in reader.records()] == ["LUNG1-001", "LUNG1-002", "LUNG1-004"]
    reasons = [p.reason for p in reader.problems.problems]
    assert reasons[0] == "3 patient(s) in the clinical CSV have no CT under the root: LUNG1-003, LUNG1-301, LUNG1-302"
    assert reasons[1] == f"patient LUNG1-004 has no row in {CLINICAL_FILE}; stage unknown"
    assert reader.record("LUNG1-004").labels == {"stage_high": None}


def test_clinical_csv_found_anywhere_under_another_name(copy: Path) -> None:
    moved = copy / "docs" / "NSCLC Radiomics Lung1.clinical-version3-Oct 2019.csv"
    moved.parent.mkdir()
    _csv(copy).rename(moved)
    reader = NSCLCReader(copy)
    assert len(reader.records()) == 4 and reader.problems.problems == []


def test_missing_csv_or_columns(copy: Path) -> None:
    text = _csv(copy).read_text().replace("Overall.Stage", "Stage")
    _csv(copy).write_text(text)
    reader = NSCLCReader(copy)
    assert all(r.labels == {"stage_high": None} for r in reader.records())
    assert "missing required column(s) Overall.Stage" in reader.problems.problems[0].reason

    _csv(copy).unlink()
    reader = NSCLCReader(copy)
    assert len(reader.records()) == 4
    [problem] = reader.problems.problems
    assert "no clinical CSV matching *Lung1.clinical*.csv" in problem.reason
    with pytest.raises(InputError, match="no clinical CSV"):
        NSCLCReader(copy, problems=ProblemLog(strict=True)).records()


def test_ct_series_chosen_by_modality_not_folder(copy: Path) -> None:
    """Rename the RTSTRUCT folder to look like the CT and vice versa; add a scout series folder."""
    study = next(_patient_dir(copy, "LUNG1-002").iterdir())
    folders = {pydicom.dcmread(next(s.iterdir())).Modality: s for s in study.iterdir()}
    folders["CT"].rename(study / "3.000000-RTSTRUCT-00001")
    folders["RTSTRUCT"].rename(study / "0.000000-CT-00002")
    scout_ids = SeriesIds("LUNG1-002", stable_uid("x"), stable_uid("scout"), stable_uid("y"))
    [scout] = write_ct_series(
        study / "1.000000-CT-scout", np.zeros((1, 8, 8), np.int16), (1, 1, 1), scout_ids, rng=np.random.default_rng(0)
    )
    ds = pydicom.dcmread(scout)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.save_as(scout)
    reader = NSCLCReader(copy)
    rec = reader.record("LUNG1-002")
    assert rec.source.name == "3.000000-RTSTRUCT-00001"
    assert reader.load(rec).n_slices == rec.meta["n_files"]
    assert reader.problems.problems == []


def test_scout_inside_the_ct_folder_does_not_hide_it(copy: Path) -> None:
    study = next(_patient_dir(copy, "LUNG1-003").iterdir())
    ct = next(s for s in study.iterdir() if pydicom.dcmread(next(s.iterdir())).Modality == "CT")
    first = sorted(ct.iterdir())[0]
    ds = pydicom.dcmread(first)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.SOPInstanceUID = stable_uid("scout")
    ds.save_as(ct / "0-000.dcm")  # sorts before every slice
    reader = NSCLCReader(copy)
    rec = reader.record("LUNG1-003")
    assert rec.source == ct
    assert reader.load(rec).n_slices == rec.meta["n_files"] - 1
    [problem] = reader.problems.problems
    assert problem.path.endswith("0-000.dcm") and "scout/localizer image" in problem.reason


def test_two_ct_series_for_a_patient_and_nested_patient_folders(copy: Path) -> None:
    study = next(_patient_dir(copy, "LUNG1-001").iterdir())
    ct = next(s for s in study.iterdir() if pydicom.dcmread(next(s.iterdir())).Modality == "CT")
    ids = SeriesIds("LUNG1-001", stable_uid("s"), stable_uid("second"), stable_uid("f"))
    write_ct_series(
        study / "5.000000-NA-12345", np.zeros((3, SIZE, SIZE), np.int16), (5, 1, 1), ids, rng=np.random.default_rng(0)
    )
    other = _patient_dir(copy, "LUNG1-002")
    other.rename(ct / "LUNG1-002")  # a misplaced download: one patient inside another's CT folder
    reader = NSCLCReader(copy)
    assert [r.scan_id for r in reader.records()] == ["LUNG1-001", "LUNG1-002", "LUNG1-003", "LUNG1-004"]
    assert reader.record("LUNG1-001").source == ct
    reasons = sorted(p.reason for p in reader.problems.problems)
    assert reasons[0].startswith("patient LUNG1-001 has 2 CT series; using this one")
    assert (
        reasons[1]
        == "series of patient LUNG1-002 is nested inside the folder of LUNG1-001; move it up beside the other patients"
    )
    assert all(p.severity == "warning" for p in reader.problems.problems)
    assert reader.load(reader.record("LUNG1-001")).n_slices == reader.record("LUNG1-001").meta["n_files"]


def test_empty_root(tmp_path: Path) -> None:
    reader = NSCLCReader(tmp_path)
    assert reader.records() == []
    reasons = [p.reason for p in reader.problems.problems]
    assert any("no axial CT series found under the root" in r for r in reasons)
