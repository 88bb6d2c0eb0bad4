"""One stored split per task and cohort: every encoder's run reads it, a missing scan is reported for its
encoder, a changed cohort is a choice, pretraining excludes its test patients, and no kill leaves half a split."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from test_run_cli import _table, write_table
from typer.testing import CliRunner

from clearbench.cli import app
from clearbench.errors import ClearbenchError
from clearbench.protocols.run import load_task_split, run_task
from clearbench.protocols.stored_split import CohortChangedError, cohort_fingerprint, task_split
from clearbench.protocols.test_patients import task_test_set
from clearbench.scans.registry import open_dataset
from clearbench.scans.synth.nsclc import write_cohort
from clearbench.store import connect
from clearbench.store.db import open_or_create
from clearbench.store.results import RUNS, RUNS_SCHEMA, ResultsStore
from clearbench.store.splits import SPLITS, SPLITS_SCHEMA, SplitTables
from clearbench.tasks.labels import task_labels
from clearbench.tasks.registry import get_task

runner = CliRunner()


@pytest.fixture(scope="module")
def nsclc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 synthetic NSCLC patients, one scan each; one has stage NA (15 labelled)."""
    return write_cohort(tmp_path_factory.mktemp("nsclc"), 16, 0, size=24)


def labels_of(root: Path):
    reader = open_dataset("nsclc", root)
    return task_labels(get_task("task3"), reader.records(), reader.label_names)


def set_stage(root: Path, patient: str, stage: str) -> None:
    """Edit the clinical CSV on disk: ``NA`` takes the patient out of task 3's labelled cohort."""
    clinical = next(root.glob("*clinical*.csv"))
    lines = clinical.read_text().splitlines()
    col = lines[0].split(",").index("Overall.Stage")
    for i, line in enumerate(lines):
        cells = line.split(",")
        if cells[0] == patient:
            cells[col] = stage
            lines[i] = ",".join(cells)
    clinical.write_text("\n".join(lines) + "\n")


def stage_of(root: Path, patient: str) -> str:
    clinical = next(root.glob("*clinical*.csv"))
    lines = clinical.read_text().splitlines()
    col = lines[0].split(",").index("Overall.Stage")
    return next(line.split(",")[col] for line in lines if line.startswith(patient + ","))


def run_json(*args: str) -> list[dict]:
    result = runner.invoke(app, ["run", *args, "--min-test-patients", "2", "--json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.strip().splitlines()]


def test_two_encoders_are_tested_on_the_stored_split_and_a_missing_scan_is_counted(
    tmp_path: Path, nsclc_root: Path
) -> None:
    store = tmp_path / "store"
    split, _ = load_task_split("task3", root=nsclc_root, store=store)
    missing = split.folds[0]["test"][0]
    write_table(store, nsclc_root, "enc-a")
    write_table(store, nsclc_root, "enc-b", skip=frozenset({missing}))
    out = {
        r["encoder"]: r for r in run_json("task3", "--epochs", "1", "--store", str(store), "--root", str(nsclc_root))
    }
    assert out["enc-a"]["split_id"] == out["enc-b"]["split_id"] == split.split_id
    assert out["enc-a"]["n_missing"] == 0 and out["enc-b"]["n_missing"] == 1 and out["enc-b"]["missing"] == [missing]
    assert out["enc-b"]["n_scans"] == out["enc-a"]["n_scans"] - 1

    runs = {r["encoder"]: r for r in _table(store, "runs")}
    assert runs["enc-b"]["n_missing"] == 1 and json.loads(runs["enc-b"]["missing"]) == [missing]
    assert {r["split_id"] for r in runs.values()} == {split.split_id}
    folds = {(f["encoder"], f["fold"]): f for f in _table(store, "run_folds")}
    preds = [p for p in _table(store, "run_predictions") if p["role"] == "test"]
    for k in range(split.n_folds):
        a, b = folds["enc-a", k], folds["enc-b", k]
        for role in ("train", "val", "test"):
            assert sorted(a[f"{role}_scan_ids"]) == split.folds[k][role]
            assert sorted(b[f"{role}_scan_ids"]) == [s for s in split.folds[k][role] if s != missing]
        # the stored predictions: the same test patients for both encoders, but for the missing scan's
        tested = {
            e: {p["patient_id"] for p in preds if p["encoder"] == e and p["fold"] == k} for e in ("enc-a", "enc-b")
        }
        assert tested["enc-a"] == split.patients(k, "test")
        assert tested["enc-b"] == split.patients(k, "test") - ({split.patient_of[missing]} if k == 0 else set())

    text = runner.invoke(app, ["run", "task3", "--min-test-patients", "2", "--epochs", "1", "--store", str(store)])
    assert text.exit_code == 0, text.output
    assert f"1 scan excluded, no embeddings in window(s) lung in table nsclc__enc-b: {missing}" in text.stderr


def test_the_split_is_drawn_once_and_a_repeated_run_adds_no_row(tmp_path: Path, nsclc_root: Path) -> None:
    store = tmp_path / "store"
    write_table(store, nsclc_root, "enc-a")
    first = run_task("task3", min_test_patients=2, root=nsclc_root, store=store, epochs=1, device="cpu")[0]
    n_rows = len(_table(store, SPLITS))
    assert first.split.choice == "drawn" and n_rows == 5 * 15  # one row per fold and labelled scan
    again = run_task("task3", min_test_patients=2, root=nsclc_root, store=store, epochs=1, device="cpu")[0]
    assert again.split_id == first.split_id and again.split.choice == "stored"
    assert len(_table(store, SPLITS)) == n_rows
    # every fold reused: the same run, not a second row that would look like a new result
    assert again.reused == [0, 1, 2, 3, 4] and again.run_id == first.run_id
    runs = _table(store, "runs")
    assert len(runs) == 1 and runs[0]["status"] == "complete" and runs[0]["split_id"] == first.split_id
    fresh = run_task("task3", min_test_patients=2, root=nsclc_root, store=store, epochs=1, device="cpu", rerun=True)[0]
    statuses = {r["run_id"]: r["status"] for r in _table(store, "runs")}
    assert statuses == {first.run_id: "superseded", fresh.run_id: "complete"}
    other_seed = run_task("task3", min_test_patients=2, root=nsclc_root, store=store, epochs=1, device="cpu", seed=3)[0]
    assert other_seed.split_id != first.split_id and len(_table(store, SPLITS)) == 2 * n_rows
    # the task's newest choice names the split its latest run used, whichever seed that was
    tables = SplitTables(connect(store))
    assert tables.latest_choice("task3")["split_id"] == other_seed.split_id
    back = run_task("task3", min_test_patients=2, root=nsclc_root, store=store, epochs=1, device="cpu")[0]
    assert back.split_id == first.split_id and tables.latest_choice("task3")["split_id"] == first.split_id
    n_choices = len(_table(store, "split_choices"))
    run_task("task3", min_test_patients=2, root=nsclc_root, store=store, epochs=1, device="cpu")
    assert len(_table(store, "split_choices")) == n_choices  # nothing to record when nothing changed


def test_a_changed_cohort_is_refused_until_the_user_keeps_or_redraws_the_split(
    tmp_path: Path, nsclc_root: Path
) -> None:
    root = Path(shutil.copytree(nsclc_root, tmp_path / "nsclc"))
    store = tmp_path / "store"
    write_table(store, root, "enc-a")
    late = "LUNG1-003"
    stage = stage_of(root, late)
    set_stage(root, late, "NA")  # the split is drawn without this patient
    base = ["task3", "--min-test-patients", "2", "--epochs", "1", "--store", str(store), "--root", str(root)]
    (old,) = run_json(*base)
    set_stage(root, late, stage)  # ... who is then added to the cohort

    refused = runner.invoke(app, ["run", *base])
    assert refused.exit_code != 0 and isinstance(refused.exception, CohortChangedError)
    message = str(refused.exception)
    assert "\n" not in message and "--keep-split" in message and "--resplit" in message
    assert f"1 scan added: {late}" in message and old["split_id"] in message

    (kept,) = run_json(*base, "--keep-split")
    assert kept["split_id"] == old["split_id"] and kept["n_scans"] == old["n_scans"]
    assert kept["config_hash"] == old["config_hash"] and kept["folds_reused"] == [0, 1, 2, 3, 4]
    text = runner.invoke(app, ["run", *base])  # the choice is remembered; the left-out scan is listed
    assert text.exit_code == 0, text.output
    assert f"not in the stored split {old['split_id']}" in text.stderr and late in text.stderr
    assert f"kept split {old['split_id']}" in text.stderr

    (redrawn,) = run_json(*base, "--resplit")
    assert redrawn["split_id"] != old["split_id"] and redrawn["n_scans"] == old["n_scans"] + 1
    by_run = {r["run_id"]: r["split_id"] for r in _table(store, "runs")}
    assert by_run[old["run_id"]] == old["split_id"] and by_run[redrawn["run_id"]] == redrawn["split_id"]
    (after,) = run_json(*base)
    assert after["split_id"] == redrawn["split_id"] and after["run_id"] == redrawn["run_id"]

    set_stage(root, late, "NA")  # removed again: the first split matches this cohort again
    (back,) = run_json(*base)
    assert back["split_id"] == old["split_id"]

    both = runner.invoke(
        app, ["splits", "task3", "--root", str(root), "--store", str(store), "--resplit", "--keep-split"]
    )
    assert isinstance(both.exception, ClearbenchError) and "exclude each other" in str(both.exception)


def test_a_removed_or_relabelled_scan_is_a_changed_cohort_and_a_kept_split_reports_it(
    tmp_path: Path, nsclc_root: Path
) -> None:
    card = get_task("task3")
    labels = labels_of(nsclc_root)
    store = tmp_path / "store"
    split = task_split(card, labels, store)
    relabelled = labels_of(nsclc_root)
    relabelled.y[0, 0] = 1 - relabelled.y[0, 0]
    assert cohort_fingerprint(relabelled, card.protocol) != split.fingerprint
    with pytest.raises(CohortChangedError, match=f"1 scan relabelled or moved: {labels.scan_ids[0]}"):
        task_split(card, relabelled, store)
    fewer = labels_of(nsclc_root)
    gone = fewer.scan_ids.pop()
    fewer.patient_ids.pop()
    fewer.splits.pop()
    fewer.y = fewer.y[:-1]
    kept = task_split(card, fewer, store, keep=True)
    assert kept.split_id == split.split_id and kept.change.removed == [gone] and kept.choice == "kept"
    folds = kept.folds_for(fewer.scan_ids)
    assert sum(len(f.test) for f in folds) == len(fewer.scan_ids)  # nested: every remaining scan tested once


def test_splits_json_has_the_documented_keys(tmp_path: Path, nsclc_root: Path) -> None:
    args = ["splits", "task3", "--root", str(nsclc_root), "--store", str(tmp_path / "store")]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert set(view) == {
        "task",
        "split_id",
        "cohort_fingerprint",
        "seed",
        "protocol",
        "created_at",
        "choice",
        "labels",
        "n_scans",
        "n_patients",
        "test_patients",
        "folds",
        "cohort_change",
    }
    assert view["choice"] == "drawn" and view["n_scans"] == 15 and view["protocol"]["kind"] == "nested-kfold"
    assert len(view["folds"]) == 5 and sorted(view["test_patients"]) == view["test_patients"]
    for fold in view["folds"]:
        assert set(fold["roles"]) == {"train", "val", "test"}
        assert sum(r["scans"] for r in fold["roles"].values()) == 15
        for r in fold["roles"].values():
            assert set(r["prevalence"]) == {"stage_high"} and 0 <= r["prevalence"]["stage_high"] <= 1
    table = runner.invoke(app, args, env={"COLUMNS": "150"})
    assert table.exit_code == 0 and f"split {view['split_id']}" in table.stdout and "stage_high" in table.stdout
    assert runner.invoke(app, [*args, "--json"]).stdout.count('"choice": "stored"') == 1


def test_a_kill_never_leaves_half_a_split_read_as_whole(tmp_path: Path, nsclc_root: Path, monkeypatch) -> None:
    card, labels, store = get_task("task3"), labels_of(nsclc_root), tmp_path / "store"
    db = connect(store)
    # A writer killed after part of its rows (as a non-atomic writer could be): never read as a split.
    real_write = SplitTables.write
    captured: list[list[dict]] = []

    def killed_mid_write(self, rows):
        captured.append(list(rows))
        stamp = {"write_id": "partial", "n_rows": len(rows), "created_at": datetime.now(timezone.utc)}
        part = pa.Table.from_pylist([{**r, **stamp} for r in rows[:7]], schema=SPLITS_SCHEMA)
        open_or_create(self.db, SPLITS, SPLITS_SCHEMA).add(part)
        raise KeyboardInterrupt

    def killed_before_choosing(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(SplitTables, "write", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        task_split(card, labels, db)
    assert len(_table(store, SPLITS)) == 7 and SplitTables(db).rows(captured[0][0]["split_id"]) is None
    monkeypatch.setattr(SplitTables, "write", real_write)
    monkeypatch.setattr(SplitTables, "choose", killed_before_choosing)
    # Killed between the rows and the choice that makes them the task's split: the rows stay unused ...
    with pytest.raises(KeyboardInterrupt):
        task_split(card, labels, db)
    assert SplitTables(db).choices(card.name, captured[0][0]["protocol"]) == []
    monkeypatch.undo()
    # ... until the next call, which finds them whole, chooses them and writes nothing twice.
    split = task_split(card, labels, db)
    assert split.choice == "drawn" and len(SplitTables(db).rows(split.split_id)) == 5 * 15
    assert len(_table(store, SPLITS)) == 7 + 5 * 15
    assert sorted(s for f in split.folds for s in f["test"]) == sorted(labels.scan_ids)
    # Two processes that drew the same split at once leave two identical writes; one is read.
    SplitTables(db).write(captured[0])
    assert len(SplitTables(db).rows(split.split_id)) == 5 * 15
    assert task_split(card, labels, db).split_id == split.split_id


@pytest.mark.slow
def test_exclude_test_of_reads_the_stored_split_in_a_process_without_lancedb(tmp_path: Path, nsclc_root: Path) -> None:
    store = tmp_path / "store"
    split, _ = load_task_split("task3", root=nsclc_root, store=store)
    reader = open_dataset("nsclc", nsclc_root)
    spawned = task_test_set("task3", reader.records(), reader.label_names, store=store, isolate=True)
    here = task_test_set("task3", reader.records(), reader.label_names, store=store, isolate=False)
    assert spawned == here and spawned.split_id == split.split_id and set(spawned.patients) == split.test_patients()


def test_exclude_test_of_refuses_a_changed_cohort_and_names_the_command_that_settles_it(
    tmp_path: Path, nsclc_root: Path
) -> None:
    store = tmp_path / "store"
    reader = open_dataset("nsclc", nsclc_root)
    records = reader.records()
    drawn = task_test_set("task3", records[1:], reader.label_names, store=store, isolate=False)
    with pytest.raises(ClearbenchError, match=r"1 scan added: .*clearbench splits task3 --keep-split \(or --resplit\)"):
        task_test_set("task3", records, reader.label_names, store=store, isolate=False)
    split, _ = load_task_split("task3", root=nsclc_root, store=store, keep_split=True)
    assert split.split_id == drawn.split_id  # kept once, remembered for pretraining too
    assert task_test_set("task3", records, reader.label_names, store=store, isolate=False) == drawn


def test_a_runs_table_of_an_older_clearbench_gains_the_new_columns(tmp_path: Path) -> None:
    db = connect(tmp_path / "store")
    old_schema = pa.schema([f for f in RUNS_SCHEMA if f.name not in ("split_id", "n_missing", "missing")])
    row = {f.name: None for f in old_schema} | {
        "run_id": "old",
        "config_hash": "h",
        "task": "t",
        "dataset": "d",
        "encoder": "e",
        "started_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
    }
    db.create_table(RUNS, data=pa.Table.from_pylist([row], schema=old_schema))
    results = ResultsStore(db=db)
    results.start_run(
        {
            "run_id": "new",
            "config_hash": "h2",
            "task": "t",
            "dataset": "d",
            "encoder": "e",
            "split_id": "s",
            "n_missing": 2,
        }
    )
    rows = {r["run_id"]: r for r in results.runs("t")}
    assert rows["old"]["split_id"] is None and rows["new"]["split_id"] == "s" and rows["new"]["n_missing"] == 2
