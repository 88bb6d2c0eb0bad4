"""Tables stay readable at 80 columns (columns wrap or are dropped, numbers and statuses are never cut), and an
encoder card is ``ready`` only when it can be built."""

from __future__ import annotations

import json

import pytest

from clearbench.cli import common, main
from clearbench.config import user_card_dir
from clearbench.scans.synth.deeplesion import write_cohort

WIDTH = 80


@pytest.fixture
def narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.console, "width", WIDTH)
    monkeypatch.setattr(common.err_console, "width", WIDTH)


def _card(name: str, text: str) -> None:
    folder = user_card_dir("encoders")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.toml").write_text(f'name = "{name}"\n{text}')


def _rows(capsys, *argv: str) -> list[dict]:
    main([*argv, "--json"])
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_random_card_of_a_family_sized_by_its_checkpoint_is_not_ready(capsys) -> None:
    _card("mambaout-full-random", 'family = "mambaout"\nweights = "random:0"\n')
    _card("mambaout-femto-mine", 'family = "mambaout"\nweights = "random:0"\n[params]\nvariant = "femto"\n')
    rows = {r["name"]: r for r in _rows(capsys, "encoders")}
    assert "takes its size from a checkpoint" in rows["mambaout-full-random"]["problem"]
    assert "variant" in rows["mambaout-full-random"]["problem"]
    assert rows["mambaout-femto-mine"]["problem"] is None
    main(["encoders"])
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if line.strip().startswith("mambaout-full-random")]
    assert listed and "ready" not in listed[0] and "error" in listed[0]
    assert 'mambaout-full-random: weights = "random:0" builds the model from the card alone' in out


def test_the_encoder_listing_at_80_columns_cuts_nothing(narrow, capsys) -> None:
    _card("a-rather-long-user-card-name", 'family = "hu-hist"\nweights = "none"\n[params]\nbins = 12\n')
    rows = _rows(capsys, "encoders")
    main(["encoders"])
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    status = {"ready random", "no weights", "ready", "error", "needs extra"}
    for row in rows:
        line = next(line for line in lines if line.strip().split(" ")[0].rstrip("*") == row["name"])
        assert f" {row['dim']} " in line or row["dim"] is None, line
        assert any(word in line for word in status), line
        assert "…" not in line


@pytest.mark.slow
def test_scans_and_store_tables_at_80_columns_cut_no_number(narrow, tmp_path, capsys) -> None:
    root = write_cohort(tmp_path / "deeplesion", n_scans=2, seed=7, size=32)
    main(["scans", "--dataset", "deeplesion", "--root", str(root)])
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= WIDTH and "…" not in out
    for line in _rows(capsys, "scans", "--dataset", "deeplesion", "--root", str(root)):
        assert "×".join(map(str, line["shape"])) in out

    table = "a_table_name_long_enough_to_need_folding_at_eighty_columns_for_sure"
    main(
        [
            "embed",
            "-e",
            "hu-hist",
            "-d",
            "deeplesion",
            "--root",
            str(root),
            "--windows",
            "abdomen,lung",
            "--table",
            table,
        ]
    )
    capsys.readouterr()
    main(["store", "ls"])
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= WIDTH and "…" not in out
    info = _rows(capsys, "store", "ls")[0]
    assert f" {info['rows']} " in out and f" {info['dim']} " in out
