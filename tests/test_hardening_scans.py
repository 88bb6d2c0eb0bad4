"""Bad files in a cohort, each through ``clearbench scans --json``: every scan found has its line, every bad
file is named, a bad box leaves one lesion unknown, copies lose to originals, links are followed once."""

from __future__ import annotations

import csv
import json
import os
import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest

from clearbench.cli import main
from clearbench.scans.synth.deeplesion import write_cohort as write_deeplesion
from clearbench.scans.synth.dicom_ct import SeriesIds, stable_uid, write_ct_series
from clearbench.scans.synth.radchest import write_cohort as write_radchest


def scans_json(capsys, dataset: str, root: Path, exit_code: int = 3) -> tuple[dict[str, dict], str]:
    """The --json lines by scan id, and stderr; exit code 3 says some input was skipped over."""
    with pytest.raises(SystemExit) if exit_code else nullcontext() as exited:
        main(["scans", "--dataset", dataset, "--root", str(root), "--json"])
    assert exited is None or exited.value.code == exit_code
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    return {line["scan_id"]: line for line in lines}, err


def reasons(line: dict) -> list[tuple[str, str, str]]:
    return [(Path(p["path"]).name, p["severity"], p["reason"]) for p in line["problems"]]


def _series(folder: Path, i: int, n: int = 4) -> list[Path]:
    ids = SeriesIds(f"P{i}", stable_uid("st", i), stable_uid("se", i), stable_uid("fr", i))
    hu = np.full((n, 8, 8), 40 * i, np.int16)
    return write_ct_series(folder, hu, (2.5, 0.5, 0.5), ids, rng=np.random.default_rng(i))


def test_a_non_dicom_file_with_a_dicom_name_is_named(tmp_path, capsys) -> None:
    root = tmp_path / "cohort"
    files = _series(root / "a", 0, n=5)
    files[2].write_text("this is not a DICOM file\n")
    lines, err = scans_json(capsys, "dicom", root)
    assert lines["a"]["n_slices"] == 4
    assert (
        files[2].name,
        "error",
        "named like a DICOM file but is not one (no DICOM header or data set); skipped",
    ) in reasons(lines["a"])
    assert f"error: {files[2]}: named like a DICOM file" in err


def test_of_two_identical_files_the_original_name_is_kept(tmp_path, capsys) -> None:
    root = tmp_path / "cohort"
    files = _series(root / "a", 0)
    shutil.copyfile(files[1], files[1].with_name(f"{files[1].stem} copy.dcm"))
    lines, _ = scans_json(capsys, "dicom", root)
    dropped = [r for r in reasons(lines["a"]) if "duplicate slice position" in r[2]]
    assert (
        dropped == [(f"{files[1].stem} copy.dcm", "warning", dropped[0][2])]
        and f"same as {files[1].name}" in dropped[0][2]
    )
    assert lines["a"]["n_slices"] == 4


def test_links_to_folders_are_followed_once_and_loops_never(tmp_path, capsys) -> None:
    root = tmp_path / "cohort"
    _series(root / "a", 0)
    elsewhere = tmp_path / "elsewhere" / "b"
    _series(elsewhere, 1)
    os.symlink(elsewhere, root / "b")
    os.symlink(".", root / "loop")
    os.symlink("..", root / "a" / "up")
    (root / "labels.csv").write_text("scan_id,patient_id\na,P0\nb,P1\n")
    lines, err = scans_json(capsys, "dicom", root, exit_code=0)
    assert sorted(lines) == ["a", "b"]
    assert lines["a"]["n_slices"] == 4 and lines["b"]["n_slices"] == 4
    assert ("b", "info", f"symbolic link to {elsewhere.resolve()}; followed") in reasons(lines["b"])
    assert any(
        name == "up" and severity == "warning" and "symbolic link loop" in reason
        for name, severity, reason in reasons(lines["a"])
    )
    assert f"{root / 'loop'}: symbolic link loop" in err


def test_a_corrupt_npz_has_its_line(tmp_path, capsys) -> None:
    root = write_radchest(tmp_path / "radchest", 3, seed=1, size=32)
    volumes = sorted(root.rglob("*.npz"))
    volumes[1].write_bytes(b"PK\x03\x04 truncated")
    bad = volumes[1].name[: -len(".npz")]
    lines, _ = scans_json(capsys, "radchest", root)
    assert len(lines) == 3
    assert lines[bad]["n_slices"] is None and lines[bad]["shape"] is None
    assert any(name == volumes[1].name and severity == "error" for name, severity, _ in reasons(lines[bad]))


def _edit_dl_info(root: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = root / "DL_info.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    edit(rows)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def deeplesion(tmp_path: Path) -> Path:
    return write_deeplesion(tmp_path / "deeplesion", n_scans=3, seed=7, size=32)


def test_an_empty_deeplesion_series_has_its_line(deeplesion, capsys) -> None:
    first = sorted((deeplesion / "Images_png").iterdir())[0]
    for png in first.glob("*.png"):
        png.unlink()
    lines, _ = scans_json(capsys, "deeplesion", deeplesion)
    assert len(lines) == 3 and lines[first.name]["n_slices"] is None
    assert reasons(lines[first.name]) == [(first.name, "error", "empty series folder: no NNN.png slices")]
    assert lines[first.name]["patient_id"] == first.name.split("_")[0]


def test_a_bad_box_leaves_that_lesion_unknown_and_the_series_stays(deeplesion, capsys) -> None:
    bad_lesion = ""

    def break_box(rows: list[dict]) -> None:
        nonlocal bad_lesion
        bad_lesion = rows[0]["File_name"]
        rows[0]["Bounding_boxes"] = "12.5, left, 30, 40"

    _edit_dl_info(deeplesion, break_box)
    folder = "_".join(bad_lesion.split("_")[:3])
    lines, err = scans_json(capsys, "deeplesion", deeplesion)  # exit code 3: the lesion's key slice is not placed
    assert len(lines) == 3 and lines[folder]["n_slices"] is not None
    problems = [reason for _, _, reason in reasons(lines[folder])]
    assert any(
        f"lesion {bad_lesion}: column Bounding_boxes = '12.5, left, 30, 40' is not 4 numbers" in r
        and "taken as unknown" in r
        for r in problems
    )
    assert "row skipped" not in err
    n_rows = sum(1 for line in (deeplesion / "DL_info.csv").read_text().splitlines()[1:] if line.startswith(folder))
    assert len(lines[folder]["annotations"]) == n_rows - 1


def test_a_dl_info_row_that_cannot_be_read_still_lists_its_series(deeplesion, capsys) -> None:
    def break_series(rows: list[dict]) -> None:
        folder = "_".join(rows[0]["File_name"].split("_")[:3])
        for row in rows:
            if row["File_name"].startswith(folder):
                row["Spacing_mm_px_"] = "wide, tall, deep"

    _edit_dl_info(deeplesion, break_series)
    lines, _ = scans_json(capsys, "deeplesion", deeplesion)
    assert len(lines) == 3
    unread = [line for line in lines.values() if line["n_slices"] is None]
    assert len(unread) == 1 and any("no rows in DL_info.csv" in r for _, _, r in reasons(unread[0]))
