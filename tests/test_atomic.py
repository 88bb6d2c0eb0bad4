"""One atomic write (clearbench.atomic): a per-process temporary file beside the target, fsynced, renamed."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from clearbench import atomic
from clearbench.atomic import open_atomic, write_atomic

PACKAGE = Path(__file__).resolve().parents[1] / "clearbench"


def test_writes_text_and_bytes_and_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    write_atomic(target, "é{}")
    assert target.read_bytes() == "é{}".encode()
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_the_temporary_file_is_this_processs_and_beside_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moves: list[tuple[Path, Path]] = []
    synced: list[int] = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(
        atomic.os, "replace", lambda src, dst: (moves.append((Path(src), Path(dst))), real_replace(src, dst))
    )
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    target = tmp_path / "card.toml"
    write_atomic(target, "x = 1\n")
    [(src, dst)] = moves
    assert dst == target and src.parent == target.parent and str(os.getpid()) in src.name and src != target
    assert len(synced) == 1


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="killed"), open_atomic(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_no_other_module_renames_files_over_others() -> None:
    """A second copy of the pattern would drift again: ``os.replace``/``os.rename`` live in atomic.py only."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "atomic.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
                and node.attr in ("replace", "rename")
            ):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".tmp"):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} names a .tmp file")
    assert found == []
