"""``clearbench synth`` end to end, and a third-party dataset reader found through its entry point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clearbench.cli import app
from clearbench.errors import ClearbenchError
from clearbench.scans.registry import dataset_targets, open_dataset

runner = CliRunner()


@pytest.mark.parametrize(("dataset", "n"), [("deeplesion", 3), ("radchest", 2), ("nsclc", 2)])
def test_synth_writes_a_cohort_its_reader_opens(tmp_path: Path, dataset: str, n: int) -> None:
    out = tmp_path / dataset
    result = runner.invoke(app, ["synth", dataset, "--out", str(out), "--scans", str(n), "--seed", "3", "--size", "48"])
    assert result.exit_code == 0, result.output
    assert f"--root {out}" in result.output.replace("\n", "")
    reader = open_dataset(dataset, out)
    records = reader.records()
    assert len(records) == n
    scan = reader.load(records[0])
    assert scan.hu.shape[1:] == (48, 48)
    assert not reader.problems.errors


@pytest.mark.parametrize(
    ("dataset", "name"), [("deeplesion", "DeepLesion"), ("radchest", "RAD-ChestCT"), ("nsclc", "NSCLC-Radiomics")]
)
def test_synth_refuses_a_folder_that_holds_a_cohort(tmp_path: Path, dataset: str, name: str) -> None:
    args = ["synth", dataset, "--out", str(tmp_path / dataset), "--scans", "1", "--size", "32"]
    assert runner.invoke(app, args).exit_code == 0
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    # Another seed, so that a writer that went ahead would add files (a second NSCLC manifest folder).
    again = runner.invoke(app, [*args, "--seed", "1"])
    assert again.exit_code != 0 and isinstance(again.exception, ClearbenchError)
    assert f"already holds a {name} cohort" in str(again.exception)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_synth_rejects_an_unknown_dataset(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", "mimic", "--out", str(tmp_path)])
    assert result.exit_code == 2


def test_a_plugin_reader_is_found_through_the_entry_point(tmp_path: Path) -> None:
    assert dataset_targets()["example-npy"] == "clearbench_example_plugin.datasets:ExampleNpyReader"
    np.save(tmp_path / "s1.npy", np.full((3, 8, 8), -1000, dtype=np.int16))
    np.save(tmp_path / "s2.npy", np.zeros((2, 8, 8), dtype=np.int16))
    (tmp_path / "labels.csv").write_text("scan_id,patient_id,finding\ns1,p1,1\ns2,p1,0\n")
    reader = open_dataset("example-npy", tmp_path)
    assert type(reader).__name__ == "ExampleNpyReader"
    records = reader.records()
    assert [(r.scan_id, r.patient_id, r.labels["finding"]) for r in records] == [("s1", "p1", 1.0), ("s2", "p1", 0.0)]
    assert [s.n_slices for s in reader.scans()] == [3, 2]
