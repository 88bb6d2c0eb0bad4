"""``clearbench encoders`` and ``clearbench encoders show``, as a table and as JSON."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from clearbench.cli import app, main
from clearbench.config import home, user_card_dir
from clearbench.encoders.card import write_card
from clearbench.encoders.weights import file_sha256

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, list(args), env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    return result


def test_list_as_table_shows_paper_rows_kinds_dims_and_weights():
    out = _run("encoders").output
    for text in ("MambaOut-LECL-0", "ViT-ConvB", "BiomedCLIP", "mambaout-femto-random", "hu-hist", "example-tinyconv"):
        assert text in out
    line = next(row for row in out.splitlines() if row.strip().startswith("mambaout-lecl0 "))
    assert "slice" in line and "768" in line and "no weights" in line
    assert "ready" in next(row for row in out.splitlines() if row.strip().startswith("hu-hist "))
    assert "clearbench encoders show NAME" in out


def test_list_as_json_lines_and_bad_cards_on_stderr():
    folder = user_card_dir("encoders")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.toml").write_text("name = ")
    result = runner.invoke(app, ["encoders", "--json"])
    assert result.exit_code == 3  # listed, with a bad card skipped
    rows = {row["name"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert rows["mambaout-lecl0"]["paper_name"] == "MambaOut-LECL-0"
    assert rows["mambaout-lecl0"]["weights_found"] is False
    assert rows["mambaout-lecl0"]["weights_looked_in"][-1] == str(home() / "weights" / "mambaout-lecl0.pth")
    assert rows["mambaout-femto-random"]["dim"] == 288
    assert rows["mambaout-femto-random"]["weights_found"] is True
    assert rows["hu-hist"]["kind"] == "slice" and rows["hu-hist"]["dim"] == 40
    assert "broken" not in rows and "broken.toml: not valid TOML" in result.stderr


def test_show_resolves_weights_and_checks_sha256():
    path = home() / "weights" / "mine.pth"
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"w": torch.randn(3)}, path)
    digest = file_sha256(path)
    write_card(
        {"name": "mine", "family": "mambaout", "paper_name": "Mine", "weights": {"path": str(path), "sha256": digest}}
    )
    info = json.loads(_run("encoders", "show", "mine", "--json").stdout)
    assert info["weights_path"] == str(path) and info["sha256"] == digest and info["sha256_status"] == "verified"
    assert info["source"] == "user" and info["card"]["paper_name"] == "Mine"
    out = _run("encoders", "show", "mine").output
    assert "verified" in out and digest in out and str(path.name) in out

    write_card(
        {"name": "mine", "family": "mambaout", "weights": {"path": str(path), "sha256": "1" * 64}}, overwrite=True
    )
    assert json.loads(_run("encoders", "show", "mine", "--json").stdout)["sha256_status"] == "mismatch"
    assert "MISMATCH" in _run("encoders", "show", "mine").output


def test_show_an_override_and_a_missing_file():
    write_card({"name": "vit-convb", "family": "vit-convb", "weights": {"path": "weights/elsewhere.pth"}})
    out = _run("encoders", "show", "vit-convb").output
    assert "overrides" in out and "builtin card" in out
    assert str(home() / "weights" / "elsewhere.pth") in out and "missing" in out


def test_unknown_encoder_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["encoders", "show", "mambaout-lec0"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown encoder 'mambaout-lec0'" in err and "mambaout-lecl0" in err
