"""Strict settings: a typo in config.toml, an encoder card or a task card is one line naming the file, the key
path and what was expected, from the Python API and from the real CLI (exit code 1, no traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_run import one_line_error, run_cli
from pydantic import BaseModel, ConfigDict, ValidationError
from test_tasks import MINIMAL as TASK_CARD

from clearbench.config import config_path, dataset_roots
from clearbench.errors import InputError
from clearbench.settings import describe_validation_error, validate_settings


def _write_config(text: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    size: int = 1
    mode: str = "a"


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    inner: _Inner = _Inner()
    tables: dict[str, _Inner | str] = {}
    rate: float = 0.5


@pytest.mark.parametrize(
    "data, expected",
    [
        ({}, "field 'name': missing"),
        ({"name": "x", "inner": {"sise": 2}}, "field 'inner.sise': unknown key; allowed keys are mode, size"),
        ({"name": "x", "inner": {"size": "2"}}, "field 'inner.size': expected an integer, got '2'"),
        ({"name": "x", "inner": {"size": True}}, "field 'inner.size': expected an integer, got True"),
        ({"name": "x", "rate": "fast"}, "field 'rate': expected a number, got 'fast'"),
        ({"name": "x", "tables": {"t": 3}}, "field 'tables.t': expected a table or a string, got 3"),
        (
            {"name": "x", "tables": {"t": {"mod": "b"}}},
            "field 'tables.t.mod': unknown key; allowed keys are mode, size",
        ),
        ({"name": 1, "rate": "x"}, "field 'name': expected a string, got 1 (and 1 more problem)"),
    ],
)
def test_a_validation_error_is_one_line_with_the_key_path_and_the_expectation(data: dict, expected: str) -> None:
    with pytest.raises(InputError) as err:
        validate_settings(_Outer, data, "settings.toml", hint="see the docs")
    assert str(err.value) == f"settings.toml: {expected}; see the docs"
    assert _Outer.model_validate({"name": "x", "rate": 1}).rate == 1.0  # an integer is a number


def test_the_prefix_puts_a_sub_table_at_its_place_in_the_file() -> None:
    with pytest.raises(ValidationError) as err:
        _Inner.model_validate({"size": "big"})
    described = describe_validation_error(err.value, _Inner, prefix=("params",))
    assert described == "field 'params.size': expected an integer, got 'big'"


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ('[datasets.deeplesion]\nroots = "/data"\n', "datasets.deeplesion.roots", "unknown key; allowed keys are root"),
        ('[dataset.deeplesion]\nroot = "/data"\n', "dataset", "unknown key; allowed keys are datasets"),
        ("[datasets.deeplesion]\nroot = 5\n", "datasets.deeplesion.root", "expected a string, got 5"),
    ],
)
def test_a_config_toml_typo_is_refused_naming_the_key(text: str, key: str, expected: str) -> None:
    path = _write_config(text)
    with pytest.raises(InputError) as err:
        dataset_roots()
    assert str(err.value).startswith(f"{path}: field '{key}': {expected}; ")


def test_config_toml_keeps_its_short_form_and_tables_without_a_root(tmp_path: Path) -> None:
    _write_config(f'[datasets]\nnifti = "{tmp_path}"\n[datasets.dicom]\n[datasets.nsclc]\nroot = "~/nsclc"\n')
    assert dataset_roots() == {"nifti": tmp_path, "nsclc": Path("~/nsclc").expanduser()}


def test_the_cli_prints_a_config_toml_typo_in_one_line() -> None:
    path = _write_config('[datasets.deeplesion]\nroots = "/data"\n')
    message = one_line_error(run_cli("scans", "--dataset", "deeplesion"))
    assert str(path) in message and "field 'datasets.deeplesion.roots': unknown key; allowed keys are root" in message


@pytest.mark.parametrize(
    "extra, key, expected",
    [
        (
            "[training]\nlearning_rate = 1e-3\n",
            "training.learning_rate",
            "unknown key; allowed keys are batch_size, lr, max_epochs, min_steps, patience, standardize, weight_decay",
        ),
        (
            "[heads.slice]\nhiden = 64\n",
            "heads.slice.hiden",
            "unknown key; allowed keys are attention_dim, dropout, gated, head, hidden",
        ),
        (
            '[heads.volume]\nhead = "mlp"\ngated = true\n',
            "heads.volume.gated",
            "unknown key; allowed keys are dropout, head, hidden",
        ),
        ("[heads.slice]\ndropout = 1.5\n", "heads.slice.dropout", "expected a value < 1.0, got 1.5"),
        ("[training]\nbatch_size = 0\n", "training.batch_size", "expected a value >= 1, got 0"),
        ('[training]\nstandardize = "no"\n', "training.standardize", "expected true or false, got 'no'"),
    ],
)
def test_a_task_card_typo_is_refused_naming_the_key(tmp_path: Path, extra: str, key: str, expected: str) -> None:
    from clearbench.tasks.card import load_card

    path = tmp_path / "cohort.toml"
    path.write_text(TASK_CARD + extra)
    with pytest.raises(InputError) as err:
        load_card(path)
    assert str(err.value) == f"{path}: field '{key}': {expected}"


def test_a_protocol_or_head_of_an_unknown_kind_names_the_tag_key(tmp_path: Path) -> None:
    from clearbench.tasks.card import load_card

    path = tmp_path / "cohort.toml"
    path.write_text(TASK_CARD.replace('kind = "nested-kfold"', 'kind = "nested-cv"'))
    with pytest.raises(InputError) as err:
        load_card(path)
    assert (
        str(err.value) == f"{path}: field 'protocol.kind': expected one of holdout+kfold, nested-kfold, got 'nested-cv'"
    )
    path.write_text(TASK_CARD.replace('kind = "nested-kfold"', "folds = 3"))
    with pytest.raises(InputError) as err:
        load_card(path)
    assert str(err.value) == f"{path}: field 'protocol.kind': missing"


def test_a_head_table_without_a_head_takes_the_kinds_default_and_its_parameters(tmp_path: Path) -> None:
    from clearbench.tasks.card import HEAD_PARAMS, load_card

    path = tmp_path / "cohort.toml"
    path.write_text(TASK_CARD + "[heads.slice]\nhidden = 64\n[heads.volume]\ndropout = 0\n")
    card = load_card(path)
    assert card.head_for("slice").head == "abmil" and card.head_for("slice").params == dict(
        HEAD_PARAMS["abmil"], hidden=64
    )
    assert card.head_for("volume").params == {"hidden": 256, "dropout": 0.0}
    assert isinstance(card.head_for("volume").params["dropout"], float)  # the run hash sees 0.0, as before


def test_training_overrides_are_validated_like_the_card(tmp_path: Path) -> None:
    from clearbench.tasks.card import load_card

    path = tmp_path / "cohort.toml"
    path.write_text(TASK_CARD)
    card = load_card(path)
    assert card.with_training(lr=1e-3, batch_size=None).training.lr == 1e-3
    with pytest.raises(InputError, match=r"^training settings: field 'lr': expected a value > 0.0, got 0$"):
        card.with_training(lr=0)
    with pytest.raises(InputError, match=r"^training settings: field 'epochs': unknown key; allowed keys are "):
        card.with_training(epochs=3)


def test_the_cli_prints_a_task_card_typo_in_one_line(tmp_path: Path) -> None:
    from clearbench.config import user_card_dir

    folder = user_card_dir("tasks")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cohort.toml"
    path.write_text(TASK_CARD + "[training]\nlearning_rate = 1e-3\n")
    message = one_line_error(run_cli("run", "cohort", "--encoder", "hu-hist", "--root", str(tmp_path)))
    assert message == (
        f"error: {path}: field 'training.learning_rate': unknown key; allowed keys are batch_size, lr, max_epochs, "
        "min_steps, patience, standardize, weight_decay"
    )


def test_run_takes_its_training_flags_help_and_bounds_from_the_card_model() -> None:
    import typer.main

    from clearbench.cli import app
    from clearbench.tasks.card import TrainingSpec

    run = typer.main.get_command(app).commands["run"]
    params = {p.name: p for p in run.params}
    for setting, param in [("max_epochs", "epochs"), ("batch_size", "batch_size"), ("min_steps", "min_steps")]:
        field = TrainingSpec.model_fields[setting]
        assert params[param].help.startswith(field.description)
        assert params[param].min == next(m.ge for m in field.metadata)
