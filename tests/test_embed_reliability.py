"""Embedding under faults, in real child processes: SIGKILL and resume (also during the final optimize()), two
writers at once, torchrun on gloo.

The child runs ``clearbench.embed`` with the batch-independent PoolEncoder of embed_doubles, slowed down
per batch so that kills land in the middle of a run; every comparison is exact.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from embed_doubles import NpyCohortReader, PoolEncoder, embed_child, optimize_child, write_npy_cohort

from clearbench.embedding import embed
from clearbench.store import EmbeddingStore

TABLE = "npycohort__pool"

# Children are forked from a server that has already imported torch and lancedb, so that each costs a fork
# rather than three seconds of imports; they are still whole processes that SIGKILL ends mid-write.
_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["torch", "lancedb", "clearbench.embedding", "embed_doubles"])


class Child:
    """``embed_doubles.embed_child`` in its own process, with a pipe for its "start" and its summary."""

    def __init__(self, root: Path, store: Path, delay: float | None = 0.0) -> None:
        """``delay`` seconds per batch; None runs :func:`optimize_child` instead, which announces optimize()."""
        self.conn, theirs = _CTX.Pipe(duplex=False)
        target, args = (optimize_child, ()) if delay is None else (embed_child, (delay,))
        self.process = _CTX.Process(target=target, args=(str(root), str(store), *args, theirs))
        self.process.start()
        theirs.close()

    def receive(self, timeout: float = 300.0):
        assert self.conn.poll(timeout), "the child sent nothing"
        return self.conn.recv()

    def remaining(self) -> list:
        """What the (ended) child sent that was not received yet."""
        sent = []
        while self.conn.poll():
            try:
                sent.append(self.conn.recv())
            except EOFError:  # a closed pipe polls as readable
                break
        return sent


def expected_rows(root: Path) -> dict[str, int]:
    return {p.stem: 2 * int(np.load(p, mmap_mode="r").shape[0]) for p in root.glob("*.npy")}


def table_state(store: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """All keys as stored (duplicates included), and each key's vector."""
    st = EmbeddingStore(store)
    if TABLE not in st.tables():
        return [], {}
    rows = st.db.open_table(TABLE).to_arrow()
    keys = rows["key"].to_pylist()
    vectors = np.stack(rows["vector"].to_numpy(zero_copy_only=False)).astype(np.float32) if keys else np.empty((0, 16))
    return keys, dict(zip(keys, vectors, strict=True))


def assert_whole_scans(keys: list[str], expected: dict[str, int]) -> int:
    """No duplicate keys, and every stored scan has all of its rows; returns the number of stored scans."""
    assert len(keys) == len(set(keys)), "duplicate keys"
    per_scan: dict[str, int] = {}
    for key in keys:
        scan_id = key.split("/")[0]
        per_scan[scan_id] = per_scan.get(scan_id, 0) + 1
    partial = {s: n for s, n in per_scan.items() if n != expected[s]}
    assert not partial, f"partial scans: {partial}"
    return len(per_scan)


@pytest.fixture
def cohort(tmp_path):
    return write_npy_cohort(tmp_path / "cohort", 30, seed=11, slices=(4, 8))


@pytest.fixture
def reference(cohort, tmp_path):
    """The table of one uninterrupted run."""
    embed(
        PoolEncoder(),
        NpyCohortReader(cohort),
        windows="abdomen,lung",
        batch_size=4,
        store=tmp_path / "ref",
        progress=False,
    )
    keys, vectors = table_state(tmp_path / "ref")
    assert len(keys) == sum(expected_rows(cohort).values())
    return vectors


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_table(cohort, reference, tmp_path):
    rng = np.random.default_rng(2024)
    store = tmp_path / "killed"
    expected = expected_rows(cohort)
    stored_after_kill = []
    # Each run is killed after a random number of batches (0 to 15 of the ~90 the cohort needs) plus a random
    # part of the next batch (0.06 s each): during start-up, inside a batch, or while the writer commits.
    kills = [
        (int(k), float(t)) for k, t in zip(rng.integers(0, 16, size=5), rng.uniform(0.0, 0.06, size=5), strict=True)
    ]
    for n_batches, extra in kills:
        proc = Child(cohort, store, delay=0.06)
        assert proc.receive() == "start"
        for _ in range(n_batches):
            assert proc.receive() == "batch"
        time.sleep(extra)
        proc.process.kill()
        proc.process.join()
        assert proc.process.exitcode == -signal.SIGKILL, "the run ended before it was killed"
        keys, vectors = table_state(store)
        stored_after_kill.append(assert_whole_scans(keys, expected))
        for key, vector in vectors.items():
            np.testing.assert_array_equal(vector, reference[key])
    # The kills must have hit a run in progress, not only its start-up, or nothing was tested.
    assert max(stored_after_kill) > 0, stored_after_kill
    assert stored_after_kill[-1] < len(expected), f"every scan was stored before the last kill: {stored_after_kill}"

    final = Child(cohort, store, delay=0.0)
    assert final.receive() == "start"
    while (summary := final.receive()) == "batch":
        pass
    final.process.join()
    assert final.process.exitcode == 0
    assert summary["scans_skipped"] == stored_after_kill[-1]
    assert summary["scans_done"] == len(expected) - stored_after_kill[-1]
    keys, vectors = table_state(store)
    assert sorted(keys) == sorted(reference) and len(keys) == len(set(keys))
    for key, vector in vectors.items():
        np.testing.assert_array_equal(vector, reference[key])


@pytest.mark.slow
def test_sigkill_during_the_final_optimize_leaves_the_whole_table_and_a_rerun_compacts_it(
    cohort, reference, tmp_path, monkeypatch
):
    # A store holding every scan in ten fragments, not compacted yet: what a run has before optimize().
    template = tmp_path / "template"
    with monkeypatch.context() as patched:
        patched.setattr(EmbeddingStore, "optimize", lambda *_a, **_k: None)
        for limit in range(3, 31, 3):
            embed(
                PoolEncoder(),
                NpyCohortReader(cohort),
                windows="abdomen,lung",
                batch_size=4,
                store=template,
                limit=limit,
                progress=False,
            )
    assert EmbeddingStore(template).info(TABLE)["fragments"] >= 10
    # Kills land at spread points of a compaction as long as this one (measured on a copy, not asserted on).
    probe = tmp_path / "probe"
    shutil.copytree(template, probe)
    started = time.perf_counter()
    EmbeddingStore(probe).optimize(TABLE)
    took = time.perf_counter() - started

    landed_inside = 0
    for k, fraction in enumerate((0.0, 0.1, 0.25, 0.5)):
        store = tmp_path / f"killed{k}"
        shutil.copytree(template, store)
        child = Child(cohort, store, delay=None)
        assert [child.receive(), child.receive()] == ["start", "optimizing"]
        time.sleep(fraction * took)
        child.process.kill()
        child.process.join()
        assert child.process.exitcode in (0, -signal.SIGKILL)  # 0: this kill came too late to test anything
        landed_inside += "optimized" not in child.remaining()  # the process died inside optimize()
        keys, vectors = table_state(store)
        assert sorted(keys) == sorted(reference) and len(keys) == len(set(keys))
        for key, vector in vectors.items():
            np.testing.assert_array_equal(vector, reference[key])

        rerun = Child(cohort, store, delay=None)
        messages = [rerun.receive() for _ in range(4)]
        rerun.process.join()
        assert rerun.process.exitcode == 0 and messages[:3] == ["start", "optimizing", "optimized"]
        assert messages[3]["scans_skipped"] == 30 and messages[3]["scans_done"] == 0
        assert EmbeddingStore(store).info(TABLE)["fragments"] == 1
        keys, vectors = table_state(store)
        assert sorted(keys) == sorted(reference) and len(keys) == len(set(keys))
        for key, vector in vectors.items():
            np.testing.assert_array_equal(vector, reference[key])
    assert landed_inside >= 1, "every kill came after optimize() had returned"


@pytest.mark.slow
def test_two_processes_embedding_the_same_table_store_each_row_once(cohort, reference, tmp_path):
    store = tmp_path / "shared"
    procs = [Child(cohort, store, delay=0.01) for _ in range(2)]
    assert [p.receive() for p in procs] == ["start", "start"]
    summaries = []
    for p in procs:
        while (summary := p.receive()) == "batch":
            pass
        summaries.append(summary)
    for p in procs:
        p.process.join()
        assert p.process.exitcode == 0
    keys, vectors = table_state(store)
    assert sorted(keys) == sorted(reference) and len(keys) == len(set(keys))
    for key, vector in vectors.items():
        np.testing.assert_array_equal(vector, reference[key])
    # Rows both runs embedded were inserted once: the inserts add up to the table, not to twice it.
    assert sum(s["rows_written"] for s in summaries) == len(reference)


@pytest.mark.slow
def test_torchrun_two_gloo_processes_give_the_single_process_table(tmp_path):
    from clearbench.scans.synth.deeplesion import write_cohort

    root = write_cohort(tmp_path / "dl", n_scans=4, seed=5, size=32)
    embed("hu-hist", "deeplesion", root=root, store=tmp_path / "one", device="cpu", progress=False)
    common = [
        "embed",
        "--encoder",
        "hu-hist",
        "--dataset",
        "deeplesion",
        "--root",
        str(root),
        "--json",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "clearbench",
            *common,
            "--store",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert two.returncode == 0, two.stderr
    (line,) = [ln for ln in two.stdout.splitlines() if ln.startswith("{")]  # rank 0 alone prints the summary
    summary = json.loads(line)
    assert summary["world_size"] == 2 and summary["scans_done"] == 4 and summary["scans_failed"] == 0

    tables = []
    for name in ("one", "two"):
        table = EmbeddingStore(tmp_path / name).db.open_table("deeplesion__hu-hist").to_arrow().sort_by("key")
        assert len(pc.unique(table["key"])) == table.num_rows
        tables.append(table)
    one, two_ranks = tables
    assert one["key"].to_pylist() == two_ranks["key"].to_pylist()
    assert one.select(["scan_id", "patient_id", "window", "slice_idx", "z_mm"]).equals(
        two_ranks.select(["scan_id", "patient_id", "window", "slice_idx", "z_mm"])
    )
    np.testing.assert_array_equal(
        np.stack(one["vector"].to_numpy(zero_copy_only=False)),
        np.stack(two_ranks["vector"].to_numpy(zero_copy_only=False)),
    )
    # Each rank embedded only its share, so equal tables mean both shares were written; rank 0 optimized.
    info = EmbeddingStore(tmp_path / "two").info("deeplesion__hu-hist")
    assert info["fragments"] == 1 and info["scans"] == 4
