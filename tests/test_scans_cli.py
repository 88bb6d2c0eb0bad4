"""``clearbench scans``: the table, the stable --json lines, --strict and --limit, on synthetic cohorts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from clearbench.cli import app, main
from clearbench.scans.survey import SUMMARY_KEYS
from clearbench.scans.synth.dicom_ct import SeriesIds, stable_uid, write_ct_series
from clearbench.scans.synth.nsclc import cohort_stages, write_cohort

JSON_KEYS = ["scan_id", "patient_id", "n_slices", "shape", "spacing", "labels", "annotations", "problems"]
runner = CliRunner()


@pytest.fixture(scope="module")
def nsclc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cohort(tmp_path_factory.mktemp("cli") / "nsclc", 4, seed=2, size=16)


@pytest.fixture
def dicom_root(tmp_path: Path) -> Path:
    """Three scans: one good, one with two CT series in its folder, one without a labels row."""
    root = tmp_path / "cohort"
    for i, scan_id in enumerate(["a", "b", "c"]):
        ids = SeriesIds(f"P{i}", stable_uid("st", i), stable_uid("se", i), stable_uid("fr", i))
        hu = np.full((3, 8, 8), 40 * i, np.int16)
        write_ct_series(root / scan_id, hu, (2.5, 0.5, 0.5), ids, rng=np.random.default_rng(i))
    ids = SeriesIds("P1", stable_uid("st", 1), stable_uid("extra"), stable_uid("fr", 1))
    write_ct_series(
        root / "b" / "extra", np.zeros((2, 8, 8), np.int16), (2.5, 0.5, 0.5), ids, rng=np.random.default_rng(9)
    )
    (root / "labels.csv").write_text("scan_id,patient_id,nodule\na,P0,1\nb,P1,0\n")
    return root


def _json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_json_keys_are_the_documented_contract() -> None:
    assert list(SUMMARY_KEYS) == JSON_KEYS


def test_table_for_nsclc(nsclc_root: Path) -> None:
    result = runner.invoke(app, ["scans", "--dataset", "nsclc", "--root", str(nsclc_root)], terminal_width=200)
    assert result.exit_code == 0, result.output
    for pid in ["LUNG1-001", "LUNG1-002", "LUNG1-003", "LUNG1-004"]:
        assert pid in result.stdout
    assert "stage_high=1" in result.stdout and "stage_high=0" in result.stdout
    assert "×16×16" in result.stdout
    assert "4 scan(s) read, 0 with problems, 0 skipped; 0 error(s), 0 warning(s) reported" in result.stderr


def test_json_for_nsclc(nsclc_root: Path) -> None:
    result = runner.invoke(app, ["scans", "-d", "nsclc", "--root", str(nsclc_root), "--json"])
    assert result.exit_code == 0, result.output
    lines = _json_lines(result.stdout)
    assert [obj["scan_id"] for obj in lines] == ["LUNG1-001", "LUNG1-002", "LUNG1-003", "LUNG1-004"]
    stages = cohort_stages(4, 2)
    for obj, stage in zip(lines, stages, strict=True):
        assert list(obj) == JSON_KEYS
        assert obj["patient_id"] == obj["scan_id"]
        assert obj["shape"][1:] == [16, 16] and obj["n_slices"] == obj["shape"][0]
        assert obj["spacing"][0] == pytest.approx(5.0)
        assert obj["labels"] == {"stage_high": 1.0 if stage.startswith("III") else 0.0}
        assert obj["annotations"] == [] and obj["problems"] == []


def test_json_keeps_a_line_for_a_scan_that_could_not_be_loaded(dicom_root: Path) -> None:
    result = runner.invoke(app, ["scans", "--dataset", "dicom", "--root", str(dicom_root), "--json"])
    assert result.exit_code == 3, result.output  # done, with inputs skipped
    a, b, c = _json_lines(result.stdout)
    assert all(list(obj) == JSON_KEYS for obj in (a, b, c))
    assert a["shape"] == [3, 8, 8] and a["labels"] == {"nodule": 1.0} and a["problems"] == []
    assert b["n_slices"] is None and b["shape"] is None and b["spacing"] is None
    assert b["labels"] == {"nodule": 0.0}
    [problem] = b["problems"]
    assert problem["severity"] == "error" and "2 CT series in one folder" in problem["reason"]
    assert problem["path"] == str(dicom_root / "b")
    assert c["patient_id"] == "c" and c["labels"] == {"nodule": None}
    assert "no row in labels.csv" in c["problems"][0]["reason"]
    # Problems also go to stderr, one line each, and the summary counts them.
    stderr = result.stderr.splitlines()
    assert sum("2 CT series in one folder" in line for line in stderr if line.startswith("error:")) == 1
    assert stderr[-2] == "2 scan(s) read, 2 with problems, 1 skipped; 2 error(s), 0 warning(s) reported"
    assert stderr[-1].startswith("done, but 2 input error(s) were skipped over (exit code 3")
    assert str(dicom_root / "b") in stderr[-1] and "no row in labels.csv" in stderr[-1]


def test_table_shows_problems_and_skips(dicom_root: Path) -> None:
    result = runner.invoke(app, ["scans", "--dataset", "dicom", "--root", str(dicom_root)], terminal_width=200)
    assert result.exit_code == 3
    assert "not loaded" in result.stdout and "1 error" in result.stdout
    assert "error: " in result.stderr and "2 CT series in one folder" in result.stderr


def test_strict_stops_at_the_first_error(dicom_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["scans", "--dataset", "dicom", "--root", str(dicom_root), "--json", "--strict"])
    assert exc.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""  # the index finds the first error (scan c has no labels row) before any scan is read
    assert (
        err.strip().startswith("error: ")
        and "scan 'c' has no row in labels.csv" in err
        and len(err.strip().splitlines()) == 1
    )

    with (dicom_root / "labels.csv").open("a") as fh:
        fh.write("c,P2,1\n")
    with pytest.raises(SystemExit) as exc:
        main(["scans", "--dataset", "dicom", "--root", str(dicom_root), "--json", "--strict"])
    assert exc.value.code == 1
    out, err = capsys.readouterr()
    assert [obj["scan_id"] for obj in _json_lines(out)] == ["a"]  # scan b stops the run
    [line] = [line for line in err.splitlines() if line.strip()]
    assert line.startswith("error: ") and "2 CT series in one folder" in line and str(dicom_root / "b") in line


def test_limit(nsclc_root: Path) -> None:
    result = runner.invoke(app, ["scans", "--dataset", "nsclc", "--root", str(nsclc_root), "--json", "--limit", "2"])
    assert [obj["scan_id"] for obj in _json_lines(result.stdout)] == ["LUNG1-001", "LUNG1-002"]


def test_nifti_and_stage_na_problems_in_json(tmp_path: Path, nsclc_root: Path) -> None:
    root = tmp_path / "nifti"
    root.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.int16) - 1000, np.diag([-0.7, -0.7, 3.0, 1.0])), root / "s1.nii.gz")
    (root / "labels.csv").write_text("scan_id,patient_id,effusion\ns1,P1,1\ns2,P2,0\n")
    result = runner.invoke(app, ["scans", "--dataset", "nifti", "--root", str(root), "--json"])
    [obj] = _json_lines(result.stdout)
    assert obj["shape"] == [4, 5, 6] and obj["spacing"] == pytest.approx([3.0, 0.7, 0.7])
    assert "scan 's2' has a labels row but no images" in result.stderr

    na_root = Path(shutil.copytree(nsclc_root, tmp_path / "na"))
    csv_path = next(na_root.glob("*Lung1.clinical*.csv"))
    lines = csv_path.read_text().splitlines()
    fields = lines[1].split(",")
    fields[5] = "NA"
    csv_path.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    result = runner.invoke(app, ["scans", "--dataset", "nsclc", "--root", str(na_root), "--json"])
    first = _json_lines(result.stdout)[0]
    assert first["labels"] == {"stage_high": None}
    assert first["problems"][0]["severity"] == "warning" and "Overall.Stage NA" in first["problems"][0]["reason"]


def test_empty_root_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["scans", "--dataset", "dicom", "--root", str(tmp_path)])
    assert exc.value.code == 1
    assert "no dicom scans found under" in capsys.readouterr().err


def test_unknown_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["scans", "--dataset", "pacs", "--root", str(tmp_path)])
    assert "unknown dataset 'pacs'" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["deeplesion", "radchest"])
def test_json_for_the_other_synthetic_datasets(tmp_path: Path, dataset: str) -> None:
    from importlib import import_module

    root = import_module(f"clearbench.scans.synth.{dataset}").write_cohort(tmp_path / dataset, 2, 0, size=32)
    result = runner.invoke(app, ["scans", "--dataset", dataset, "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    lines = _json_lines(result.stdout)
    assert len(lines) == 2 and all(list(obj) == JSON_KEYS for obj in lines)
    assert all(obj["shape"][1:] == [32, 32] and len(obj["labels"]) == 8 for obj in lines)
    if dataset == "deeplesion":
        lesion = lines[0]["annotations"][0]
        assert set(lesion) == {"slice_idx", "box", "type"} and 0 <= lesion["slice_idx"] < lines[0]["n_slices"]
        assert lines[0]["labels"][lesion["type"]] == 1.0
