"""The skeleton pieces everything builds on: HU windows, the Scan type, config lookup, doctor, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from clearbench.cli import app
from clearbench.config import config_path, dataset_root, store_path
from clearbench.errors import ClearbenchError
from clearbench.scans.scan import Lesion, Scan
from clearbench.scans.windows import WINDOWS, Window, apply_window, get_window


def test_windows_map_hu_linearly_and_clip() -> None:
    hu = np.array([-2000, -175, 50, 275, 3000], dtype=np.int16)
    out = apply_window(hu, WINDOWS["abdomen"])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(apply_window(np.array([-500], dtype=np.int16), WINDOWS["lung"]), [0.5])


def test_custom_and_unknown_windows() -> None:
    assert get_window("bone:-500:1300") == Window("bone", -500.0, 1300.0)
    assert get_window(WINDOWS["lung"]) is WINDOWS["lung"]
    for bad in ("brain", "x:a:1", "x:1"):
        with pytest.raises(ClearbenchError, match="name:lo:hi"):
            get_window(bad)
    with pytest.raises(ClearbenchError, match="must exceed"):
        get_window("flat:10:10")


def test_scan_checks_its_volume_and_z_order() -> None:
    hu = np.zeros((3, 4, 4), dtype=np.int16)
    scan = Scan(
        "s1",
        "p1",
        hu,
        (2.0, 0.5, 0.5),
        lesions=[Lesion(2, (0, 0, 1, 1)), Lesion(0, (1, 1, 2, 2)), Lesion(2, (1, 1, 3, 3))],
    )
    np.testing.assert_array_equal(scan.z_mm, [0.0, 2.0, 4.0])
    assert scan.key_slices == [0, 2] and scan.n_slices == 3 and scan.shape == (3, 4, 4)
    with pytest.raises(ValueError, match="int16"):
        Scan("s", "p", hu.astype(np.float32), (1, 1, 1))
    with pytest.raises(ValueError, match="increasing z"):
        Scan("s", "p", hu, (1, 1, 1), z_mm=np.array([0.0, 2.0, 1.0]))


def test_dataset_root_from_flag_then_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClearbenchError, match="pass --root DIR"):
        dataset_root("deeplesion")
    config_path().parent.mkdir(parents=True, exist_ok=True)
    config_path().write_text(f'[datasets.deeplesion]\nroot = "{tmp_path}"\n')
    assert dataset_root("deeplesion") == tmp_path
    assert dataset_root("deeplesion", tmp_path / "..") == tmp_path / ".."
    with pytest.raises(ClearbenchError, match="not a folder"):
        dataset_root("deeplesion", tmp_path / "missing")
    config_path().write_text("[datasets\n")
    with pytest.raises(ClearbenchError, match="not valid TOML"):
        dataset_root("deeplesion")
    assert store_path() == config_path().parent / "store"


@pytest.mark.parametrize(
    "text", ['datasets = "/data"\n', "[datasets]\ndeeplesion = 5\n", "[datasets.deeplesion]\nroot = 5\n"]
)
def test_a_malformed_datasets_section_is_one_error_naming_the_config_file(text: str) -> None:
    config_path().parent.mkdir(parents=True, exist_ok=True)
    config_path().write_text(text)
    with pytest.raises(ClearbenchError, match=r"config\.toml: .*\[datasets\.NAME\] root"):
        dataset_root("deeplesion")


def test_doctor_reports_versions_extras_and_locations() -> None:
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["torch"] and info["python"] and set(info["extras"]) == {"sam2", "merlin", "cuda"}
    assert info["extras"]["cuda"]["install"] == "pip install 'clearbench[cuda]'"
    assert info["store"] == str(store_path())


def test_errors_are_one_line_without_traceback_unless_debug(tmp_path) -> None:  # type: ignore[no-untyped-def]
    args = ["scans", "--dataset", "deeplesion", "--root", str(tmp_path / "nowhere")]
    plain = subprocess.run([sys.executable, "-m", "clearbench", *args], capture_output=True, text=True, check=False)
    assert plain.returncode == 1
    assert plain.stderr.strip().count("\n") == 0 and "not a folder" in plain.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "clearbench", "--debug", *args], capture_output=True, text=True, check=False
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


@pytest.mark.parametrize(
    "args, code, expected",
    [
        ([], 2, "Usage: clearbench"),
        (["nope"], 2, "No such command 'nope'"),
        (["run"], 2, "Missing argument 'task'"),
        (["run", "task1", "--epochs", "0"], 2, "--epochs"),
    ],
)
def test_usage_errors_show_usage_not_a_traceback(args: list[str], code: int, expected: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clearbench", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert expected in result.stdout + result.stderr
