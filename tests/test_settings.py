"""Strict settings: a typo in config.toml, an encoder card or a task card is one line naming the file, the key
path and what was expected, from the Python API and from the real CLI (exit code 1, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from clearbench.config import config_path, dataset_roots
from clearbench.errors import InputError
from clearbench.settings import describe_validation_error, validate_settings


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clearbench", *args], capture_output=True, text=True, check=False)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    message = result.stderr.strip()
    assert "Traceback" not in message and "\n" not in message, message
    return message


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
    message = _one_line_error(_cli("scans", "--dataset", "deeplesion"))
    assert str(path) in message and "field 'datasets.deeplesion.roots': unknown key; allowed keys are root" in message
