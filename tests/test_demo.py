"""``clearbench demo``: the verdict it prints, and the quick demo end to end (twice: the second reuses)."""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from clearbench.cli import app
from clearbench.demo import QUICK, DemoEncoder, verdict

ENCODERS = [
    DemoEncoder("moco", "MoCo", learned=True),
    DemoEncoder("lecl", "LECL-0", learned=True),
    DemoEncoder("rand", "random init", learned=False),
    DemoEncoder("hist", "hu-hist", learned=False),
]


def _board(rows: dict[str, tuple[float, float, float]], apart: tuple[str, ...] = ()) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "encoder": list(rows),
            "group": ["apart" if name in apart else "ranked" for name in rows],
            "average": [v[0] for v in rows.values()],
            "ci_low": [v[1] for v in rows.values()],
            "ci_high": [v[2] for v in rows.values()],
        }
    )


def test_the_verdict_says_when_learned_encoders_win_with_separate_intervals() -> None:
    board = _board(
        {"moco": (85.0, 80.0, 90.0), "lecl": (88.0, 83.0, 92.0), "rand": (60.0, 52.0, 68.0), "hist": (70.0, 64.0, 76.0)}
    )
    text = verdict(board, ENCODERS)
    assert "MoCo 85.0 [80.0, 90.0]" in text and "hu-hist 70.0 [64.0, 76.0]" in text
    assert "beat random init and hu-hist, with CIs that do not overlap" in text


def test_the_verdict_says_overlapping_intervals_establish_nothing() -> None:
    board = _board(
        {"moco": (75.0, 66.0, 84.0), "lecl": (74.0, 65.0, 83.0), "rand": (60.0, 52.0, 68.0), "hist": (70.0, 62.0, 78.0)}
    )
    assert "but their CIs overlap" in verdict(board, ENCODERS)


def test_the_verdict_says_plainly_when_the_baseline_wins() -> None:
    board = _board(
        {"moco": (61.0, 55.0, 67.0), "lecl": (66.0, 60.0, 72.0), "rand": (58.0, 50.0, 66.0), "hist": (80.0, 74.0, 86.0)}
    )
    assert "do NOT beat the best baseline (hu-hist)" in verdict(board, ENCODERS)
    one = _board(
        {"moco": (61.0, 55.0, 67.0), "lecl": (82.0, 76.0, 88.0), "rand": (58.0, 50.0, 66.0), "hist": (80.0, 74.0, 86.0)}
    )
    assert "Only LECL-0 beats the best baseline (hu-hist); MoCo does not" in verdict(one, ENCODERS)


def test_no_verdict_when_a_row_is_not_ranked_on_the_same_patients() -> None:
    board = _board(
        {
            "moco": (85.0, 80.0, 90.0),
            "lecl": (88.0, 83.0, 92.0),
            "rand": (60.0, 52.0, 68.0),
            "hist": (70.0, 64.0, 76.0),
        },
        apart=("hist",),
    )
    assert verdict(board, ENCODERS).startswith("no verdict: hist could not be ranked")


@pytest.mark.slow
def test_quick_demo_end_to_end_then_again_reusing_everything(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    runner = CliRunner()
    first = runner.invoke(app, ["demo", "--quick", "--out", str(out)], env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    tag = QUICK.tag
    encoders = {f"mambaout-moco-{tag}", f"mambaout-lecl0-{tag}", f"mambaout-random-{tag}", "hu-hist"}

    with (out / "leaderboard.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["encoder"] for r in rows} == encoders
    assert len({r["n_test_patients"] for r in rows}) == 1 and int(rows[0]["n_test_patients"]) >= 10  # one test set
    assert all(r["group"] == "ranked" for r in rows)
    assert (out / "leaderboard.md").read_text().count("mambaout-") == 3
    plots = sorted((out / "board" / "plots").rglob("*.png"))
    assert {p.parent.name for p in plots} == encoders and all(p.stat().st_size > 0 for p in plots)
    page = (out / "board" / "index.html").read_text()
    assert "task1-demo" in page and all(name in page for name in encoders)
    assert "verdict" in first.stdout and "where everything is" in first.stdout
    assert "clearbench run task1 --root /data/DeepLesion" in first.stdout
    # The pretrained cards live in the demo's own home, never in the user's.
    assert {p.stem for p in (out / "home" / "encoders").glob("*.toml")} == encoders - {"hu-hist"}

    again = runner.invoke(app, ["demo", "--quick", "--out", str(out)], env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert "reusing the cohort" in again.stdout
    assert f"reusing mambaout-moco-{tag}" in again.stdout and f"reusing mambaout-lecl0-{tag}" in again.stdout
    assert again.stdout.count("0 scan(s) embedded") == 4
    with (out / "leaderboard.csv").open() as fh:
        assert [r["run_id"] for r in csv.DictReader(fh)] == [r["run_id"] for r in rows]  # every fold reused


def test_the_verdict_reports_the_paired_test_of_the_best_learned_row_against_each_baseline() -> None:
    board = _board(
        {"moco": (75.8, 69.4, 80.3), "lecl": (74.3, 69.3, 78.1), "rand": (67.5, 61.4, 71.4), "hist": (72.0, 65.4, 76.9)}
    )
    board = board.with_columns(pl.Series("p_value", [None, 0.206, 0.002, 0.256]), pl.Series("rank", [1, 2, 4, 3]))
    assert verdict(board, ENCODERS).endswith(
        "Paired bootstrap test of MoCo against each baseline on the same patients: random init p = 0.002; hu-hist p = 0.256."
    )
