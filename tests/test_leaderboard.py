"""Leaderboards from results written straight into a store: cells, groups, runs chosen, published rows, formats."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from rich.console import Console

import clearbench
from clearbench.encoders.registry import list_cards
from clearbench.errors import ClearbenchError
from clearbench.leaderboards import label_columns, leaderboard, leaderboard_overview, marks, render
from clearbench.leaderboards.published import load_published, published_dir
from clearbench.protocols.metrics import FoldScores
from clearbench.protocols.run import _metric_rows
from clearbench.store.results import ResultsStore
from clearbench.store.splits import SplitTables
from clearbench.tasks.registry import get_task

LABELS = list(get_task("task1").labels)


def store_run(
    store: Path,
    encoder: str,
    *,
    signal: float,
    n_patients: int = 30,
    first_patient: int = 0,
    seed: int = 0,
    task: str = "task1",
    n_folds: int = 5,
    split_id: str | None = None,
    n_missing: int = 0,
) -> str:
    """A finished holdout+kfold run written through ResultsStore: every fold predicts the same test scans."""
    results = ResultsStore(store)
    rng = np.random.default_rng(seed)
    patients = [f"p{first_patient + i:03d}" for i in range(n_patients) for _ in range(2)]
    scans = [f"{p}_s{j}" for j, p in enumerate(patients)]
    truth = np.random.default_rng(100 + first_patient).random((len(scans), len(LABELS))) < 0.4
    y = truth.astype(np.float32)
    config_hash = f"{encoder}-{seed}-{first_patient}-{n_patients}-{split_id}"
    run_id = f"run-{config_hash}"
    results.start_run(
        {
            "run_id": run_id,
            "config_hash": config_hash,
            "task": task,
            "dataset": "deeplesion",
            "encoder": encoder,
            "config": json.dumps({"task": {"protocol": {"kind": "holdout+kfold", "folds": 5}}}),
            "encoder_provenance": json.dumps(
                {"encoder": encoder, "card": {"name": encoder}, "weights_sha256": "ab" * 32}
            ),
            "clearbench_version": "test",
            "split_id": split_id,
            "n_missing": n_missing if split_id else None,
        }
    )
    for k in range(n_folds):
        prob = (1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=y.shape))))).astype(np.float32)
        thresholds = np.full(len(LABELS), 0.5)
        common = {"config_hash": config_hash, "run_id": run_id, "task": task, "encoder": encoder, "fold": k}
        scores = FoldScores.compute(LABELS, y, prob, thresholds)
        preds = results.predictions_table(
            common,
            "test",
            scans,
            patients,
            LABELS,
            y,
            prob,
            prob >= 0.5,
            [np.zeros(0, np.float32)] * len(scans),
            [np.array([], dtype=str)] * len(scans),
            [np.zeros(0, np.int32)] * len(scans),
        )
        fold_row = {**common, "seed": seed, "labels": LABELS, "thresholds": thresholds.tolist(), "test_scan_ids": scans}
        results.write_fold(fold_row, _metric_rows(common, "test", scores, np.r_[thresholds, 0.5]), preds)
    results.finish_run(run_id, "complete", {}, [])
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lb") / "store"
    store_run(path, "strong", signal=2.0, seed=1)
    store_run(path, "weak", signal=0.2, seed=2)
    store_run(path, "elsewhere", signal=1.0, seed=3, first_patient=5)  # other test patients
    return path


@pytest.fixture(scope="module")
def board(store: Path) -> pl.DataFrame:
    return leaderboard("task1", store=store, n_boot=500)


def test_cells_equal_the_stored_per_fold_metrics(store: Path, board: pl.DataFrame) -> None:
    metrics = pl.from_arrow(ResultsStore(store).metrics("strong-1-0-30-None")).filter(pl.col("metric") == "auc")
    row = board.filter(pl.col("encoder") == "strong").row(0, named=True)
    for label, column in [*((label, label) for label in LABELS), ("macro", "average")]:
        values = metrics.filter(pl.col("label") == label).sort("fold")["value"].to_numpy()
        assert row[column] == pytest.approx(100 * values.mean())
        assert row[f"{column} std"] == pytest.approx(100 * values.std(ddof=1))
    assert label_columns(board) == LABELS
    assert row["ci_low"] < row["average"] < row["ci_high"]
    assert (row["n_test_scans"], row["n_test_patients"], row["n_folds"]) == (60, 30, 5)
    assert row["card"] == "strong" and row["weights_sha256"] == "ab" * 32


def test_ranked_rows_are_paired_and_a_row_on_other_patients_is_apart(board: pl.DataFrame) -> None:
    reproduced = board.filter(pl.col("source") == "reproduced")
    assert reproduced["encoder"].to_list() == ["strong", "weak", "elsewhere"]
    assert reproduced["group"].to_list() == ["ranked", "ranked", "apart"]
    assert reproduced["rank"].to_list() == [1, 2, None]
    strong, weak, elsewhere = reproduced.iter_rows(named=True)
    assert strong["p_value"] is None and weak["p_value"] < 0.01
    assert strong["reason"] is None
    assert elsewhere["reason"] == "tested on 30 patients, 25 of them among the 30 test patients of the ranked rows"
    assert elsewhere["p_value"] is None and elsewhere["ci_low"] is not None


def test_bootstrap_numbers_are_the_same_twice(store: Path, board: pl.DataFrame) -> None:
    again = leaderboard("task1", store=store, n_boot=500)
    assert again.select("ci_low", "ci_high", "p_value").equals(board.select("ci_low", "ci_high", "p_value"))


def test_published_rows_sit_apart_and_are_never_ranked(board: pl.DataFrame) -> None:
    published = board.filter(pl.col("group") == "published")
    assert published.height == 13
    assert published["rank"].null_count() == 13 and published["p_value"].null_count() == 13
    row = published.filter(pl.col("encoder") == "MambaOut-LECL-0").row(0, named=True)
    assert (row["average"], row["average std"], row["published_in"], row["card"]) == (
        78.4,
        2.1,
        "Table 1",
        "mambaout-lecl0",
    )
    best = marks(board, ["average"])
    best_published = [
        board["encoder"][i] for (i, c), m in best.items() if m == "best" and board["group"][i] == "published"
    ]
    assert best_published == ["MambaOut-LECL-0"]
    assert best[(0, "average")] == "best" and best[(1, "average")] == "second"


def test_newest_run_per_encoder_unless_one_is_named(store: Path, tmp_path: Path) -> None:
    path = tmp_path / "store"
    old = store_run(path, "enc", signal=2.0, seed=1)
    new = store_run(path, "enc", signal=0.1, seed=2)
    assert leaderboard("task1", store=path, n_boot=0, published=False)["run_id"].to_list() == [new]
    assert leaderboard("task1", store=path, n_boot=0, published=False, run=old)["run_id"].to_list() == [old]
    with pytest.raises(ClearbenchError, match="--run nope: no run of task task1"):
        leaderboard("task1", store=path, run="nope")


def test_incomplete_run_is_apart_and_unfinished_runs_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store_run(path, "full", signal=1.0)
    store_run(path, "partial", signal=1.0, seed=4, n_folds=3)
    ResultsStore(path).start_run(
        {"run_id": "never-finished", "config_hash": "x", "task": "task1", "dataset": "deeplesion", "encoder": "ghost"}
    )
    df = leaderboard("task1", store=path, n_boot=0, published=False)
    assert df["encoder"].to_list() == ["full", "partial"]
    assert df["reason"][1] == "only 3 of its 5 folds are stored"


def test_a_run_on_a_split_that_is_no_longer_the_tasks_is_apart(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store_run(path, "old", signal=1.0, seed=1, split_id="split-a")
    store_run(path, "new", signal=1.0, seed=2, split_id="split-b", n_missing=2)
    SplitTables(ResultsStore(path).db).choose("task1", "{}", 0, "fingerprint", "split-b", "resplit")
    df = leaderboard("task1", store=path, n_boot=0, published=False)
    assert df.select("encoder", "group", "split_id", "n_missing").rows() == [
        ("new", "ranked", "split-b", 2),
        ("old", "apart", "split-a", 0),
    ]
    assert (
        df["reason"][1]
        == "ran on split split-a, not the task's current split split-b; rerun it with: clearbench run task1 -e old"
    )
    md = render.to_markdown(df)
    assert "test set (split split-b)" in md and "2 scans of the split without embeddings" in md
    assert "apart: ran on split split-a" in md


def test_a_task_without_runs_names_the_command_that_makes_one(tmp_path: Path) -> None:
    with pytest.raises(
        ClearbenchError, match=r"no finished runs of task task2 in .*; make one with: clearbench run task2"
    ):
        leaderboard("task2", store=tmp_path / "empty")
    with pytest.raises(ClearbenchError, match="unknown metric 'acc'"):
        leaderboard("task1", store=tmp_path / "empty", metric="acc")


def test_public_api_and_overview(store: Path) -> None:
    assert clearbench.leaderboard is leaderboard
    overview = leaderboard_overview(store=store)
    assert overview.columns[:4] == ["metric", "encoder", "source", "card"]
    assert {"task1", "task1 std", "task1 rank"} <= set(overview.columns)
    first = overview.row(0, named=True)
    assert (first["encoder"], first["task1 rank"]) == ("strong", 1)
    assert overview.filter(pl.col("encoder") == "elsewhere")["task1 rank"].to_list() == [None]


# -- published tables ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "encoder", "label", "mean", "std"),
    [
        ("Table 1", "MambaOut-LECL-0", "average", 78.4, 2.1),
        ("Table 1", "MambaOut-MoCo", "abdomen", 81.3, 1.4),  # OCR: 81.31.4
        ("Table 2", "MambaOut-LECL-1", "emphysema", 74.0, 1.4),  # OCR: 74.01.4
        ("Table 2", "CT-CLIP", "nodule", 51.6, 0.5),
        ("Table 3", "CT-CLIP", "stage_high", 63.8, 22.3),  # F1
        ("Supplementary Table 1", "MambaOut-LECL-0", "average", 63.7, 5.3),  # F1, OCR: {f 63.7}
        ("Supplementary Table 2", "Merlin", "liver", 16.9, 0.2),  # AUPRC, OCR: 16.90.2
        ("Supplementary Table 2", "MambaOut-LECL-0", "average", 52.2, 2.6),
        ("Supplementary Table 3", "ViT-ConvB", "emphysema", 47.9, 7.9),
        ("Supplementary Table 4", "ViT-LECL-1", "atelectasis", 45.0, 1.7),
    ],
)
def test_published_cells_match_the_paper(source: str, encoder: str, label: str, mean: float, std: float) -> None:
    metric = {"Table 3": "f1"}.get(source)
    rows = [
        r
        for r in load_published()
        if r.source == source and r.encoder == encoder and (metric is None or r.metric == metric)
    ]
    assert len(rows) == 1
    assert rows[0].values[label] == (mean, std)


def test_published_tables_are_complete_and_name_real_cards() -> None:
    rows = load_published()
    cards = {c.name for c in list_cards()}
    expected = {
        ("Table 1", "auc"): "task1",
        ("Table 2", "auc"): "task2",
        ("Table 3", "auc"): "task3",
        ("Table 3", "auprc"): "task3",
        ("Table 3", "f1"): "task3",
        ("Supplementary Table 1", "f1"): "task1",
        ("Supplementary Table 2", "auprc"): "task1",
        ("Supplementary Table 3", "f1"): "task2",
        ("Supplementary Table 4", "auprc"): "task2",
    }
    for (source, metric), task in expected.items():
        table = [r for r in rows if r.source == source and r.metric == metric]
        assert len(table) == 13, (source, metric)
        wanted = set(get_task(task).labels) | ({"average"} if task != "task3" else set())
        assert all(set(r.values) == wanted and r.card in cards for r in table), (source, metric)
    assert (published_dir() / "README.md").is_file()


# -- renderers ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def odd_board(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """A board whose encoder names need escaping in every format."""
    path = tmp_path_factory.mktemp("odd") / "store"
    store_run(path, "[bold]x_&%$#{y}", signal=2.0, seed=1)
    store_run(path, "plain", signal=0.5, seed=2)
    return leaderboard("task1", store=path, n_boot=200)


def test_latex_parses_with_one_row_per_encoder(odd_board: pl.DataFrame) -> None:
    tex = render.render([odd_board], "latex")
    depth = 0
    for ch in re.sub(r"\\[{}]", "", tex):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    body = tex[tex.index(r"\midrule") : tex.index(r"\bottomrule")]
    rows = [line for line in body.splitlines() if line.endswith(r"\\")]
    assert len(rows) == odd_board.height == 15
    assert r"\[bold\]x\_\&\%\$\#\{y\}" not in tex and r"[bold]x\_\&\%\$\#\{y\}" in tex
    assert r"\textbf{" in tex and r"\underline{" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert not {"±", "·", "–"} & set(tex)  # only ASCII markup, whatever the LaTeX engine


def test_markdown_csv_json_and_terminal(odd_board: pl.DataFrame) -> None:
    md = render.render([odd_board], "md")
    table_lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table_lines) == 1 + odd_board.height
    assert "\\[bold\\]x\\_&%$\\#\\{y\\}" in md and "**" in md and "<u>" in md

    parsed = list(csv.DictReader(io.StringIO(render.render([odd_board], "csv"))))
    assert len(parsed) == odd_board.height and list(parsed[0]) == odd_board.columns
    assert parsed[0]["encoder"] == "[bold]x_&%$#{y}"

    data = json.loads(render.render([odd_board], "json"))
    assert data["task"] == "task1" and data["labels"] == LABELS and len(data["rows"]) == odd_board.height
    assert data["rows"][1]["p_value"] is not None

    console = Console(record=True, width=250)
    console.print(render.to_rich(odd_board))
    assert "[bold]x_&%$#{y}" in console.export_text()

    with pytest.raises(ClearbenchError, match="unknown format 'html'; valid: table, md, csv, latex, json"):
        render.render([odd_board], "html")


def test_an_80_column_terminal_drops_columns_and_never_cuts_a_number(
    board: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clearbench.cli import common
    from clearbench.cli.leaderboard import terminal_board

    monkeypatch.setattr(common.console, "width", 80)
    console = Console(record=True, width=80)
    console.print(terminal_board(board))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    ranked = board.filter(pl.col("group") == "ranked")
    for r in ranked.iter_rows(named=True):
        assert f"{r['average']:.1f} ± {r['average std']:.1f}" in text
        assert f"[{r['ci_low']:.1f}, {r['ci_high']:.1f}]" in text
    words = " ".join(text.split())  # the caption wraps at 80 columns
    assert "7 label column(s) left out at this terminal width" in words and "--format md or csv shows them all" in words
