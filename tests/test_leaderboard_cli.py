"""``clearbench leaderboard`` and the board ``clearbench run`` ends with, end to end on a synthetic cohort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clearbench.cli import app, main

ENV = {"COLUMNS": "250"}


def _invoke(args: list[str]):
    result = CliRunner().invoke(app, args, env=ENV)
    return result


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic DeepLesion cohort embedded with hu-hist and the example plugin's tiny conv net."""
    tmp = tmp_path_factory.mktemp("lbcli")
    root, store = tmp / "deeplesion", tmp / "store"
    steps = [["synth", "deeplesion", "--out", str(root), "--scans", "24", "--seed", "0", "--size", "32"]]
    steps += [
        ["embed", "-e", e, "-d", "deeplesion", "--root", str(root), "--store", str(store), "--workers", "1"]
        for e in ("hu-hist", "example-tinyconv")
    ]
    for args in steps:
        result = _invoke(args)
        assert result.exit_code == 0, f"{args}: {result.output}"
    return root, store


@pytest.mark.slow
def test_run_ends_with_the_board_and_leaderboard_ranks_on_identical_patients(
    cohort: tuple[Path, Path], monkeypatch
) -> None:
    from clearbench.cli import common

    monkeypatch.setattr(common.console, "width", 320)  # eight labels, the average and the statistics side by side
    root, store = cohort
    run = _invoke(
        [
            "run",
            "task1",
            "--min-test-patients",
            "2",
            "--epochs",
            "2",
            "--threads",
            "1",
            "--store",
            str(store),
            "--root",
            str(root),
            "-e",
            "hu-hist",
            "-e",
            "example-tinyconv",
        ]
    )
    assert run.exit_code == 0, run.output
    board_at_end = run.stdout[run.stdout.rindex("task1 · AUC (%)") :]
    assert "hu-hist" in board_at_end and "example-tinyconv" in board_at_end and "95% CI" in board_at_end
    assert "MambaOut-LECL-0" not in board_at_end  # the run's own encoders only
    assert "clearbench leaderboard task1" in run.stdout

    as_json = _invoke(
        [
            "run",
            "task1",
            "--min-test-patients",
            "2",
            "--epochs",
            "2",
            "--threads",
            "1",
            "--store",
            str(store),
            "--root",
            str(root),
            "--json",
        ]
    )
    assert as_json.exit_code == 0, as_json.output
    assert [json.loads(line)["encoder"] for line in as_json.stdout.splitlines()] == ["example-tinyconv", "hu-hist"]

    result = _invoke(["leaderboard", "task1", "--store", str(store), "--format", "json", "--bootstrap", "300"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    ranked = [r for r in data["rows"] if r["group"] == "ranked"]
    assert sorted(r["encoder"] for r in ranked) == ["example-tinyconv", "hu-hist"]
    assert len({(r["n_test_patients"], r["n_test_scans"]) for r in ranked}) == 1
    assert all(r["ci_low"] is not None and r["ci_high"] is not None for r in ranked)
    assert ranked[0]["p_value"] is None and ranked[1]["p_value"] is not None
    assert len([r for r in data["rows"] if r["group"] == "published"]) == 13

    table = _invoke(["leaderboard", "task1", "--store", str(store), "--bootstrap", "100"])
    assert table.exit_code == 0, table.output
    assert "MambaOut-LECL-0" in table.stdout and "Table 1" in table.stdout and "78.4 ± 2.1" in table.stdout

    # A task without runs beside one with runs: the board is shown, the other task skipped, exit code 3.
    partial = _invoke(["leaderboard", "task1", "task2", "--store", str(store), "--bootstrap", "0", "--no-published"])
    assert partial.exit_code == 3, partial.output
    assert "task1 · AUC (%)" in partial.stdout and "hu-hist" in partial.stdout
    assert partial.stderr.strip().splitlines()[-1].startswith("done, but 1 input error(s) were skipped over")
    assert "error: task task2:" in partial.stderr

    out = root.parent / "overview.md"
    overview = _invoke(
        ["leaderboard", "--store", str(store), "--metric", "f1", "--format", "md", "--no-published", "--out", str(out)]
    )
    assert overview.exit_code == 0, overview.output
    text = out.read_text()
    assert "| encoder | source | task1 |" in text and "hu-hist" in text and "MambaOut" not in text


def test_bad_choices_and_a_task_without_runs_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args, message in [
        (["leaderboard", "task1", "--metric", "acc"], "error: --metric acc: unknown; valid: auc, auprc, f1"),
        (
            ["leaderboard", "task1", "--format", "html"],
            "error: --format html: unknown; valid: table, md, csv, latex, json",
        ),
        (["leaderboard", "task2", "--store", str(tmp_path / "s")], "make one with: clearbench run task2"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
