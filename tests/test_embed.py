"""The embedding pipeline in one process, with a tiny cohort format and deterministic encoders (embed_doubles)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from embed_doubles import MeanVolumeEncoder, NpyCohortReader, PoolEncoder, reference_vectors, write_npy_cohort

from clearbench.embedding import embed
from clearbench.embedding.batches import window_into
from clearbench.errors import ClearbenchError, InputError
from clearbench.scans.windows import WINDOWS, apply_window
from clearbench.store import DimensionMismatchError, EmbeddingStore, ProvenanceMismatchError


@pytest.fixture
def cohort(tmp_path):
    return write_npy_cohort(tmp_path / "cohort", 9, seed=3)


def run(cohort, encoder=None, **kw):
    kw.setdefault("windows", "abdomen,lung")
    kw.setdefault("progress", False)
    kw.setdefault("commit_seconds", 0.0)
    return embed(encoder or PoolEncoder(), NpyCohortReader(cohort), **kw)


def stored(table: str = "npycohort__pool"):
    return EmbeddingStore().bags(table=table)


def test_windowing_on_the_device_matches_apply_window():
    hu = np.random.default_rng(0).integers(-3000, 3000, size=(4, 16, 16)).astype(np.int16)
    for window in WINDOWS.values():
        out = torch.empty(hu.shape, dtype=torch.float32)
        np.testing.assert_array_equal(window_into(out, torch.from_numpy(hu), window).numpy(), apply_window(hu, window))


@pytest.mark.parametrize("batch_size", [1, 5, 1000])
def test_vectors_equal_the_encoder_on_each_window(cohort, batch_size):
    summary = run(cohort, batch_size=batch_size, workers=2)
    ref = reference_vectors(NpyCohortReader(cohort), PoolEncoder(), ["abdomen", "lung"])
    bags = stored()
    assert bags.scan_ids == sorted(ref) and bags.window_names == ("abdomen", "lung")
    for scan_id, vectors in ref.items():
        np.testing.assert_array_equal(bags.bag(scan_id), vectors)
    n_rows = sum(len(v) for v in ref.values())
    assert (summary.scans_done, summary.scans_skipped, summary.scans_failed) == (9, 0, 0)
    assert summary.rows_written == summary.slices_embedded == n_rows
    # z_mm comes from the scan (2 mm apart from 10 mm in this cohort), per window.
    rows = bags.rows(bags.scan_ids[0])
    n = (rows.stop - rows.start) // 2
    np.testing.assert_array_equal(bags.z_mm[rows], np.tile(10.0 + 2.0 * np.arange(n), 2))
    assert EmbeddingStore().info(summary.table)["fragments"] == 1  # optimized at the end


def test_restart_skips_stored_scans_and_adds_only_new_windows(cohort):
    first = run(cohort, windows="lung", limit=4)
    assert (first.scans_total, first.scans_done) == (4, 4)
    again = run(cohort, windows="lung", limit=4)
    assert (again.scans_done, again.scans_skipped, again.rows_written) == (0, 4, 0)
    before = stored()
    more = run(cohort, windows="lung,abdomen")
    assert (more.scans_done, more.scans_skipped) == (9, 0)
    after = stored()
    ref = reference_vectors(NpyCohortReader(cohort), PoolEncoder(), ["abdomen", "lung"])
    for scan_id in after.scan_ids:
        np.testing.assert_array_equal(after.bag(scan_id), ref[scan_id])
    lung_rows = {s: before.bag(s) for s in before.scan_ids}
    lung = EmbeddingStore().bags(table="npycohort__pool", windows=["lung"])
    for scan_id, vectors in lung_rows.items():
        np.testing.assert_array_equal(lung.bag(scan_id), vectors)
    assert sorted(EmbeddingStore().info("npycohort__pool")["windows"]) == ["abdomen", "lung"]


def test_a_corrupt_scan_is_skipped_with_one_line_and_the_rest_embedded(cohort):
    bad = cohort / "p001_s002.npy"
    bad.write_bytes(bad.read_bytes()[:100])
    summary = run(cohort)
    assert (summary.scans_done, summary.scans_failed) == (8, 1)
    (problem,) = summary.problems
    assert problem.path == str(bad) and problem.scan_id == "p001_s002"
    assert "\n" not in str(problem) and str(problem).startswith(str(bad) + ": ")
    assert "p001_s002" not in stored().scan_ids and len(stored()) == 8


def test_strict_stops_at_the_corrupt_scan_keeping_what_was_finished(cohort):
    bad = cohort / "p002_s004.npy"
    bad.write_bytes(b"not a volume")
    with pytest.raises(InputError, match=re.escape("p002_s004.npy")):
        run(cohort, strict=True, workers=1)
    done = EmbeddingStore().scan_ids("npycohort__pool")
    assert "p002_s004" not in done and set(done) <= {"p000_s000", "p000_s001", "p001_s002", "p001_s003"}


def test_non_finite_embeddings_fail_their_scan_and_are_never_stored(cohort):
    bright = cohort / "p003_s006.npy"
    np.save(bright, np.full((4, 24, 24), 2000, dtype=np.int16))  # windowed to 1.0 everywhere -> NaN from the encoder
    summary = run(cohort, encoder=PoolEncoder(nan_above=0.99))
    assert (summary.scans_done, summary.scans_failed) == (8, 1)
    (problem,) = summary.problems
    assert problem.scan_id == "p003_s006" and "scan p003_s006" in problem.reason and "NaN" in problem.reason
    bags = stored()
    assert "p003_s006" not in bags.scan_ids and np.isfinite(bags.vectors).all()


def test_values_beyond_float16_are_refused_not_stored_as_inf(cohort):
    summary = run(cohort, encoder=PoolEncoder(scale=1e6))
    assert (summary.scans_done, summary.scans_failed) == (0, 9)
    assert all("beyond float16" in p.reason for p in summary.problems)
    assert EmbeddingStore().info("npycohort__pool")["rows"] == 0


def test_an_encoder_of_another_dim_is_refused(cohort):
    run(cohort, limit=2)
    with pytest.raises(DimensionMismatchError, match=r"holds 16-d .* gives 9-d"):
        run(cohort, encoder=PoolEncoder(grid=3))


def test_provenance_mismatch_then_the_two_fixes(cohort):
    run(cohort, limit=2)
    other = PoolEncoder(provenance={"weights_sha256": "a" * 64})
    with pytest.raises(ProvenanceMismatchError, match=r"--table NAME.*--overwrite"):
        run(cohort, encoder=other, limit=2)
    assert run(cohort, encoder=other, limit=2, table="pool_v2").scans_done == 2
    assert run(cohort, encoder=other, limit=3, overwrite=True).scans_done == 3
    assert EmbeddingStore().provenance("npycohort__pool")["weights_sha256"] == "a" * 64


def test_volume_encoder_writes_one_row_per_scan(cohort):
    summary = run(cohort, encoder=MeanVolumeEncoder(), windows=None)
    assert summary.windows == ["volume"] and summary.rows_written == 9
    bags = stored("npycohort__meanvol")
    assert list(bags.sizes()) == [1] * 9 and bags.window_names == ("volume",)
    assert (bags.slice_idx == -1).all()
    reader = NpyCohortReader(cohort)
    scan = reader.load(reader.records()[0])
    np.testing.assert_allclose(bags.bag(scan.scan_id)[0], MeanVolumeEncoder().encode(scan)[0].numpy(), rtol=1e-3)
    assert bags.z_mm[0] == pytest.approx(float(np.mean(scan.z_mm)))
    with pytest.raises(ClearbenchError, match="drop --windows"):
        run(cohort, encoder=MeanVolumeEncoder(), windows="lung")


def test_windows_default_per_dataset_or_must_be_given(cohort):
    with pytest.raises(ClearbenchError, match="no default windows; choose them with --windows"):
        run(cohort, windows=None)
    with pytest.raises(ClearbenchError, match="unknown window 'liver'"):
        run(cohort, windows="liver")
    summary = run(cohort, windows="soft:-100:200", limit=1)
    assert summary.windows == ["soft"] and EmbeddingStore().provenance(summary.table)["windows"]["soft"] == [
        -100.0,
        200.0,
    ]


def test_scans_of_different_sizes_share_a_run(tmp_path):
    root = write_npy_cohort(tmp_path / "a", 3, seed=1, size=16)
    write_npy_cohort(tmp_path / "b", 3, seed=2, size=20)
    for path in (tmp_path / "b").glob("*.npy"):
        path.rename(root / path.name.replace("_s", "_t"))
    summary = run(root, batch_size=64)
    assert summary.scans_done == 6
    ref = reference_vectors(NpyCohortReader(root), PoolEncoder(), ["abdomen", "lung"])
    bags = stored()
    for scan_id, vectors in ref.items():
        np.testing.assert_array_equal(bags.bag(scan_id), vectors)


def test_an_empty_dataset_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClearbenchError, match="no npycohort scans found under"):
        run(tmp_path / "empty")
    assert EmbeddingStore().tables() == []
