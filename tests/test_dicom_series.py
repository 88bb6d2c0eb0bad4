"""The DICOM series reader on real CT files shipped with pydicom, and on every bad input it must survive."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from clearbench.errors import InputError
from clearbench.problems import ProblemLog
from clearbench.scans.dicom_series import read_ct_series, read_header

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent
CT5N = TEST_FILES / "dicomdirtests" / "98892001" / "CT5N"
CT2 = TEST_FILES / "dicomdirtests" / "77654033" / "CT2"
CT2N = TEST_FILES / "dicomdirtests" / "98892001" / "CT2N"
CT5N_Z = [-1.2375, 1.2625, 3.7625, 6.2625, 8.7625]


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    return dst


def _add_slice(folder: Path, name: str, **tags: object) -> Path:
    """A copy of slice 2062 one step above the series (z = 11.2625), with ``tags`` changed and a new UID."""
    ds = pydicom.dcmread(CT5N / "2062")
    ds.ImagePositionPatient = [-72.2, -143.0, 11.2625]
    ds.SOPInstanceUID = generate_uid()
    for keyword, value in tags.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(folder / name)
    return folder / name


def _raw(path: Path) -> np.ndarray:
    return pydicom.dcmread(path).pixel_array.astype(np.int32)


def test_ct_small_hu_is_raw_minus_1024() -> None:
    path = Path(get_testdata_file("CT_small.dcm"))
    scan = read_ct_series([path])
    assert scan.hu.dtype == np.int16
    assert scan.shape == (1, 128, 128)
    np.testing.assert_array_equal(scan.hu[0].astype(np.int32), _raw(path) - 1024)
    assert scan.spacing[1:] == pytest.approx((0.661468, 0.661468))
    assert scan.z_mm == pytest.approx([-75.699997])
    assert scan.scan_id == pydicom.dcmread(path).SeriesInstanceUID


def test_ct5n_sorted_by_position_z_ascending() -> None:
    log = ProblemLog()
    scan = read_ct_series(CT5N, scan_id="ct5n", problems=log)
    assert log.problems == []
    assert scan.shape == (5, 16, 16)
    assert scan.z_mm == pytest.approx(CT5N_Z)
    assert scan.spacing == pytest.approx((2.5, 0.488281, 0.488281))
    # InstanceNumber 10 (file 3353) is the lowest slice, InstanceNumber 6 (file 2062) the highest.
    np.testing.assert_array_equal(scan.hu[0].astype(np.int32), _raw(CT5N / "3353") - 1024)
    np.testing.assert_array_equal(scan.hu[-1].astype(np.int32), _raw(CT5N / "2062") - 1024)


def test_ct2_gap_is_reported_and_spacing_is_the_mode() -> None:
    log = ProblemLog()
    scan = read_ct_series(CT2, scan_id="ct2", problems=log)
    assert scan.n_slices == 4
    assert scan.spacing[0] == pytest.approx(1.25)
    assert scan.z_mm == pytest.approx([-99.48, 103.02, 104.27, 105.52], abs=1e-3)
    assert [p.severity for p in log.problems] == ["warning"]
    gap = log.problems[0]
    assert gap.path.endswith("17136") and "irregular slice spacing" in gap.reason and "202.50 mm" in gap.reason
    assert gap.scan_id == "ct2"


def test_ct2n_scouts_are_rejected() -> None:
    log = ProblemLog()
    with pytest.raises(InputError, match="usable axial image"):
        read_ct_series(CT2N, problems=log)
    assert sorted(Path(p.path).name for p in log.errors) == ["6293", "6924"]
    assert all("LOCALIZER" in p.reason for p in log.errors)


def test_scouts_mixed_into_a_series_are_rejected_and_the_rest_read(tmp_path: Path) -> None:
    folder = _copy(CT5N, tmp_path / "mixed")
    _copy(CT2N, folder)
    log = ProblemLog()
    scan = read_ct_series(folder, problems=log)
    assert scan.z_mm == pytest.approx(CT5N_Z)
    assert len(log.errors) == 2 and all("scout" in p.reason for p in log.errors)
    with pytest.raises(InputError, match="scout"):
        read_ct_series(folder, problems=ProblemLog(strict=True))


def test_non_axial_image_in_a_series_is_rejected(tmp_path: Path) -> None:
    folder = _copy(CT5N, tmp_path / "oblique")
    _add_slice(folder, "sagittal", ImageOrientationPatient=[0, 1, 0, 0, 0, -1])  # not flagged as a localizer
    log = ProblemLog()
    scan = read_ct_series(folder, problems=log)
    assert scan.n_slices == 5
    assert len(log.errors) == 1 and log.errors[0].path.endswith("sagittal") and "non-axial" in log.errors[0].reason


def test_file_without_pixel_data_is_reported_and_skipped(tmp_path: Path) -> None:
    folder = _copy(CT5N, tmp_path / "nopixels")
    _add_slice(folder, "empty.dcm", PixelData=None)
    log = ProblemLog()
    scan = read_ct_series(folder, problems=log)
    assert scan.z_mm == pytest.approx(CT5N_Z)
    assert [(Path(p.path).name, p.reason) for p in log.problems] == [
        ("empty.dcm", "CT file has no pixel data; skipped")
    ]


def test_duplicate_positions_identical_copy_is_a_warning(tmp_path: Path) -> None:
    folder = _copy(CT5N, tmp_path / "dup")
    shutil.copy(CT5N / "2693", folder / "2693-copy")
    log = ProblemLog()
    scan = read_ct_series(folder, problems=log)
    assert scan.n_slices == 5
    assert [p.severity for p in log.problems] == ["warning"]
    assert "duplicate slice position z=3.763" in log.problems[0].reason and "identical" in log.problems[0].reason


def test_duplicate_positions_with_different_pixels_is_an_error(tmp_path: Path) -> None:
    folder = _copy(CT5N, tmp_path / "dup")
    ds = pydicom.dcmread(folder / "2693")
    ds.InstanceNumber = 99
    ds.SOPInstanceUID = generate_uid()
    ds.PixelData = (ds.pixel_array + 7).astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(folder / "other")
    log = ProblemLog()
    scan = read_ct_series(folder, problems=log)
    assert scan.n_slices == 5
    np.testing.assert_array_equal(scan.hu[2].astype(np.int32), _raw(CT5N / "2693") - 1024)  # InstanceNumber 8 kept
    assert len(log.errors) == 1 and log.errors[0].path.endswith("other") and "different pixels" in log.errors[0].reason
    with pytest.raises(InputError, match="duplicate slice position"):
        read_ct_series(folder, problems=ProblemLog(strict=True))


def test_two_series_in_one_folder_is_an_error(tmp_path: Path) -> None:
    folder = _copy(CT5N, tmp_path / "two")
    _copy(CT2, folder)
    with pytest.raises(InputError, match=r"2 CT series in one folder: .*\(5 images\).*\(4 images\).*own folder"):
        read_ct_series(folder)


def test_empty_folder_and_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty folder"):
        read_ct_series(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "README.txt").write_text("not an image\n")
    with pytest.raises(InputError, match="no DICOM files"):
        read_ct_series(tmp_path / "text")


def test_non_dicom_files_and_other_modalities_are_skipped_quietly(tmp_path: Path) -> None:
    folder = _copy(CT5N, tmp_path / "withjunk")
    (folder / "notes.txt").write_text("exported by PACS\n")
    (folder / "thumbnail.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    shutil.copy(get_testdata_file("rtstruct.dcm"), folder / "rtstruct.dcm")
    log = ProblemLog()
    scan = read_ct_series(folder, problems=log)
    assert scan.n_slices == 5 and log.problems == []
    assert read_header(folder / "notes.txt") is None


def test_truncated_files_are_reported_and_the_rest_read(tmp_path: Path) -> None:
    folder = _copy(CT5N, tmp_path / "truncated")
    data = (folder / "3353").read_bytes()
    (folder / "3353").write_bytes(data[: len(data) - 300])  # cut inside the pixel data
    (folder / "2062").write_bytes((folder / "2062").read_bytes()[:200])  # cut inside the file meta
    shutil.copy(TEST_FILES / "dicomdirtests" / "DICOMDIR", folder / "DICOMDIR")  # not an image: quiet
    log = ProblemLog()
    scan = read_ct_series(folder, problems=log)
    assert scan.z_mm == pytest.approx(CT5N_Z[1:4])
    assert [(Path(p.path).name, p.severity) for p in log.problems] == [("2062", "error"), ("3353", "error")]
    assert "truncated" in log.problems[0].reason and "cannot be decoded" in log.problems[1].reason


def test_display_orientation_from_a_flipped_orientation(tmp_path: Path) -> None:
    """A slice stored left-right and front-back mirrored (IOP -1,0,0,0,-1,0) reads back as the original."""
    folder = _copy(CT5N, tmp_path / "flipped")
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        dy, dx = (float(v) for v in ds.PixelSpacing)
        ds.ImageOrientationPatient = [-1, 0, 0, 0, -1, 0]
        ds.ImagePositionPatient = [x + dx * (ds.Columns - 1), y + dy * (ds.Rows - 1), z]
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[::-1, ::-1]).tobytes()
        ds.save_as(f)
    original = read_ct_series(CT5N)
    flipped = read_ct_series(folder)
    np.testing.assert_array_equal(flipped.hu, original.hu)
    assert flipped.z_mm == pytest.approx(original.z_mm)


def test_hu_outside_int16_is_clipped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "steep.dcm"
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.RescaleSlope = 100
    ds.save_as(path)
    log = ProblemLog()
    scan = read_ct_series([path], problems=log)
    assert int(scan.hu.max()) == 32767
    assert [p.severity for p in log.problems] == ["warning"] and "clipped" in log.problems[0].reason


def test_mixed_axial_orientations_keep_the_majority(tmp_path: Path) -> None:
    folder = _copy(CT5N, tmp_path / "mixed_iop")
    _add_slice(folder, "rotated", ImageOrientationPatient=[-1, 0, 0, 0, -1, 0])
    log = ProblemLog()
    scan = read_ct_series(folder, problems=log)
    assert scan.z_mm == pytest.approx(CT5N_Z)
    assert [(Path(p.path).name, p.severity) for p in log.problems] == [("rotated", "error")]
    assert "ImageOrientationPatient differs from the rest of the series" in log.problems[0].reason


def test_gantry_tilt_is_reported_and_slices_ordered_along_the_normal(tmp_path: Path) -> None:
    folder = _copy(CT5N, tmp_path / "tilted")
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [1, 0, 0, 0, float(c), float(s)]
        ds.save_as(f)
    log = ProblemLog()
    scan = read_ct_series(folder, problems=log)
    np.testing.assert_array_equal(scan.hu, read_ct_series(CT5N).hu)
    assert scan.spacing[0] == pytest.approx(2.5 * c, abs=1e-3)
    assert [p.severity for p in log.problems] == ["warning"] and "gantry tilt of 10.0°" in log.problems[0].reason


def test_missing_rescale_takes_stored_values_as_hu(tmp_path: Path) -> None:
    path = tmp_path / "norescale.dcm"
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.RescaleSlope, ds.RescaleIntercept
    ds.save_as(path)
    log = ProblemLog()
    scan = read_ct_series([path], problems=log)
    np.testing.assert_array_equal(scan.hu[0].astype(np.int32), _raw(path))
    assert [p.reason for p in log.problems] == ["no RescaleSlope/RescaleIntercept: stored values taken as HU"]
