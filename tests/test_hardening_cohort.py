"""A table belongs to one cohort: a second cohort is refused, a changed scan is re-embedded and reported,
a moved cohort and a table made before source signatures still work."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from clearbench.cli import main
from clearbench.scans.synth.deeplesion import write_cohort
from clearbench.store import EmbeddingStore
from clearbench.store.schema import SOURCE_SIG, is_embedding_schema

TABLE = "deeplesion__hu-hist"
pytestmark = pytest.mark.slow  # each test embeds synthetic cohorts through the CLI


def embed(capsys, root: Path, *extra: str) -> tuple[dict, str]:
    main(["embed", "-e", "hu-hist", "-d", "deeplesion", "--root", str(root), "--windows", "lung", "--json", *extra])
    out, err = capsys.readouterr()
    return json.loads(out.splitlines()[-1]), err


def refused(capsys, root: Path, *extra: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(["embed", "-e", "hu-hist", "-d", "deeplesion", "--root", str(root), "--windows", "lung", *extra])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def vectors(table: str = TABLE) -> dict[str, np.ndarray]:
    bags = EmbeddingStore().bags(table=table)
    return {scan_id: bags.bag(scan_id) for scan_id in bags.scan_ids}


@pytest.fixture
def two_cohorts(tmp_path: Path) -> tuple[Path, Path]:
    """Two synthetic DeepLesion cohorts whose scan ids collide but whose scans differ."""
    return (
        write_cohort(tmp_path / "a" / "deeplesion", n_scans=3, seed=7, size=32),
        write_cohort(tmp_path / "b" / "deeplesion", n_scans=3, seed=8, size=32),
    )


def test_a_second_cohort_is_refused_with_the_fix(two_cohorts, capsys) -> None:
    a, b = two_cohorts
    first, _ = embed(capsys, a)
    assert first["scans_done"] == 3
    before = vectors()
    err = refused(capsys, b)
    assert f"table '{TABLE}' holds another cohort" in err and str(a.resolve()) in err and str(b.resolve()) in err
    assert "--table NAME" in err and "--overwrite" in err
    assert set(before) == set(vectors()) and all(np.array_equal(before[k], vectors()[k]) for k in before)
    other, _ = embed(capsys, b, "--table", "cohort_b")
    assert other["scans_done"] == 3 and other["scans_skipped"] == 0
    assert any(not np.array_equal(before[k], vectors("cohort_b")[k]) for k in before)
    replaced, _ = embed(capsys, b, "--overwrite")
    assert replaced["scans_done"] == 3
    assert EmbeddingStore().provenance(TABLE)["dataset_root"] == str(b.resolve())


def test_a_changed_source_file_is_reported_and_embedded_again(tmp_path, capsys) -> None:
    root = write_cohort(tmp_path / "deeplesion", n_scans=3, seed=7, size=32)
    embed(capsys, root)
    before = vectors()
    folder = sorted((root / "Images_png").iterdir())[1]
    png = sorted(folder.glob("*.png"))[0]
    donor = sorted(sorted((root / "Images_png").iterdir())[0].glob("*.png"))[-1]
    shutil.copyfile(donor, png)
    os.utime(png, ns=(png.stat().st_atime_ns, png.stat().st_mtime_ns + 10**9))

    summary, err = embed(capsys, root)
    assert (summary["scans_done"], summary["scans_skipped"], summary["scans_changed"]) == (1, 2, 1)
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(folder) in warnings[0] and "changed since" in warnings[0]
    after = vectors()
    assert set(after) == set(before)
    assert not np.array_equal(after[folder.name], before[folder.name])
    assert all(np.array_equal(after[k], before[k]) for k in before if k != folder.name)

    again, err = embed(capsys, root)
    assert (again["scans_done"], again["scans_skipped"], again["scans_changed"]) == (0, 3, 0) and "warning" not in err


def test_a_moved_cohort_is_the_same_cohort(tmp_path, capsys) -> None:
    root = write_cohort(tmp_path / "old" / "deeplesion", n_scans=3, seed=7, size=32)
    embed(capsys, root, "--limit", "2")
    moved = tmp_path / "new"
    shutil.move(tmp_path / "old", moved)
    summary, _ = embed(capsys, moved / "deeplesion")
    assert (summary["scans_done"], summary["scans_skipped"], summary["scans_changed"]) == (1, 2, 0)


def test_store_info_names_the_cohort(tmp_path, capsys) -> None:
    root = write_cohort(tmp_path / "deeplesion", n_scans=2, seed=7, size=32)
    embed(capsys, root)
    main(["store", "info", TABLE, "--json"])
    cohort = json.loads(capsys.readouterr().out)["cohort"]
    assert cohort["root"] == str(root.resolve()) and len(cohort["signature"]) == 16


def _legacy_copy(name: str) -> None:
    """The table as clearbench wrote it before source signatures: no source_sig column."""
    store = EmbeddingStore()
    table = store.db.open_table(TABLE)
    schema = table.schema.remove(table.schema.get_field_index(SOURCE_SIG))
    store.db.create_table(name, table.to_arrow().drop_columns([SOURCE_SIG]).cast(schema))
    assert is_embedding_schema(store.db.open_table(name).schema)


def test_a_table_made_before_source_signatures_is_read_and_appended_to(two_cohorts, capsys) -> None:
    a, b = two_cohorts
    embed(capsys, a, "--limit", "2")
    _legacy_copy("legacy")
    summary, _ = embed(capsys, a, "--table", "legacy")
    assert (summary["scans_done"], summary["scans_skipped"], summary["scans_changed"]) == (1, 2, 0)
    assert len(vectors("legacy")) == 3
    err = refused(capsys, b, "--table", "legacy")
    assert "holds another cohort" in err and "made before clearbench recorded" in err
