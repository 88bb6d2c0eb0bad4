"""``clearbench embed`` and ``clearbench store ls|info|rm`` end to end on a synthetic DeepLesion cohort."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clearbench.cli import app, main
from clearbench.config import user_card_dir
from clearbench.scans.synth.deeplesion import write_cohort
from clearbench.store import EmbeddingStore

runner = CliRunner()
TABLE = "deeplesion__hu-hist"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_cohort(tmp_path_factory.mktemp("dl") / "deeplesion", n_scans=4, seed=7, size=32)


def invoke(*args: str):
    result = runner.invoke(app, list(args), terminal_width=200)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_embed_resume_and_store_commands(cohort):
    first = json_lines(
        invoke("embed", "--encoder", "hu-hist", "--dataset", "deeplesion", "--root", str(cohort), "--json").stdout
    )[0]
    assert first["table"] == TABLE and first["windows"] == ["abdomen", "lung"]
    assert (first["scans_total"], first["scans_done"], first["scans_skipped"], first["scans_failed"]) == (4, 4, 0, 0)
    assert first["rows_written"] == first["slices_embedded"] > 0

    again = invoke("embed", "-e", "hu-hist", "-d", "deeplesion", "--root", str(cohort))
    assert f"{TABLE}: 0 scan(s) embedded" in again.stderr and "4 already stored" in again.stderr

    (listed,) = json_lines(invoke("store", "ls", "--json").stdout)
    assert listed["table"] == TABLE and listed["dim"] == 40 and listed["scans"] == 4
    assert listed["encoder"] == "hu-hist" and listed["dataset"] == "deeplesion"
    assert listed["rows"] == first["rows_written"] and listed["windows"]["lung"] == listed["rows"] // 2
    assert TABLE in invoke("store", "ls").stdout

    (info,) = json_lines(invoke("store", "info", TABLE, "--json").stdout)
    prov = info["provenance"]
    assert prov["dataset_root"] == str(cohort.resolve()) and prov["family"] == "hu-hist"
    assert prov["preprocessing_hash"] and "weights_sha256" in prov and prov["clearbench_version"]
    assert info["fragments"] == 1 and info["versions"] >= 1
    shown = invoke("store", "info", TABLE).stdout
    assert "provenance.preprocessing_hash" in shown and "abdomen:" in shown

    bags = EmbeddingStore().bags("deeplesion", "hu-hist")
    assert len(bags) == 4 and bags.dim == 40 and np.isfinite(bags.vectors).all()

    assert json_lines(invoke("store", "rm", TABLE, "--json").stdout) == [
        {"removed": TABLE, "store": str(EmbeddingStore().path)}
    ]
    assert json_lines(invoke("store", "ls", "--json").stdout) == []


def write_card(name: str, bins: int) -> None:
    folder = user_card_dir("encoders")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.toml").write_text(
        f'name = "{name}"\nfamily = "hu-hist"\nweights = "none"\n[params]\nbins = {bins}\n'
    )


def one_line_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_mismatched_encoder_is_refused_with_the_fix(cohort, capsys):
    base = [
        "embed",
        "--dataset",
        "deeplesion",
        "--root",
        str(cohort),
        "--windows",
        "lung",
        "--limit",
        "1",
        "--table",
        "t",
    ]
    invoke(*base, "--encoder", "hu-hist")
    write_card("hu-hist-8", bins=8)
    err = one_line_error(capsys, *base, "--encoder", "hu-hist-8")
    assert "holds 40-d vectors" in err and "gives 16-d" in err and "--overwrite" in err
    write_card("hu-hist-twin", bins=32)  # the same dim, another encoder
    err = one_line_error(capsys, *base, "--encoder", "hu-hist-twin")
    assert "was made differently" in err and "encoder:" in err and "--table NAME" in err and "--overwrite" in err
    replaced = json_lines(invoke(*base, "--encoder", "hu-hist-twin", "--overwrite", "--json").stdout)[0]
    assert replaced["scans_done"] == 1 and EmbeddingStore().provenance("t")["encoder"] == "hu-hist-twin"


def test_a_corrupt_scan_is_reported_in_one_line_and_skipped(tmp_path, capsys):
    root = write_cohort(tmp_path / "dl", n_scans=3, seed=8, size=32)
    folders = sorted((root / "Images_png").iterdir())
    for png in folders[1].glob("*.png"):
        png.write_bytes(png.read_bytes()[:40])
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "-e", "hu-hist", "-d", "deeplesion", "--root", str(root), "--windows", "lung", "--json"])
    assert exit_info.value.code == 3  # done, with a scan skipped
    out, err = capsys.readouterr()
    summary = json_lines(out)[0]
    assert (summary["scans_done"], summary["scans_failed"]) == (2, 1)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors and all(folders[1].name in line for line in errors)
    assert EmbeddingStore().scan_ids(TABLE) == [folders[0].name, folders[2].name]

    err = one_line_error(
        capsys,
        "embed",
        "-e",
        "hu-hist",
        "-d",
        "deeplesion",
        "--root",
        str(root),
        "--windows",
        "lung",
        "--strict",
        "--table",
        "strict",
    )
    assert folders[1].name in err


def test_store_errors_are_one_line(capsys):
    err = one_line_error(capsys, "store", "info", "nope")
    assert "no embedding table 'nope'" in err
    err = one_line_error(capsys, "store", "rm", "nope")
    assert "no embedding table 'nope'" in err
