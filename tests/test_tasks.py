"""Task cards: the built-in ones, validation errors, user and plugin cards, the CLI, and labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clearbench.cli import app
from clearbench.config import user_card_dir
from clearbench.errors import ClearbenchError, InputError
from clearbench.problems import ProblemLog
from clearbench.scans.base import ScanRecord
from clearbench.tasks.card import card_from_dict, load_card
from clearbench.tasks.labels import task_labels
from clearbench.tasks.registry import get_task, list_tasks

MINIMAL = """
dataset = "nifti"
type = "binary"
labels = ["malignant"]
windows = ["lung"]
[protocol]
kind = "nested-kfold"
"""


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def test_builtin_cards_hold_the_papers_three_tasks() -> None:
    t1, t2, t3 = get_task("task1"), get_task("task2"), get_task("task3")
    assert (t1.dataset, t1.type, t1.windows) == ("deeplesion", "multilabel", ("abdomen", "lung"))
    assert t1.labels == ("bone", "abdomen", "mediastinum", "liver", "lung", "kidney", "soft_tissue", "pelvis")
    assert (t1.protocol.kind, t1.protocol.test_fraction, t1.protocol.folds) == ("holdout+kfold", 0.2, 5)
    assert (t2.dataset, t2.windows, len(t2.labels)) == ("radchest", ("lung",), 8)
    assert (t3.dataset, t3.type, t3.labels, t3.protocol.kind) == ("nsclc", "binary", ("stage_high",), "nested-kfold")
    for card in (t1, t2, t3):
        assert card.head_for("slice").head == "abmil" and card.head_for("volume").head == "mlp"
        cfg = card.train_config()
        assert (cfg.lr, cfg.batch_size, cfg.max_epochs, cfg.patience) == (1e-4, 128, 32, 8)
    assert t1.loss == "bce" and t3.loss == "ce"
    assert t3.train_config(epochs=3).max_epochs == 3


@pytest.mark.parametrize(
    "edit, field",
    [
        ('type = "multiclass"', "type"),
        ('labels = ["a", "b"]', "labels"),
        ('windows = ["bone"]', "windows"),
        ('dataset = "nowhere"', "dataset"),
        ('colour = "red"', "colour"),
        ("hit_rate_k = -1", "hit_rate_k"),
        ('[protocol]\nkind = "nested-kfold"\nfolds = "five"', "protocol.folds"),
        ('[protocol]\nkind = "nested-kfold"\ntest_fraction = 0.2', "protocol.test_fraction"),
        ('[protocol]\nkind = "bootstrap"', "protocol.kind"),
        ("[training]\nlr = -1", "training.lr"),
        ('[heads.slice]\nhead = "abmil"\ngated = "yes"', "heads.slice.gated"),
        ('[heads.volume]\nhead = "transmil"', "heads.volume.head"),
    ],
)
def test_bad_card_gives_one_line_naming_file_and_field(tmp_path: Path, edit: str, field: str) -> None:
    lines = [line for line in MINIMAL.strip().splitlines()]
    key = edit.split("=")[0].strip()
    if edit.startswith("[protocol]"):
        lines = [line for line in lines if line not in ("[protocol]", 'kind = "nested-kfold"')]
    elif not edit.startswith("["):
        lines = [line for line in lines if not line.startswith(key + " ")]
        lines.insert(0, edit)
        edit = ""
    path = _write(tmp_path, "bad", "\n".join(lines) + "\n" + edit + "\n")
    with pytest.raises(InputError) as err:
        load_card(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(path)) and f"field '{field}'" in message


def test_hit_rate_k_defaults_to_two_and_stays_out_of_the_run_hash(tmp_path: Path) -> None:
    assert get_task("task1").hit_rate_k == 2
    card = load_card(_write(tmp_path, "wide", "hit_rate_k = 5\n" + MINIMAL))
    assert card.hit_rate_k == 5
    assert card.to_dict() == load_card(_write(tmp_path, "plain", MINIMAL)).to_dict() | {"name": "wide", "title": "wide"}


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "broken", "dataset = \n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_card(path)


def test_user_cards_join_the_registry_and_bad_ones_are_reported() -> None:
    folder = user_card_dir("tasks")
    _write(folder, "my-cohort", MINIMAL)
    _write(folder, "broken", MINIMAL.replace('type = "binary"', "type = 3"))
    _write(folder, "task1", MINIMAL)  # may not replace the built-in task1
    problems = ProblemLog()
    cards = {c.name: c for c in list_tasks(problems)}
    assert "my-cohort" in cards and cards["my-cohort"].dataset == "nifti"
    assert cards["task1"].dataset == "deeplesion"
    reasons = [str(p) for p in problems.problems]
    assert any("broken.toml" in r and "field 'type'" in r for r in reasons)
    assert any("task 'task1' is already defined" in r for r in reasons)
    with pytest.raises(InputError, match="field 'type'"):
        get_task("broken")


def test_a_copied_card_that_keeps_its_name_says_why_it_is_ignored() -> None:
    """The README says to copy tasks/task1.toml; a copy that keeps name = "task1" is shadowed by the built-in."""
    builtin = get_task("task1")
    copy = Path(builtin.source).read_text().replace('dataset = "deeplesion"', 'dataset = "nifti"')
    _write(user_card_dir("tasks"), "my-lesions", copy)
    with pytest.raises(InputError, match=r"my-lesions\.toml: task 'task1' is already defined"):
        get_task("my-lesions")


def test_plugin_task_from_entry_point() -> None:
    card = get_task("example-tiny")
    assert card.dataset == "nifti" and card.type == "binary" and card.protocol.folds == 3
    assert card.training.max_epochs == 4 and card.source.startswith("entry point")


def test_card_by_path_and_unknown_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "adhoc", MINIMAL)
    assert get_task(path).name == "adhoc"
    with pytest.raises(ClearbenchError, match=r"unknown task 'nope'.*task1"):
        get_task("nope")


def test_cards_roundtrip_through_to_dict() -> None:
    card = get_task("task1")
    again = card_from_dict(card.to_dict(), "roundtrip")
    assert again.to_dict() == card.to_dict()


def test_tasks_cli_lists_builtin_user_and_plugin_cards() -> None:
    _write(user_card_dir("tasks"), "mine", MINIMAL)
    runner = CliRunner()
    result = runner.invoke(app, ["tasks", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    names = [r["name"] for r in rows]
    assert names[:4] == ["task1", "task1-demo", "task2", "task3"] and "mine" in names and "example-tiny" in names
    table = runner.invoke(app, ["tasks"], env={"COLUMNS": "160"})
    assert table.exit_code == 0 and "holdout+kfold" in table.stdout and "plugin" in table.stdout


def _record(scan_id: str, patient: str, labels: dict, **meta) -> ScanRecord:
    return ScanRecord(scan_id, patient, Path(scan_id), labels=labels, meta=meta)


def test_task3_labels_exclude_stage_na_with_a_reason() -> None:
    card = get_task("task3")
    records = [
        _record("LUNG1-001", "LUNG1-001", {"stage_high": 1.0}, stage_raw="IIIb"),
        _record("LUNG1-002", "LUNG1-002", {"stage_high": None}, stage_raw="NA"),
        _record("LUNG1-003", "LUNG1-003", {"stage_high": 0.0}, stage_raw="I"),
        _record("LUNG1-004", "LUNG1-004", {"stage_high": None}, stage_raw="NA"),
    ]
    labels = task_labels(card, records, ("stage_high",))
    assert labels.scan_ids == ["LUNG1-001", "LUNG1-003"]
    assert labels.y.tolist() == [[1.0], [0.0]]
    assert [e.scan_id for e in labels.excluded] == ["LUNG1-002", "LUNG1-004"]
    assert labels.excluded[0].reason == "no value for label stage_high (stage 'NA')"


def test_labels_must_be_binary_and_exist_in_the_dataset() -> None:
    card = get_task("task1")
    full = {name: 0.0 for name in card.labels}
    records = [
        _record("s1", "p1", {**full, "lung": 1.0}),
        _record("s2", "p1", {**full, "bone": 2.0}),
        _record("s3", "p2", {}),
    ]
    labels = task_labels(card, records)
    assert labels.scan_ids == ["s1"] and labels.y[0, card.labels.index("lung")] == 1.0
    assert np.sum(labels.y) == 1.0
    reasons = {e.scan_id: e.reason for e in labels.excluded}
    assert "bone=2.0" in reasons["s2"] and "no value for labels" in reasons["s3"]
    with pytest.raises(ClearbenchError, match="does not provide"):
        task_labels(card, records, ("emphysema",))
