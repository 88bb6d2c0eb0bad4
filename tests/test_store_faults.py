"""Storage faults through the CLI: one line each, naming the store or table and what to do, and a re-run resumes.

A read-only store and a full disk need a mount: a read-only bind mount and a small tmpfs, which root can make
here and in CI. Where mounting is not allowed the test is skipped and says why; as a non-root user a store
whose folder is not writable stands in for the read-only one.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from clearbench.cli import main
from clearbench.embedding import embed
from clearbench.scans.synth.deeplesion import write_cohort
from clearbench.store import EmbeddingStore
from clearbench.store.db import TableNameError, check_table_name
from clearbench.store.embeddings import EmbeddingTable

TABLE = "deeplesion__hu-hist"
BAD_NAMES = ["../../x", "..", "/abs/x", ""]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_cohort(tmp_path_factory.mktemp("dl") / "deeplesion", n_scans=4, seed=3, size=32)


def _embed_argv(cohort: Path, store: Path, *extra: str) -> list[str]:
    return [
        "embed",
        "-e",
        "hu-hist",
        "-d",
        "deeplesion",
        "--root",
        str(cohort),
        "--windows",
        "lung",
        "--store",
        str(store),
        *extra,
    ]


def _exit(capsys, argv: list[str]) -> tuple[int, str]:
    """Run the CLI in this process: its exit code and its stderr."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _one_line(code: int, err: str, expected_code: int = 1) -> str:
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _resume_to_full_table(capsys, cohort: Path, store: Path, stored_before: int) -> None:
    """A re-run on a writable store skips what was committed and finishes the table."""
    code, err = _exit(capsys, _embed_argv(cohort, store))
    assert code == 0, err
    assert f"{4 - stored_before} scan(s) embedded" in err and f"{stored_before} already stored" in err
    assert len(EmbeddingStore(store).scan_ids(TABLE)) == 4
    keys = EmbeddingStore(store).db.open_table(TABLE).to_arrow()["key"].to_pylist()
    assert len(keys) == len(set(keys))


def _mount(*args: str) -> str | None:
    """None when ``mount args`` worked, else why not."""
    try:
        done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit code {done.returncode}")


@contextmanager
def _mounted(target: Path, *args: str) -> Iterator[None]:
    target.mkdir(parents=True, exist_ok=True)
    why = _mount(*args, str(target))
    if why is not None:
        pytest.skip(f"cannot mount here ({why}); the fault needs root with mount rights, as in CI")
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], capture_output=True, timeout=30, check=False)


@contextmanager
def _read_only_view(store: Path, view: Path) -> Iterator[str]:
    """``store`` seen through a path the command cannot write: a read-only bind mount, or chmod when not root."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [store, *store.rglob("*")] if p.is_dir()}
        for p in modes:
            p.chmod(0o555)
        view.symlink_to(store)
        try:
            yield "permission denied"
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    with _mounted(view, "--bind", str(store)):
        why = _mount("-o", "remount,ro,bind", str(view))
        if why is not None:
            pytest.skip(f"cannot remount a bind mount read-only here ({why})")
        yield "the file system is read-only"


def test_read_only_store_is_one_line_and_a_writable_rerun_resumes(cohort, tmp_path, capsys):
    store = tmp_path / "store"
    assert _exit(capsys, _embed_argv(cohort, store, "--limit", "2"))[0] == 0
    with _read_only_view(store, tmp_path / "ro") as reason:
        line = _one_line(*_exit(capsys, _embed_argv(cohort, tmp_path / "ro")))
        assert f"table '{TABLE}' in the store {tmp_path / 'ro'}" in line and reason in line
        assert "--store" in line and "resumes" in line
        # Reading a read-only store still works, and a store that would have to be created there is refused.
        assert _exit(capsys, ["store", "ls", "--store", str(tmp_path / "ro"), "--json"])[0] == 0
        line = _one_line(*_exit(capsys, _embed_argv(cohort, tmp_path / "ro" / "new")))
        assert f"the store {tmp_path / 'ro' / 'new'}" in line and reason in line
    _resume_to_full_table(capsys, cohort, store, stored_before=2)


def test_full_disk_is_one_line_and_a_rerun_after_freeing_space_resumes(cohort, tmp_path, capsys):
    disk = tmp_path / "disk"
    with _mounted(disk, "-t", "tmpfs", "-o", "size=8m", "tmpfs"):
        store = disk / "store"
        assert _exit(capsys, _embed_argv(cohort, store, "--limit", "2"))[0] == 0
        filler = disk / "filler"
        with filler.open("wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * (1 << 16))
                    fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        line = _one_line(*_exit(capsys, _embed_argv(cohort, store)))
        assert f"table '{TABLE}' in the store {store}" in line and "no space left" in line and "free space" in line
        assert len(EmbeddingStore(store).scan_ids(TABLE)) == 2  # what was committed is still there, whole
        filler.unlink()
        _resume_to_full_table(capsys, cohort, store, stored_before=2)


def test_a_table_deleted_during_a_run_is_one_line_and_a_rerun_makes_it_whole(cohort, tmp_path, capsys, monkeypatch):
    store = tmp_path / "store"
    assert _exit(capsys, _embed_argv(cohort, store, "--limit", "2"))[0] == 0
    real_write = EmbeddingTable.write

    def delete_then_write(self, scans):
        EmbeddingStore(store).rm(self.name)  # another shell runs: clearbench store rm TABLE
        return real_write(self, scans)

    monkeypatch.setattr(EmbeddingTable, "write", delete_then_write)
    line = _one_line(*_exit(capsys, _embed_argv(cohort, store)))
    assert f"table '{TABLE}' in the store {store} was deleted while" in line and "run the command again" in line
    monkeypatch.undo()
    _resume_to_full_table(capsys, cohort, store, stored_before=0)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_table_names_are_usage_errors_with_the_allowed_form(name, cohort, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "deep" / "er" / "store"
    for argv in (
        _embed_argv(cohort, store, "--table", name),
        ["store", "info", name, "--store", str(store)],
        ["store", "rm", name, "--store", str(store)],
    ):
        line = _one_line(*_exit(capsys, argv), expected_code=2)
        assert f"invalid table name {name!r}" in line and "letters, digits, '_', '-' or '.'" in line
    with pytest.raises(TableNameError, match="letters, digits"):
        embed("hu-hist", "deeplesion", root=cohort, windows="lung", store=store, table=name, progress=False)
    with pytest.raises(TableNameError):
        EmbeddingStore(store).bags(table=name)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.suffix == ".lance") == []  # nothing made anywhere
    assert not (tmp_path / "deep" / "x").exists() and not Path("/abs/x").exists()
    # The same command with a valid name makes the whole table.
    assert _exit(capsys, _embed_argv(cohort, store, "--table", "ok.name-1"))[0] == 0
    assert len(EmbeddingStore(store).scan_ids("ok.name-1")) == 4


def test_table_name_rule():
    for good in ("deeplesion__hu-hist", "a", "_x.v2", "A-1.b", "x" * 128):
        assert check_table_name(good) == good
    for bad in (*BAD_NAMES, ".", ".hidden", "-opt", "a/b", "a b", "x" * 129, "t\n"):
        with pytest.raises(TableNameError):
            check_table_name(bad)


def test_exit_code_3_after_a_skipped_scan_and_0_after_a_clean_run(tmp_path, capsys):
    root = write_cohort(tmp_path / "dl", n_scans=3, seed=8, size=32)
    store = tmp_path / "store"
    assert _exit(capsys, _embed_argv(root, store, "--table", "clean"))[0] == 0
    bad = sorted((root / "Images_png").iterdir())[1]
    for png in bad.glob("*.png"):
        png.write_bytes(png.read_bytes()[:40])
    code, err = _exit(capsys, _embed_argv(root, store, "--table", "gaps"))
    assert code == 3, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("done, but 1 input error(s) were skipped over (exit code 3") and bad.name in last
    assert "1 failed" in err
    # scans reports the same input as skipped, with the same exit code; --strict stops at it with 1.
    assert _exit(capsys, ["scans", "-d", "deeplesion", "--root", str(root)])[0] == 3
    assert _exit(capsys, _embed_argv(root, store, "--table", "strict", "--strict"))[0] == 1


def test_help_documents_the_exit_codes(capsys):
    main(["--help"])
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert (
        "0 everything done; 1 an error stopped the command; 2 a usage error; 3 done, but some inputs were skipped"
        in out
    )


@pytest.mark.slow
def test_run_on_a_read_only_store_is_one_line_and_a_writable_rerun_completes(tmp_path, capsys):
    from clearbench.scans.synth.nsclc import write_cohort as write_nsclc

    root = write_nsclc(tmp_path / "nsclc", 16, 0, size=24)
    store = tmp_path / "store"
    embed("hu-hist", "nsclc", root=root, store=store, progress=False)
    run_argv = [
        "run",
        "task3",
        "--min-test-patients",
        "2",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--root",
        str(root),
        "--json",
    ]
    with _read_only_view(store, tmp_path / "ro") as reason:
        code, err = _exit(capsys, [*run_argv, "--store", str(tmp_path / "ro")])
        errors = [line for line in err.strip().splitlines() if not line.startswith("warning:")]  # a stage-NA patient
        line = _one_line(code, "\n".join(errors))
        assert f"in the store {tmp_path / 'ro'}" in line and reason in line and "Traceback" not in err
    code, err = _exit(capsys, [*run_argv, "--store", str(store)])
    assert code == 0, err
    assert len(EmbeddingStore(store).db.open_table("run_folds").to_arrow()) == 5


def test_lancedb_errors_are_recognised_as_this_release_raises_them(tmp_path: Path) -> None:
    """The real exceptions of the installed LanceDB: if a release renames or retypes one, this fails first."""
    import shutil

    import pyarrow as pa

    from clearbench.store.db import classify, connect

    db = connect(tmp_path / "store")
    faults = {}
    try:
        db.open_table("absent")
    except Exception as exc:  # noqa: BLE001 - the point is which exception LanceDB raises
        faults["open absent"] = classify(exc)
    table = db.create_table("t", schema=pa.schema([("x", pa.int64())]))
    table.add(pa.table({"x": [1]}))
    table.add_columns({"y": "x * 2"})
    try:
        db.create_table("t", schema=pa.schema([("x", pa.int64())]), exist_ok=True)
    except Exception as exc:  # noqa: BLE001 - as above
        faults["other schema"] = classify(exc)
    shutil.rmtree(tmp_path / "store" / "t.lance")
    try:
        table.count_rows()
    except Exception as exc:  # noqa: BLE001 - as above
        faults["folder gone"] = classify(exc)
    assert faults == {"open absent": "not-found", "other schema": "schema-mismatch", "folder gone": "table-gone"}


def test_faults_are_told_by_type_first_and_by_text_only_within_a_type() -> None:
    from clearbench.store.db import classify

    assert classify(OSError(errno.ENOSPC, "No space left on device")) == "no-space"
    assert classify(PermissionError(errno.EACCES, "Permission denied")) == "no-permission"
    assert classify(RuntimeError("lance error: LanceError(IO): Read-only file system (os error 30), x.rs:1")) == (
        "read-only"
    )
    assert classify(RuntimeError("lance error: Not found: s/t.lance/_versions, x.rs:1")) == "table-gone"
    assert classify(RuntimeError("Retryable commit conflict for version 3")) == "conflict"
    # The same words in another kind of error are not that condition.
    assert classify(ValueError("Not found: s/t.lance/_versions")) is None
    assert classify(RuntimeError("Table 't' was not found")) is None
    assert classify(KeyError("does not match")) is None
