"""DeepLesion: the synthetic writer and the reader agree, and every kind of bad input is reported."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from render_spy import write_and_capture

import clearbench.scans.synth.deeplesion as synth_dl
from clearbench.errors import InputError
from clearbench.problems import ProblemLog
from clearbench.scans.deeplesion import DL_COLUMNS, DeepLesionReader, decode_png16, read_dl_info
from clearbench.scans.registry import open_dataset
from clearbench.scans.synth.phantom import LESION_HU

N_SERIES = 10


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """A small cohort, plus every volume the writer rendered (in the order it wrote the series)."""
    return write_and_capture(synth_dl, tmp_path_factory.mktemp("dl") / "deeplesion", N_SERIES, seed=4)


def _copy(cohort: tuple[Path, list[np.ndarray]], tmp_path: Path) -> Path:
    return Path(shutil.copytree(cohort[0], tmp_path / "copy"))


def _csv_rows(root: Path) -> list[dict[str, str]]:
    with (root / "DL_info.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_layout_and_csv_columns(cohort: tuple[Path, list[np.ndarray]]) -> None:
    root, _ = cohort
    folders = sorted(p.name for p in (root / "Images_png").iterdir())
    assert len(folders) == N_SERIES
    assert all(len(f.split("_")) == 3 and len(f) == 12 for f in folders)
    with (root / "DL_info.csv").open(newline="") as fh:
        header = next(csv.reader(fh))
    # The header of the real file (docs/DATASETS.md §1), spelled out so that a typo in DL_COLUMNS shows.
    assert ",".join(header) == (
        "File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,Bounding_boxes,"
        "Lesion_diameters_Pixel_,Normalized_lesion_location,Coarse_lesion_type,Possibly_noisy,Slice_range,"
        "Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,Patient_age,Train_Val_Test"
    )
    assert tuple(header) == DL_COLUMNS
    rows = _csv_rows(root)
    for row in rows:
        assert row["File_name"].rsplit("_", 1)[0] in folders
        assert len(row["Bounding_boxes"].split(", ")) == 4
        assert len(row["Measurement_coordinates"].split(", ")) == 8
        assert row["Coarse_lesion_type"] in {str(k) for k in range(1, 9)}
    text = (root / "DL_info.csv").read_text()
    assert '"' in text and ", " in text  # quoted multi-value fields, as in the real file
    png = next((root / "Images_png" / folders[0]).iterdir())
    with Image.open(png) as im:
        assert im.mode == "I;16"


def test_round_trip_pixels_annotations_and_labels(cohort: tuple[Path, list[np.ndarray]]) -> None:
    root, rendered = cohort
    reader = open_dataset("deeplesion", root)
    assert isinstance(reader, DeepLesionReader)
    records = reader.records()
    assert len(records) == N_SERIES and not reader.problems.problems
    rows = _csv_rows(root)
    for record, volume in zip(records, rendered, strict=True):
        scan = reader.load(record)
        # the writer renders slices in slice-number order (head to feet); the Scan runs feet to head
        assert scan.hu.shape == volume.shape
        assert np.abs(scan.hu.astype(int) - volume[::-1].astype(int)).max() <= 1
        assert np.all(np.diff(scan.z_mm) > 0)
        mine = [r for r in rows if r["File_name"].startswith(record.scan_id)]
        assert len(scan.lesions) == len(mine)
        assert record.patient_id == f"{int(mine[0]['Patient_index']):06d}"
        assert record.split == {"1": "train", "2": "val", "3": "test"}[mine[0]["Train_Val_Test"]]
        types = {reader.label_names[int(r["Coarse_lesion_type"]) - 1] for r in mine}
        assert {k for k, v in record.labels.items() if v == 1.0} == types
        assert all(v in (0.0, 1.0) for v in record.labels.values())
        for lesion in scan.lesions:
            number = scan.meta["slice_numbers"][lesion.slice_idx]
            assert number == lesion.meta["key_slice_number"]
            x1, y1, x2, y2 = lesion.box
            col, row = round((x1 + x2) / 2), round((y1 + y2) / 2)
            assert abs(int(scan.hu[lesion.slice_idx, row, col]) - LESION_HU[lesion.type]) < 60


def test_runs_gaps_and_patient_level_split(cohort: tuple[Path, list[np.ndarray]]) -> None:
    reader = DeepLesionReader(cohort[0])
    records = reader.records()
    multi = [r for r in records if len(r.meta["runs"]) > 1]
    assert multi, "the cohort should hold a folder with separate slice runs"
    scan = reader.load(multi[0])
    dz = scan.spacing[0]
    steps = np.diff(scan.z_mm)
    assert np.isclose(steps.min(), dz) and steps.max() > 1.5 * dz  # the gap between runs is visible
    splits: dict[str, set[str | None]] = {}
    for r in records:
        splits.setdefault(r.patient_id, set()).add(r.split)
    assert all(len(s) == 1 for s in splits.values())
    assert len(splits) < len(records)  # several studies or series per patient


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    def digest(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    a = digest(synth_dl.write_cohort(tmp_path / "a", 3, seed=9))
    b = digest(synth_dl.write_cohort(tmp_path / "b", 3, seed=9))
    c = digest(synth_dl.write_cohort(tmp_path / "c", 3, seed=10))
    assert a == b
    assert a != c


def test_decode_maps_uint16_to_hu(tmp_path: Path) -> None:
    hu = np.array([[-32768, -1024, -1], [0, 1, 32767]], dtype=np.int16)
    path = tmp_path / "001.png"
    synth_dl._write_png(path, hu)
    assert np.array_equal(decode_png16(path), hu)


# --- bad input -------------------------------------------------------------------------------------
def _first_series(root: Path) -> Path:
    return sorted((root / "Images_png").iterdir())[0]


def test_truncated_png_is_reported_and_the_series_goes_on(cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = _copy(cohort, tmp_path)
    reader = DeepLesionReader(root)
    record = reader.records()[0]
    victim = _first_series(root) / f"{record.meta['slice_numbers'][0]:03d}.png"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    scan = reader.load(record)
    assert scan.n_slices == record.meta["n_slices"] - 1
    (problem,) = reader.problems.errors
    assert problem.path == str(victim) and "truncated or corrupt" in problem.reason

    strict = DeepLesionReader(root, problems=ProblemLog(strict=True))
    with pytest.raises(InputError, match="truncated or corrupt"):
        strict.load(strict.records()[0])


def test_eight_bit_png_is_called_a_pre_windowed_copy(cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = _copy(cohort, tmp_path)
    series = _first_series(root)
    for png in series.glob("*.png"):  # an 8-bit copy of the whole series
        Image.fromarray(np.full((64, 64), 128, dtype=np.uint8)).save(png)
    reader = DeepLesionReader(root)
    scans = list(reader.scans())
    assert len(scans) == N_SERIES - 1
    (problem,) = reader.problems.errors
    assert problem.scan_id == series.name
    assert "8-bit PNG" in problem.reason and "pre-windowed" in problem.reason
    assert problem.path.startswith(str(series))


def test_missing_columns_are_named(cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = _copy(cohort, tmp_path)
    rows = _csv_rows(root)
    keep = [c for c in DL_COLUMNS if c not in ("Bounding_boxes", "Patient_age")]
    with (root / "DL_info.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, keep, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    reader = DeepLesionReader(root)
    records = reader.records()
    assert len(records) == N_SERIES
    (problem,) = reader.problems.errors
    assert problem.path == str(root / "DL_info.csv")
    assert "Bounding_boxes" in problem.reason and "Patient_age" in problem.reason
    scan = reader.load(records[0])
    assert scan.lesions == [] and scan.meta["age"] is None
    assert any("no Bounding_boxes" in p.reason for p in reader.problems.errors)


def test_missing_file_name_column_leaves_nothing_to_index(cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = _copy(cohort, tmp_path)
    text = (root / "DL_info.csv").read_text().replace("File_name,", "Name,", 1)
    (root / "DL_info.csv").write_text(text)
    reader = DeepLesionReader(root)
    assert reader.records() == []
    assert any("File_name" in p.reason for p in reader.problems.errors)


def test_slices_missing_inside_slice_range(cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = _copy(cohort, tmp_path)
    reader = DeepLesionReader(root)
    record = reader.records()[0]
    keys = {les["slice_idx"] for les in record.meta["lesions"]}
    order = record.meta["slice_numbers"]
    number = next(n for i, n in enumerate(order) if i not in keys)
    (record.source / f"{number:03d}.png").unlink()

    fresh = DeepLesionReader(root)
    records = fresh.records()
    (problem,) = fresh.problems.errors
    assert problem.path == str(record.source) and f"{number:03d}.png" in problem.reason
    assert "missing inside Slice_range" in problem.reason
    scan = fresh.load(records[0])
    assert scan.n_slices == len(order) - 1 and len(scan.lesions) == len(record.meta["lesions"])
    with pytest.raises(InputError, match="missing inside Slice_range"):
        DeepLesionReader(root, problems=ProblemLog(strict=True)).records()


def test_empty_folder_unlisted_folder_and_rows_without_folder(cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = _copy(cohort, tmp_path)
    first = _first_series(root)
    for png in first.glob("*.png"):
        png.unlink()  # an empty series folder
    (root / "Images_png" / "000999_01_01").mkdir()  # a folder DL_info.csv does not know
    second = sorted((root / "Images_png").iterdir())[1]
    shutil.rmtree(second)  # rows whose folder is gone
    reader = DeepLesionReader(root)
    records = reader.records()
    assert len(records) == N_SERIES - 2
    reasons = {p.path: p.reason for p in reader.problems.errors}
    assert "empty series folder" in reasons[str(first)]
    assert "no rows in DL_info.csv" in reasons[str(root / "Images_png" / "000999_01_01")]
    assert "no folder under Images_png" in reasons[str(root / "DL_info.csv")]
    assert second.name in reasons[str(root / "DL_info.csv")]


def test_an_empty_root_is_one_problem(tmp_path: Path) -> None:
    reader = DeepLesionReader(tmp_path)
    assert reader.records() == []
    (problem,) = reader.problems.errors
    assert "DL_info.csv" in problem.path and "not found" in problem.reason


def test_unlabelled_rows_give_unknown_labels(tmp_path: Path) -> None:
    """The real train split has Coarse_lesion_type -1 everywhere: labels are None, not 0."""
    root = synth_dl.write_cohort(tmp_path / "dl", 2, seed=1)
    rows = _csv_rows(root)
    for row in rows:
        row["Coarse_lesion_type"] = "-1"
        row["Patient_age"] = "NaN"
    with (root / "DL_info.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, DL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    reader = DeepLesionReader(root)
    record = reader.records()[0]
    assert all(v is None for v in record.labels.values())
    scan = reader.load(record)
    assert all(les.type is None for les in scan.lesions) and scan.meta["age"] is None
    parsed = read_dl_info(root / "DL_info.csv", reader.problems.report)
    assert parsed[0].bounding_box == tuple(float(v) for v in rows[0]["Bounding_boxes"].split(", "))


def test_a_non_positive_z_spacing_is_reported_not_fatal(tmp_path: Path) -> None:
    root = synth_dl.write_cohort(tmp_path / "dl", 1, seed=2)
    rows = _csv_rows(root)
    for row in rows:
        row["Spacing_mm_px_"] = "0.7, 0.7, nan"
    with (root / "DL_info.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, DL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    reader = DeepLesionReader(root)
    (record,) = reader.records()
    (problem,) = reader.problems.errors
    assert "not positive" in problem.reason
    scan = reader.load(record)
    assert scan.spacing == (1.0, 1.0, 1.0) and np.all(np.diff(scan.z_mm) > 0)
