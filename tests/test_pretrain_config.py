"""The pretraining settings are one strict model: a typo or a wrong type is a one-line error naming the setting,
and `clearbench pretrain` takes its options (types, defaults, bounds, help) from that model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import clearbench
from clearbench.cli import app
from clearbench.cli.pretrain import FLAGS, settings_from
from clearbench.errors import ClearbenchError
from clearbench.pretraining.config import PretrainConfig

runner = CliRunner()


def one_line_error(**settings: object) -> str:
    with pytest.raises(ClearbenchError) as caught:
        clearbench.pretrain("mambaout", root="/nowhere", **settings)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("pretraining settings: ")
    return message


def test_a_misspelt_setting_is_refused_in_one_line_with_the_allowed_keys() -> None:
    message = one_line_error(epoch=3)
    assert message.startswith("pretraining settings: field 'epoch': unknown key; allowed keys are arch, batch_size")
    assert "epochs" in message and "warmup_epochs" in message


def test_a_setting_of_the_wrong_type_names_the_key_path_and_the_type() -> None:
    assert one_line_error(epochs="ten") == "pretraining settings: field 'epochs': expected an integer, got 'ten'"
    assert "field 'crop_scale.1': expected a number, got 'big'" in one_line_error(crop_scale=(0.1, "big"))
    assert "field 'strict': expected true or false, got 'yes'" in one_line_error(strict="yes")
    assert "field 'method': expected one of 'moco', 'lecl', got 'mocco'" in one_line_error(method="mocco")
    assert "field 'epochs': expected a value >= 1, got 0" in one_line_error(epochs=0)
    assert "field 'windows': expected a list, got 'lung'" in one_line_error(windows="lung")


def test_lists_and_paths_are_taken_as_a_file_or_json_gives_them(tmp_path: Path) -> None:
    config = PretrainConfig("mambaout", root=tmp_path, out=tmp_path / "run", splits=[], windows=["lung"])
    assert config.root == str(tmp_path) and config.out == str(tmp_path / "run") and config.splits is None
    assert config.windows == ("lung",) and PretrainConfig("mambaout", crop_scale=[0.2, 1]).crop_scale == (0.2, 1.0)
    saved = {k: list(v) if isinstance(v, tuple) else v for k, v in config.to_dict().items()}  # as JSON gives it
    assert config.differences(saved) == []
    assert config.differences({**saved, "epochs": 7}) == ["epochs: 7 in the checkpoint, 100 now"]


def pretrain_command() -> Any:
    group: Any = typer.main.get_command(app)
    return group.commands["pretrain"]


def test_every_setting_but_the_streaming_buffer_is_an_option_of_the_command() -> None:
    on_cli = {flag.setting for flag in FLAGS}
    assert set(PretrainConfig.model_fields) - on_cli == {"buffer_size"}
    names = {name for param in pretrain_command().params for name in param.opts}
    assert {"--arch", "-a", "--size", "--crop-min", "--lesion-crop-max", "--window", "-w", "--split"} <= names
    assert {"--no-progress", "--json", "--strict", "-j", "-o", "-b"} <= names


def test_the_command_defaults_are_the_model_defaults() -> None:
    # What the command passes when only --arch is given is exactly the model's own defaults.
    params = {param.name: param.default for param in pretrain_command().params if param.name != "json_out"}
    params["arch"] = "mambaout"
    from_cli = PretrainConfig(**settings_from(params))
    assert from_cli == PretrainConfig("mambaout")
    epochs = next(p for p in pretrain_command().params if p.name == "epochs")
    assert epochs.min == 1  # the model's bound, enforced where the option is parsed
    assert epochs.help == PretrainConfig.model_fields["epochs"].description


def test_a_bad_option_value_exits_as_before() -> None:
    assert runner.invoke(app, ["pretrain", "--arch", "mambaout", "--epochs", "0"]).exit_code == 2  # click's bound
    assert runner.invoke(app, ["pretrain", "--arch", "mambaout", "--epochs", "ten"]).exit_code == 2
    result = runner.invoke(app, ["pretrain", "--arch", "mambaout", "--method", "mocco"])
    assert result.exit_code == 1 and "field 'method': expected one of 'moco', 'lecl'" in str(result.exception)


def test_the_command_maps_its_flags_onto_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import clearbench.pretraining.run as run_module

    seen: dict[str, Any] = {}

    def record(*, problems: object, **settings: Any) -> None:
        seen.update(settings)
        raise SystemExit(0)

    monkeypatch.setattr(run_module, "pretrain", record)
    args = ["pretrain", "-a", "mambaout", "--size", "nano", "--no-progress", "--crop-min", "0.5", "--lesion-crop-max"]
    args += [
        "0.9",
        "-w",
        "lung",
        "-w",
        "bone:300:1500",
        "--split",
        "train",
        "--root",
        "/data/dl",
        "--strict",
        "-j",
        "2",
    ]
    assert runner.invoke(app, args).exit_code == 0
    assert seen["variant"] == "nano" and seen["progress"] is False and seen["strict"] is True and seen["workers"] == 2
    assert seen["crop_scale"] == (0.5, 1.0) and seen["lesion_scale"] == (0.08, 0.9)
    assert (
        seen["windows"] == ("lung", "bone:300:1500")
        and seen["splits"] == ("train",)
        and seen["root"] == Path("/data/dl")
    )
    config = PretrainConfig(**seen)
    assert config.root == "/data/dl" and config.windows == ("lung", "bone:300:1500")
