"""``clearbench run`` end to end: a synthetic NSCLC cohort read by the real reader, embeddings in the real
store, the CLI, the stored results, fold reuse, and resuming after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

import clearbench.protocols.run as run_mod
import clearbench.protocols.stored_split as stored_split
from clearbench.cli import app, main
from clearbench.cli.run import summary_table
from clearbench.errors import ClearbenchError
from clearbench.protocols.metrics import MACRO, FoldScores, Summary
from clearbench.protocols.run import EncoderRun, run_task
from clearbench.protocols.test_patients import task_test_patients
from clearbench.scans.registry import open_dataset
from clearbench.scans.synth.nsclc import write_cohort
from clearbench.scans.windows import get_window
from clearbench.store import EmbeddingStore, ScanEmbeddings, connect
from clearbench.store.db import table_names
from clearbench.store.results import ResultsStore


@pytest.fixture(scope="module")
def nsclc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 synthetic NSCLC patients (B's writer); one of them has stage NA."""
    return write_cohort(tmp_path_factory.mktemp("nsclc"), 16, 0, size=24)


def na_patients(root: Path) -> list[str]:
    return [r.scan_id for r in open_dataset("nsclc", root).records() if r.meta.get("stage_raw") == "NA"]


def write_table(
    store: Path,
    root: Path,
    encoder: str,
    kind: str = "slice",
    dim: int = 8,
    seed: int = 0,
    limit: int | None = None,
    scale: float = 1.0,
    overwrite: bool = False,
    skip: frozenset[str] = frozenset(),
) -> str:
    """An embedding table written through the store's API, with vectors that carry the stage label."""
    reader = open_dataset("nsclc", root)
    emb = EmbeddingStore(store)
    provenance = {"encoder": encoder, "kind": kind, "dim": dim, "dataset": "nsclc", "dataset_root": str(root)}
    windows = [get_window("lung")] if kind == "slice" else []
    table = emb.open_for_writing(emb.table_name("nsclc", encoder), dim, provenance, windows, overwrite=overwrite)
    rng = np.random.default_rng(seed)
    scans = []
    for rec in reader.records()[:limit]:
        if rec.scan_id in skip:
            continue
        positive = rec.labels["stage_high"] == 1.0
        n = 1 if kind == "volume" else int(rng.integers(4, 12))
        vectors = rng.normal(size=(n, dim)).astype(np.float32)
        vectors[int(rng.integers(0, n)), 0] += 4.0 if positive else -4.0
        vectors *= scale
        window = np.array(["volume" if kind == "volume" else "lung"] * n)
        slices = np.full(n, -1) if kind == "volume" else np.arange(n)
        scans.append(ScanEmbeddings(rec.scan_id, rec.patient_id, window, slices, slices.astype(float), vectors))
    table.write(scans)
    return table.name


def _table(store: Path, name: str) -> list[dict]:
    return connect(store).open_table(name).search().limit(None).to_arrow().to_pylist()


def test_task3_end_to_end_through_the_cli(tmp_path: Path, nsclc_root: Path) -> None:
    store = tmp_path / "store"
    write_table(store, nsclc_root, "toy-slice")
    write_table(store, nsclc_root, "toy-volume", kind="volume")
    result = CliRunner().invoke(
        app,
        ["run", "task3", "--min-test-patients", "2", "--epochs", "3", "--store", str(store), "--root", str(nsclc_root)],
        env={"COLUMNS": "120"},
    )
    assert result.exit_code == 0, result.output
    assert "task3 · toy-slice" in result.stdout and "task3 · toy-volume" in result.stdout
    assert "stage_high" in result.stdout and "macro" in result.stdout and " ± " in result.stdout
    # the NA patient is excluded and reported with the count and its id, once
    (na,) = na_patients(nsclc_root)
    assert result.stderr.count(f"1 scan excluded, no value for label stage_high (stage 'NA'): {na}") == 1

    runs = _table(store, "runs")
    assert {r["encoder"] for r in runs} == {"toy-slice", "toy-volume"}
    for r in runs:
        assert r["status"] == "complete" and r["finished_at"] >= r["started_at"] and r["seed"] == 0
        assert r["n_scans"] == 15 and json.loads(r["excluded"])[0]["scan_id"] == na
        config = json.loads(r["config"])
        assert config["task"]["name"] == "task3" and config["training"]["max_epochs"] == 3
        assert json.loads(r["encoder_provenance"])["encoder"] == r["encoder"]
        assert r["clearbench_version"] and len(r["config_hash"]) == 64

    folds = _table(store, "run_folds")
    assert len(folds) == 10 and sorted({f["fold"] for f in folds}) == [0, 1, 2, 3, 4]
    preds = _table(store, "run_predictions")
    slice_test = [p for p in preds if p["encoder"] == "toy-slice" and p["role"] == "test"]
    # nested CV: every included scan is a test scan exactly once
    assert sorted(p["scan_id"] for p in slice_test) == sorted({p["scan_id"] for p in slice_test})
    assert len(slice_test) == 15 and na not in {p["scan_id"] for p in slice_test}
    bags = EmbeddingStore(store).bags("nsclc", "toy-slice", windows=["lung"])
    for p in slice_test:
        n = len(bags.bag(p["scan_id"]))
        assert len(p["attention"]) == len(p["window"]) == len(p["slice_idx"]) == n
        assert set(p["window"]) == {"lung"} and p["slice_idx"] == list(range(n))
        assert sum(p["attention"]) == pytest.approx(1.0, abs=1e-5)
        assert p["pred"] == [
            p["prob"][0] >= f["thresholds"][0] for f in folds if f["encoder"] == "toy-slice" and f["fold"] == p["fold"]
        ]
    assert all(p["attention"] is None for p in preds if p["encoder"] == "toy-volume")
    metrics = _table(store, "run_metrics")
    assert {(m["split"], m["label"], m["metric"]) for m in metrics} >= {
        ("test", MACRO, "auc"),
        ("val", "stage_high", "f1"),
    }


def test_rerun_reuses_finished_folds_unless_told_and_gives_identical_numbers(tmp_path: Path, nsclc_root: Path) -> None:
    store = tmp_path / "store"
    write_table(store, nsclc_root, "toy-slice")
    first = run_task("task3", min_test_patients=2, root=nsclc_root, store=store, epochs=2, device="cpu")[0]
    again = run_task("task3", min_test_patients=2, root=nsclc_root, store=store, epochs=2, device="cpu")[0]
    assert first.reused == [] and again.reused == [0, 1, 2, 3, 4]
    assert again.config_hash == first.config_hash and again.summary_dict() == first.summary_dict()
    fresh = run_task("task3", min_test_patients=2, root=nsclc_root, store=store, epochs=2, device="cpu", rerun=True)[0]
    assert fresh.reused == [] and fresh.summary_dict() == first.summary_dict()
    assert len(_table(store, "run_folds")) == 5
    other = run_task("task3", min_test_patients=2, root=nsclc_root, store=store, epochs=2, device="cpu", seed=1)[0]
    assert other.config_hash != first.config_hash and other.reused == []


def test_changed_vectors_or_splits_never_reuse_stale_folds(tmp_path: Path, nsclc_root: Path, monkeypatch) -> None:
    """Re-embedding into the same table (same scans, slice counts, labels and provenance) or a split that
    comes out differently (another sklearn, another official split) must retrain, not reuse old folds."""
    store = tmp_path / "store"
    write_table(store, nsclc_root, "toy-slice")
    first = run_task("task3", min_test_patients=2, root=nsclc_root, store=store, epochs=1, device="cpu")[0]
    write_table(store, nsclc_root, "toy-slice", scale=2.0, overwrite=True)
    changed = run_task("task3", min_test_patients=2, root=nsclc_root, store=store, epochs=1, device="cpu")[0]
    assert changed.reused == [] and changed.config_hash != first.config_hash

    # Folds are drawn once per cohort and stored; a redraw (--resplit) that comes out differently is a
    # split of its own, with its own id.
    real_make_folds = stored_split.make_folds

    def swapped(*args, **kwargs):
        folds = real_make_folds(*args, **kwargs)
        return [replace(folds[0], test=folds[1].test, train=folds[1].train, val=folds[1].val), *folds[1:]]

    monkeypatch.setattr(stored_split, "make_folds", swapped)
    resplit = run_task(
        "task3", min_test_patients=2, root=nsclc_root, store=store, epochs=1, device="cpu", resplit=True
    )[0]
    assert resplit.reused == [] and resplit.config_hash != changed.config_hash
    assert resplit.split_id != changed.split_id and resplit.split.choice == "resplit"


def test_killed_run_keeps_committed_folds_and_redoes_the_interrupted_one(
    tmp_path: Path, nsclc_root: Path, monkeypatch
) -> None:
    store = tmp_path / "store"
    write_table(store, nsclc_root, "toy-slice")
    real_write = ResultsStore.write_fold

    def killed_during_fold_2(self, fold_row, metric_rows, predictions):
        if fold_row["fold"] == 2:
            self._table("run_predictions").add(predictions)  # predictions reach disk, the commit marker never does
            raise KeyboardInterrupt
        return real_write(self, fold_row, metric_rows, predictions)

    monkeypatch.setattr(ResultsStore, "write_fold", killed_during_fold_2)
    with pytest.raises(KeyboardInterrupt):
        run_task("task3", min_test_patients=2, root=nsclc_root, store=store, epochs=2, device="cpu")
    assert sorted(f["fold"] for f in _table(store, "run_folds")) == [0, 1]
    monkeypatch.setattr(ResultsStore, "write_fold", real_write)

    trained = []
    real_run_fold = run_mod.run_fold
    monkeypatch.setattr(
        run_mod,
        "run_fold",
        lambda bags, fold, *a, **k: trained.append(fold.index) or real_run_fold(bags, fold, *a, **k),
    )
    resumed = run_task("task3", min_test_patients=2, root=nsclc_root, store=store, epochs=2, device="cpu")[0]
    assert resumed.reused == [0, 1] and trained == [2, 3, 4]
    preds = _table(store, "run_predictions")
    keys = [p["key"] for p in preds]
    assert len(keys) == len(set(keys))  # the half-written fold 2 left no duplicates
    assert sorted({p["fold"] for p in preds}) == [0, 1, 2, 3, 4]
    statuses = sorted(r["status"] for r in _table(store, "runs"))
    assert statuses == ["complete", "running"]  # the killed invocation stays visible as such


def _paused_run(store: Path, root: Path, fold: int, table: str) -> subprocess.Popen:
    """``clearbench run`` in a child process that stops right after fold ``fold``'s rows reach ``table``."""
    cli = [
        "run",
        "task3",
        "--min-test-patients",
        "2",
        "--epochs",
        "1",
        "--store",
        str(store),
        "--root",
        str(root),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--json",
    ]
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("kill_points.py")), "fold-commit", str(fold), table, "--", *cli],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _assert_committed_folds_whole(store: Path, committed: list[int], metrics_per_fold: int) -> None:
    """Each committed fold (one marker row) has all its predictions and metrics, once."""
    folds = _table(store, "run_folds")
    assert sorted(f["fold"] for f in folds) == committed and len({f["key"] for f in folds}) == len(folds)
    predictions, metrics = _table(store, "run_predictions"), _table(store, "run_metrics")
    assert len({p["key"] for p in predictions}) == len(predictions)
    for f in folds:
        stored = sorted(p["scan_id"] for p in predictions if p["fold"] == f["fold"])
        assert stored == sorted(f["val_scan_ids"] + f["test_scan_ids"])
        assert sum(m["fold"] == f["fold"] for m in metrics) == metrics_per_fold


@pytest.mark.slow
def test_sigkill_during_a_fold_commit_keeps_committed_folds_and_a_rerun_completes(
    tmp_path: Path, nsclc_root: Path
) -> None:
    reference_store = tmp_path / "reference"
    write_table(reference_store, nsclc_root, "toy-slice")
    reference = run_task("task3", min_test_patients=2, root=nsclc_root, store=reference_store, epochs=1, device="cpu")[
        0
    ]
    metrics_per_fold = len(_table(reference_store, "run_metrics")) // 5

    store = tmp_path / "store"
    write_table(store, nsclc_root, "toy-slice")
    # Killed after fold 1's predictions, then (resuming) after fold 3's metrics: both before the fold's marker.
    for fold, table, committed in ((1, "run_predictions", [0]), (3, "run_metrics", [0, 1, 2])):
        child = _paused_run(store, nsclc_root, fold, table)
        try:
            assert child.stdout.readline().strip() == "paused", child.stderr.read()
        finally:
            child.send_signal(signal.SIGKILL)
            child.communicate()
        assert child.returncode == -signal.SIGKILL
        _assert_committed_folds_whole(store, committed, metrics_per_fold)
        assert any(r["fold"] == fold for r in _table(store, table))  # the kill landed inside the fold's commit

    resumed = run_task("task3", min_test_patients=2, root=nsclc_root, store=store, epochs=1, device="cpu")[0]
    assert resumed.reused == [0, 1, 2]
    _assert_committed_folds_whole(store, [0, 1, 2, 3, 4], metrics_per_fold)
    assert len(_table(store, "run_predictions")) == len(_table(reference_store, "run_predictions"))
    assert resumed.summary_dict() == reference.summary_dict()  # the same numbers as an uninterrupted run


def test_missing_encoder_and_missing_embeddings_are_clear_errors(tmp_path: Path, nsclc_root: Path) -> None:
    store = tmp_path / "store"
    runner = CliRunner()
    result = runner.invoke(
        app, ["run", "task3", "--min-test-patients", "2", "--store", str(store), "--root", str(nsclc_root)]
    )
    assert result.exit_code != 0 and "no embeddings of dataset 'nsclc'" in str(result.exception)
    write_table(store, nsclc_root, "toy-slice")
    result = runner.invoke(
        app,
        ["run", "task3", "--min-test-patients", "2", "-e", "nope", "--store", str(store), "--root", str(nsclc_root)],
    )
    assert "clearbench embed --dataset nsclc --encoder nope" in str(result.exception)


def test_an_encoder_with_too_few_scans_is_reported_and_the_others_still_run(tmp_path: Path, nsclc_root: Path) -> None:
    store = tmp_path / "store"
    write_table(store, nsclc_root, "toy-slice")
    write_table(store, nsclc_root, "toy-few", limit=4)
    result = CliRunner().invoke(
        app,
        ["run", "task3", "--min-test-patients", "2", "--epochs", "2", "--store", str(store)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 3, result.output  # done, with one encoder skipped
    assert "task3 · toy-slice" in result.stdout and "task3 · toy-few" not in result.stdout
    assert (
        "nsclc__toy-few: task task3 skipped for encoder toy-few: protocol nested-kfold needs at least 7 patients"
        in result.stderr
    )
    strict = CliRunner().invoke(
        app, ["run", "task3", "--min-test-patients", "2", "--epochs", "2", "--store", str(store), "--strict"]
    )
    assert strict.exit_code != 0 and "needs at least 7 patients" in str(strict.exception)


def test_a_run_in_which_no_encoder_could_run_fails(tmp_path: Path, nsclc_root: Path) -> None:
    """Scripts chain on the exit code: when every encoder was skipped, nothing was evaluated."""
    store = tmp_path / "store"
    write_table(store, nsclc_root, "toy-few", limit=4)
    result = CliRunner().invoke(
        app, ["run", "task3", "--min-test-patients", "2", "--epochs", "2", "--store", str(store)]
    )
    assert result.exit_code != 0
    assert "skipped for encoder toy-few" in result.stderr
    assert "no encoder could run task task3" in str(result.exception)


@pytest.mark.parametrize("device, reason", [("cuda", "no CUDA device"), ("gpu0", "not a torch device")])
def test_an_unusable_device_is_a_one_line_error(
    tmp_path: Path, nsclc_root: Path, monkeypatch, device: str, reason: str
) -> None:
    monkeypatch.setattr(run_mod.torch.cuda, "is_available", lambda: False)
    store = tmp_path / "store"
    write_table(store, nsclc_root, "toy-slice")
    result = CliRunner().invoke(
        app, ["run", "task3", "--min-test-patients", "2", "--epochs", "1", "--store", str(store), "--device", device]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, ClearbenchError) and reason in str(result.exception)
    assert "--device cpu" in str(result.exception)


def test_strict_run_stops_at_the_first_bad_input_and_prints_it_once(
    tmp_path: Path, nsclc_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(shutil.copytree(nsclc_root, tmp_path / "nsclc"))
    clinical = next(root.rglob("*clinical*.csv"))
    last = clinical.read_text().rstrip("\n").splitlines()[-1]
    with clinical.open("a") as fh:
        fh.write("LUNG1-999" + last[last.index(",") :] + "\n")  # a patient without CT: an error of the reader
    store = tmp_path / "store"
    write_table(store, root, "toy-slice")
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "run",
                "task3",
                "--min-test-patients",
                "2",
                "--strict",
                "--epochs",
                "1",
                "--store",
                str(store),
                "--root",
                str(root),
            ]
        )
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("LUNG1-999") == 1 and err.strip().startswith("error: ")


def _embed_and_run(tmp_path: Path, dataset: str, task: str, root: Path | None = None):
    """The user's path through the CLI: synth a cohort (unless given), embed it with hu-hist, run the task."""
    runner = CliRunner()
    store = tmp_path / "store"
    steps = []
    if root is None:
        root = tmp_path / dataset
        steps.append(["synth", dataset, "--out", str(root), "--scans", "16", "--seed", "0", "--size", "32"])
    steps += [
        ["embed", "-e", "hu-hist", "-d", dataset, "--root", str(root), "--store", str(store)],
        ["run", task, "--min-test-patients", "1", "--epochs", "2", "--store", str(store), "--threads", "1"],
    ]
    for args in steps:
        result = runner.invoke(app, args, env={"COLUMNS": "120"})
        assert result.exit_code == 0, f"{args}: {result.output}"
    return result, store


def test_task1_end_to_end_on_hu_hist_embeddings_of_a_synthetic_deeplesion_cohort(tmp_path: Path) -> None:
    result, store = _embed_and_run(tmp_path, "deeplesion", "task1")
    assert "task1 · hu-hist" in result.stdout and "soft_tissue" in result.stdout and "macro" in result.stdout
    preds = [p for p in _table(store, "run_predictions") if p["role"] == "test"]
    assert preds and all(set(p["window"]) == {"abdomen", "lung"} for p in preds)
    assert all(sum(p["attention"]) == pytest.approx(1.0, abs=1e-5) for p in preds)
    run = _table(store, "runs")[0]
    assert json.loads(run["encoder_provenance"])["encoder"] == "hu-hist" and run["status"] == "complete"
    # The test patients pretraining leaves out (--exclude-test-of task1) are exactly those this run tested on.
    reader = open_dataset("deeplesion", tmp_path / "deeplesion")
    patient_of = {r.scan_id: r.patient_id for r in reader.records()}
    tested = {patient_of[p["scan_id"]] for p in preds}
    assert tested == task_test_patients("task1", reader.records(), reader.label_names, store=store)


def test_task2_end_to_end_on_hu_hist_embeddings_of_a_synthetic_radchest_cohort(tmp_path: Path) -> None:
    result, store = _embed_and_run(tmp_path, "radchest", "task2")
    assert "task2 · hu-hist" in result.stdout and "pleural_effusion" in result.stdout
    assert len(_table(store, "run_folds")) == 5


def test_task3_end_to_end_on_hu_hist_embeddings_of_the_synthetic_nsclc_dicom(tmp_path: Path, nsclc_root: Path) -> None:
    result, store = _embed_and_run(tmp_path, "nsclc", "task3", root=nsclc_root)
    assert "task3 · hu-hist" in result.stdout and "stage_high" in result.stdout
    (na,) = na_patients(nsclc_root)
    assert f"no value for label stage_high (stage 'NA'): {na}" in result.stderr
    assert len(_table(store, "run_folds")) == 5


def test_summary_table_shows_undefined_labels_as_undefined() -> None:
    values = {m: {"a": 0.8, "b": float("nan"), MACRO: 0.8} for m in ("auc", "auprc", "f1")}
    fold = FoldScores(["a", "b"], values)
    summary = {
        m: {"a": Summary(0.8, 0.05, 2), "b": Summary(float("nan"), float("nan"), 0), MACRO: Summary(0.8, 0.05, 2)}
        for m in values
    }
    run = EncoderRun(
        "t",
        "enc",
        "tbl",
        "slice",
        "abmil",
        "run-1",
        "0" * 64,
        ["a", "b"],
        ["auc", "auprc", "f1"],
        10,
        8,
        [fold, fold],
        summary,
    )
    console = Console(width=120, record=True)
    console.print(summary_table(run))
    text = console.export_text()
    row_b = next(line for line in text.splitlines() if "│ b " in line)
    assert row_b.count("undefined") == 3 and "50.0" not in row_b
    assert "80.0 ± 5.0" in text
    assert run.summary_dict()["auc"]["b"] == {"mean": None, "std": None, "n": 0}


def test_a_test_set_smaller_than_the_cards_minimum_is_refused(tmp_path: Path, nsclc_root: Path) -> None:
    store = tmp_path / "store"
    write_table(store, nsclc_root, "toy-slice")
    with pytest.raises(
        ClearbenchError, match=r"test set of fold 0 has 3 patients, fewer than the task's minimum of 10"
    ):
        run_task("task3", root=nsclc_root, store=store, epochs=1, device="cpu")
    result = CliRunner().invoke(
        app, ["run", "task3", "--epochs", "1", "--store", str(store), "--root", str(nsclc_root)]
    )
    assert result.exit_code != 0 and "fewer than the task's minimum of 10" in result.stderr
    assert "--min-test-patients 3 to accept it" in result.stderr
    assert "run_folds" not in table_names(connect(store))


def test_the_macro_average_says_how_many_labels_it_covers() -> None:
    values = {m: {"a": 0.8, "b": float("nan"), "c": 0.6, MACRO: 0.7} for m in ("auc", "auprc", "f1")}
    fold = FoldScores(["a", "b", "c"], values)
    summary = {m: {k: Summary(v, 0.0, 2) for k, v in values[m].items()} for m in values}
    run = EncoderRun(
        "t", "enc", "tbl", "slice", "abmil", "run-1", "0" * 64, ["a", "b", "c"], ["auc"], 10, 8, [fold, fold], summary
    )
    console = Console(width=120, record=True)
    console.print(summary_table(run))
    assert "macro (2/3 labels)" in console.export_text()
    assert run.macro_labels() == (2, 2)


def _json_run(store: Path, root: Path, *args: str) -> dict:
    result = CliRunner().invoke(
        app, ["run", "task3", "--min-test-patients", "2", "--store", str(store), "--root", str(root), "--json", *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_recipe_overrides_enter_the_config_hash_and_the_stored_config(tmp_path: Path, nsclc_root: Path) -> None:
    store = tmp_path / "store"
    write_table(store, nsclc_root, "toy-slice")
    base = _json_run(store, nsclc_root, "--epochs", "1")
    assert base["summary"]["auc"][MACRO]["n"] >= 1 and base["macro_labels"] == {"min": 1, "max": 1, "of": 1}
    hashes = {base["config_hash"]}
    for flag in (
        ["--lr", "0.001"],
        ["--batch-size", "4"],
        ["--patience", "2"],
        ["--no-standardize"],
        ["--min-steps", "0"],
        ["--epochs", "2"],
    ):
        out = _json_run(store, nsclc_root, "--epochs", "1", *flag)
        assert out["config_hash"] not in hashes, flag
        hashes.add(out["config_hash"])
    out = _json_run(store, nsclc_root, "--epochs", "1", "--lr", "0.001")
    assert out["config_hash"] in hashes and out["overrides"] == {"lr": 0.001, "max_epochs": 1}
    run = next(r for r in ResultsStore(store).runs() if r["config_hash"] == out["config_hash"])
    assert run["config"]["training"]["lr"] == 0.001 and run["config"]["overrides"]["lr"] == 0.001
    # the table's caption names the recipe, overrides marked
    shown = CliRunner().invoke(
        app,
        ["run", "task3", "--min-test-patients", "2", "--epochs", "1", "--lr", "0.001", "--store", str(store)],
        env={"COLUMNS": "200"},
    )
    assert "recipe: lr 0.001*, batch 128, epochs 1*, patience 8, standardize True, min steps 512" in shown.stdout


def test_folds_store_the_batch_steps_and_standardisation_they_trained_with(tmp_path: Path, nsclc_root: Path) -> None:
    store = tmp_path / "store"
    write_table(store, nsclc_root, "toy-slice")
    on = _json_run(store, nsclc_root, "--epochs", "2")
    off = _json_run(store, nsclc_root, "--epochs", "2", "--no-standardize")
    rows = {(f["config_hash"], f["fold"]): f for f in _table(store, "run_folds")}
    state = json.loads(rows[(on["config_hash"], 0)]["training"])
    assert len(state["feature_mean"]) == len(state["feature_std"]) == 8
    # --min-steps 512 over 2 epochs shrinks the batch to one bag: every training bag is a step, twice
    n_train = len(rows[(on["config_hash"], 0)]["train_scan_ids"])
    assert state["batch_size"] == 1 and state["steps"] == 2 * n_train
    assert "feature_mean" not in json.loads(rows[(off["config_hash"], 0)]["training"])


def test_thread_count_is_part_of_the_configuration(tmp_path: Path, nsclc_root: Path) -> None:
    """Torch splits reductions by thread, so 1 and 2 threads differ in the last bits: never the same hash."""
    store = tmp_path / "store"
    write_table(store, nsclc_root, "toy-slice")
    one = _json_run(store, nsclc_root, "--epochs", "1", "--threads", "1")
    two = _json_run(store, nsclc_root, "--epochs", "1", "--threads", "2")
    assert one["threads"] == 1 and two["threads"] == 2
    assert one["config_hash"] != two["config_hash"] and two["folds_reused"] == []
    assert _json_run(store, nsclc_root, "--epochs", "1", "--threads", "1")["folds_reused"] == [0, 1, 2, 3, 4]


def test_a_fold_with_too_few_optimizer_steps_is_warned_about_with_the_fix(tmp_path: Path, nsclc_root: Path) -> None:
    store = tmp_path / "store"
    write_table(store, nsclc_root, "toy-slice")
    args = ["run", "task3", "--min-test-patients", "2", "--store", str(store), "--root", str(nsclc_root)]
    paper = CliRunner().invoke(app, [*args, "--paper-recipe", "--epochs", "2"], env={"COLUMNS": "300"})
    assert paper.exit_code == 0, paper.output
    warned = [line for line in paper.stderr.splitlines() if "optimizer steps" in line]
    assert len(warned) == 5 and "only 2 optimizer steps in all" in warned[0]
    assert "--epochs" in warned[0] and "--batch-size" in warned[0] and "--min-steps 512" in warned[0]
    default = CliRunner().invoke(app, [*args, "--epochs", "2"], env={"COLUMNS": "300"})
    assert default.exit_code == 0 and "optimizer steps" not in default.stderr
