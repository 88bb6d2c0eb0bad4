"""Every message is printed whole: text in square brackets from data, files, cards, exceptions or the user
is never read as rich markup (it used to be eaten, or to crash a command with a MarkupError)."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import nibabel as nib
import numpy as np
import pytest
import typer
from rich.text import Text

from clearbench.cli import app, main
from clearbench.errors import ClearbenchError, MissingExtraError

HOSTILE = [
    "a [ lone bracket and a ] lone one",
    "closing tag [/b] with no opening",
    "an opening [bold] tag",
    "pip install 'clearbench[sam2]'",
    "a volume is [slices, rows, cols]",
    "scan [v2].nii.gz",
]
CLI_DIR = Path(__file__).resolve().parents[1] / "clearbench" / "cli"


def _fail_with(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    def open_dataset(*args: object, **kwargs: object) -> None:
        raise exc

    monkeypatch.setattr("clearbench.scans.registry.open_dataset", open_dataset)


@pytest.mark.parametrize("message", HOSTILE)
def test_error_messages_print_whole(message: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _fail_with(monkeypatch, ClearbenchError(message))
    with pytest.raises(SystemExit) as exit_info:
        main(["scans", "--dataset", "nifti"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {message}"


def test_missing_extra_names_the_whole_install_command(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _fail_with(monkeypatch, MissingExtraError("sam2", "the sam2 family"))
    with pytest.raises(SystemExit):
        main(["scans", "--dataset", "nifti"])
    assert "pip install 'clearbench[sam2]'" in capsys.readouterr().err


def _nifti(path: Path, value: int = 0) -> None:
    nib.save(nib.Nifti1Image(np.full((8, 8, 3), value, np.int16), np.diag([0.7, 0.7, 2.5, 1.0])), str(path))


@pytest.fixture
def hostile_cohort(tmp_path: Path) -> Path:
    """A NIfTI cohort whose names and label cells are full of markup: one good scan, one corrupt file."""
    root = tmp_path / "cohort [x]"
    root.mkdir()
    _nifti(root / "scan [v2].nii.gz")
    (root / "bad [i].nii.gz").write_bytes(b"not a nifti file")
    (root / "labels.csv").write_text("scan_id,patient_id,[bold]\nscan [v2],P[1],[/b]\nbad [i],P2,1\n")
    return root


def test_scans_prints_hostile_names_and_cells_whole(hostile_cohort: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:  # exit code 3: the corrupt file is skipped over
        main(["scans", "--dataset", "nifti", "--root", str(hostile_cohort)])
    assert exited.value.code == 3
    out, err = capsys.readouterr()
    assert "scan [v2]" in out and "P[1]" in out and "[bold]=?" in out
    assert f"{hostile_cohort / 'bad [i].nii.gz'}: not a readable NIfTI file" in err
    assert "label '[bold]' of scan 'scan [v2]' is '[/b]', not a number" in err
    assert "[x]" in out  # the table title (wrapped to the table) names the root whole


@pytest.mark.slow
def test_embed_survives_a_markup_label_cell(hostile_cohort: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["embed", "-e", "hu-hist", "-d", "nifti", "--root", str(hostile_cohort), "--windows", "lung"])
    assert exited.value.code == 3
    err = capsys.readouterr().err
    assert "is '[/b]', not a number" in err
    assert "bad [i].nii.gz: not a readable NIfTI file" in err
    assert "nifti__hu-hist: 1 scan(s) embedded" in err and "1 failed, of 2" in err


def _help_texts(command: click.Command, path: str = "clearbench") -> list[tuple[str, str]]:
    texts = [(path, command.help or "")]
    texts += [(f"{path} {p.name}", getattr(p, "help", None) or "") for p in command.params]
    for name, sub in getattr(command, "commands", {}).items():
        texts += _help_texts(sub, f"{path} {name}")
    return texts


def test_help_texts_render_whole() -> None:
    """typer renders help as rich markup: a help text with brackets must escape them, or they vanish."""
    for where, text in _help_texts(typer.main.get_command(app)):
        assert Text.from_markup(text).plain == text.replace("\\[", "["), (
            f"{where}: help text loses markup-like brackets"
        )


def test_no_cli_print_takes_an_unescaped_f_string() -> None:
    """Every interpolated console message goes through common.say/markup, which escape the values."""
    offenders = []
    for path in sorted(CLI_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "print"
                and node.args
                and isinstance(node.args[0], ast.JoinedStr)
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"console.print with an f-string (use say/markup from clearbench.cli.common): {offenders}"
