"""A strict-load error names keys as they are in the user's file, and the model's name where the family renamed
them, so the user can find them (through ``clearbench embed``, which loads the encoder first)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clearbench.cli import main
from clearbench.config import user_card_dir


def _card_for(checkpoint: Path) -> str:
    folder = user_card_dir("encoders")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine.toml").write_text(f'name = "mine"\nfamily = "example-tinyconv"\n[weights]\npath = "{checkpoint}"\n')
    return "mine"


def _load_error(capsys, state: dict[str, torch.Tensor], tmp_path: Path) -> str:
    checkpoint = tmp_path / "mine.pt"
    torch.save({"state_dict": state}, checkpoint)
    with pytest.raises(SystemExit) as exc:
        main(["embed", "-e", _card_for(checkpoint), "-d", "nifti", "--root", str(tmp_path), "--windows", "lung"])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(checkpoint) in err, err
    return err


def test_unexpected_and_misshapen_keys_are_named_as_in_the_file(tmp_path, capsys) -> None:
    err = _load_error(
        capsys,
        {
            "module.conv.weight": torch.zeros(16, 3, 7, 7),
            "module.conv.bias": torch.zeros(8),
            "module.extra.weight": torch.zeros(2),
        },
        tmp_path,
    )
    assert "1 unexpected key(s): module.extra.weight (the model's extra.weight)" in err
    assert "1 wrong shape key(s): module.conv.bias (the model's conv.bias) (8,) vs model (16,)" in err


def test_a_missing_key_is_named_as_the_file_would_have_it(tmp_path, capsys) -> None:
    err = _load_error(capsys, {"module.conv.weight": torch.zeros(16, 3, 7, 7)}, tmp_path)
    assert "1 missing key(s): module.conv.bias (the model's conv.bias)" in err


def test_keys_the_family_did_not_rename_are_named_once(tmp_path, capsys) -> None:
    err = _load_error(capsys, {"conv.weight": torch.zeros(16, 3, 7, 7), "other.bias": torch.zeros(3)}, tmp_path)
    assert "1 missing key(s): conv.bias;" in err and "1 unexpected key(s): other.bias (is this" in err
    assert "the model's" not in err and "card's [params] match" in err
