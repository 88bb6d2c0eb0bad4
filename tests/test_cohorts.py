"""Bring-your-own cohorts (``dicom`` and ``nifti``): round trips from written files, and the labels CSV checks."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from clearbench.errors import InputError
from clearbench.problems import ProblemLog
from clearbench.scans.dicom import DicomCohortReader
from clearbench.scans.nifti import NiftiCohortReader
from clearbench.scans.registry import open_dataset
from clearbench.scans.synth.dicom_ct import SeriesIds, stable_uid, write_ct_series

SPACING = (2.0, 0.75, 0.8)
LABELS = "scan_id,patient_id,nodule,emphysema\ncase1,P1,1,0\ncase2,P1,0,NA\ncase3,P2,1,1\n"


def _volume(seed: int, shape: tuple[int, int, int] = (5, 12, 10)) -> np.ndarray:
    """A volume whose every voxel differs, so any flip or transpose shows up."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 1800, size=shape).astype(np.int16)


def _write_dicom_cohort(root: Path, labels: str = LABELS) -> dict[str, np.ndarray]:
    volumes = {}
    for i, scan_id in enumerate(["case1", "case2", "case3"]):
        hu = _volume(i)
        ids = SeriesIds(f"PAT{i}", stable_uid("study", i), stable_uid("series", i), stable_uid("frame", i))
        write_ct_series(root / scan_id / "CT", hu, SPACING, ids, rng=np.random.default_rng(i), z0=-40.0 + i)
        volumes[scan_id] = hu
    (root / "labels.csv").write_text(labels)
    return volumes


def test_dicom_cohort_round_trip(tmp_path: Path) -> None:
    volumes = _write_dicom_cohort(tmp_path)
    reader = open_dataset("dicom", tmp_path)
    assert isinstance(reader, DicomCohortReader)
    records = reader.records()
    assert reader.problems.problems == []
    assert [r.scan_id for r in records] == ["case1", "case2", "case3"]
    assert [r.patient_id for r in records] == ["P1", "P1", "P2"]
    assert reader.label_names == ("nodule", "emphysema")
    assert records[1].labels == {"nodule": 0.0, "emphysema": None}
    scans = list(reader.scans())
    assert len(scans) == 3
    for i, scan in enumerate(scans):
        assert np.abs(scan.hu.astype(np.int32) - volumes[scan.scan_id]).max() <= 1
        assert scan.spacing == pytest.approx(SPACING)
        assert scan.z_mm == pytest.approx(-40.0 + i + 2.0 * np.arange(5))
        assert scan.patient_id == records[i].patient_id


def test_dicom_cohort_mismatches_are_reported(tmp_path: Path) -> None:
    labels = "scan_id,patient_id,nodule\ncase1,P1,1\ncase2,P1,maybe\nghost,P9,0\n"
    _write_dicom_cohort(tmp_path, labels)
    (tmp_path / "empty_case").mkdir()
    log = ProblemLog()
    reader = DicomCohortReader(tmp_path, problems=log)
    records = {r.scan_id: r for r in reader.records()}
    assert sorted(records) == ["case1", "case2", "case3"]
    reasons = [p.reason for p in log.problems]
    assert any("line 3: label 'nodule' of scan 'case2' is 'maybe', not a number" in r for r in reasons)
    assert any("line 4: scan 'ghost' has a labels row but no images" in r for r in reasons)
    assert any("scan 'case3' has no row in labels.csv" in r for r in reasons)
    assert any(p.path.endswith("empty_case") and "empty folder" in p.reason for p in log.problems)
    assert all(p.severity == "error" for p in log.problems)
    assert records["case2"].labels == {"nodule": None}
    assert records["case3"].labels == {"nodule": None} and records["case3"].patient_id == "case3"


def test_dicom_cohort_two_series_in_one_scan_folder(tmp_path: Path) -> None:
    _write_dicom_cohort(tmp_path)
    ids = SeriesIds("PAT0", stable_uid("study", 0), stable_uid("other"), stable_uid("frame", 0))
    write_ct_series(tmp_path / "case1" / "CT-2", _volume(9), SPACING, ids, rng=np.random.default_rng(9))
    reader = DicomCohortReader(tmp_path)
    loaded = [s.scan_id for s in reader.scans()]
    assert loaded == ["case2", "case3"]
    [problem] = reader.problems.problems
    assert problem.scan_id == "case1" and "2 CT series in one folder" in problem.reason
    with pytest.raises(InputError, match="2 CT series"):
        list(DicomCohortReader(tmp_path, problems=ProblemLog(strict=True)).scans())


def test_labels_csv_missing_required_columns(tmp_path: Path) -> None:
    _write_dicom_cohort(tmp_path, "id,patient_id,nodule\ncase1,P1,1\n")
    reader = DicomCohortReader(tmp_path)
    records = reader.records()
    assert len(records) == 3 and all(r.labels == {} for r in records)
    [problem] = reader.problems.problems
    assert problem.path.endswith("labels.csv") and "missing required column(s) scan_id" in problem.reason

    (tmp_path / "labels.csv").write_text("scan_id,nodule\ncase1,1\ncase2,0\ncase3,1\n")
    reader = DicomCohortReader(tmp_path)
    assert [r.patient_id for r in reader.records()] == ["case1", "case2", "case3"]
    assert [p.reason for p in reader.problems.problems] == [
        "missing required column patient_id: patient-grouped splits need it; every scan is taken as its own patient"
    ]


def test_empty_root_is_reported(tmp_path: Path) -> None:
    reader = DicomCohortReader(tmp_path)
    assert reader.records() == []
    assert [Path(p.path).name for p in reader.problems.problems] == [tmp_path.name, "labels.csv"]
    assert "no scans found" in reader.problems.problems[0].reason


def _display_to_ras(display: np.ndarray, spacing: tuple[float, float, float], layout: str) -> nib.Nifti1Image:
    """The same display volume stored three ways a NIfTI exporter might choose."""
    dz, dy, dx = spacing
    ijk = display.transpose(2, 1, 0)  # i = column (towards patient left), j = row (towards posterior), k = z
    if layout == "LPS":  # dcm2niix-like: i to the left, j to the back, k up
        affine = np.diag([-dx, -dy, dz, 1.0])
        data = ijk
    elif layout == "RAS":
        affine = np.diag([dx, dy, dz, 1.0])
        data = ijk[::-1, ::-1, :]
    else:  # "LPI": stored head first, like RAD-ChestCT volumes
        affine = np.diag([-dx, -dy, -dz, 1.0])
        data = ijk[:, :, ::-1]
    affine[:3, 3] = (10.0, -20.0, 30.0)
    return nib.Nifti1Image(np.ascontiguousarray(data), affine)


@pytest.mark.parametrize("layout", ["LPS", "RAS", "LPI"])
def test_nifti_reoriented_to_display(tmp_path: Path, layout: str) -> None:
    display = _volume(3)
    nib.save(_display_to_ras(display, SPACING, layout), tmp_path / "case1.nii.gz")
    (tmp_path / "labels.csv").write_text("scan_id,patient_id,nodule\ncase1,P1,1\n")
    reader = open_dataset("nifti", tmp_path)
    [scan] = list(reader.scans())
    assert reader.problems.problems == []
    np.testing.assert_array_equal(scan.hu, display)
    assert scan.spacing == pytest.approx(SPACING)
    assert np.diff(scan.z_mm) == pytest.approx(np.full(4, SPACING[0]))
    assert scan.patient_id == "P1"


def test_nifti_cohort_round_trip_with_scaled_data(tmp_path: Path) -> None:
    volumes = {}
    for i, scan_id in enumerate(["case1", "case2", "case3"]):
        display = _volume(10 + i)
        img = _display_to_ras((display.astype(np.int32) + 1024).astype(np.uint16), SPACING, "LPS")
        img.header.set_slope_inter(1.0, -1024.0)
        sub = tmp_path / ("nested" if i == 2 else "")
        sub.mkdir(exist_ok=True)
        nib.save(img, sub / (f"{scan_id}.nii" if i == 1 else f"{scan_id}.nii.gz"))
        volumes[scan_id] = display
    (tmp_path / "labels.csv").write_text(LABELS)
    reader = NiftiCohortReader(tmp_path)
    records = reader.records()
    assert [r.scan_id for r in records] == ["case1", "case2", "case3"]
    assert [r.patient_id for r in records] == ["P1", "P1", "P2"]
    assert reader.label_names == ("nodule", "emphysema")
    for scan in reader.scans():
        assert scan.hu.dtype == np.int16
        assert np.abs(scan.hu.astype(np.int32) - volumes[scan.scan_id]).max() <= 1
    assert reader.problems.problems == []


def test_nifti_integer_data_beyond_int16_is_clipped_with_a_warning(tmp_path: Path) -> None:
    # Unscaled integer volumes skip the float path; values int16 cannot hold are still clipped and reported.
    display = _volume(5).astype(np.int32)
    display[0, 0, 0], display[1, 2, 3] = 40_000, -40_000
    nib.save(_display_to_ras(display, SPACING, "LPS"), tmp_path / "wide.nii.gz")
    (tmp_path / "labels.csv").write_text("scan_id,patient_id,nodule\nwide,P1,1\n")
    reader = NiftiCohortReader(tmp_path)
    [scan] = list(reader.scans())
    expected = np.clip(display, -32768, 32767).astype(np.int16)
    assert scan.hu.dtype == np.int16 and np.array_equal(scan.hu, expected)
    [problem] = reader.problems.problems
    assert problem.severity == "warning" and "2 voxel(s) outside the int16 HU range were clipped" in problem.reason


def test_nifti_bad_volumes(tmp_path: Path) -> None:
    affine = np.diag([-0.8, -0.75, 2.0, 1.0])
    partly = _volume(4).astype(np.float32)
    partly[0, 0, :3] = np.nan
    nib.save(nib.Nifti1Image(partly.transpose(2, 1, 0), affine), tmp_path / "partly_nan.nii.gz")
    nib.save(nib.Nifti1Image(np.full((4, 4, 3), np.nan, dtype=np.float32), affine), tmp_path / "all_nan.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), dtype=np.int16), affine), tmp_path / "four_d.nii.gz")
    (tmp_path / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 definitely not a volume")
    (tmp_path / "labels.csv").write_text(
        "scan_id,patient_id,nodule\npartly_nan,P1,1\nall_nan,P2,0\nfour_d,P3,0\ncorrupt,P4,1\n"
    )
    reader = NiftiCohortReader(tmp_path)
    scans = list(reader.scans())
    assert [s.scan_id for s in scans] == ["partly_nan"]
    assert int(scans[0].hu[0, 0, :3].max()) == -1024
    by_scan = {p.scan_id: p for p in reader.problems.problems}
    assert by_scan["partly_nan"].severity == "warning" and "3 NaN" in by_scan["partly_nan"].reason
    assert "no finite value" in by_scan["all_nan"].reason
    assert "expected a 3-D volume" in by_scan["four_d"].reason
    assert "not a readable NIfTI file" in by_scan["corrupt"].reason
    assert all(p.path.endswith(".nii.gz") for p in reader.problems.problems)
