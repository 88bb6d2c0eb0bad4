"""The embedding store on its own: schema, checked writes, provenance, bags, info, optimize and rm."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from clearbench.errors import ClearbenchError
from clearbench.scans.windows import WINDOWS, Window
from clearbench.store import (
    DimensionMismatchError,
    EmbeddingStore,
    NonFiniteEmbeddingError,
    ProvenanceMismatchError,
    ScanEmbeddings,
    TableNotFoundError,
    connect,
)

DIM = 6
PROV = {
    "encoder": "enc",
    "family": "fam",
    "kind": "slice",
    "dim": DIM,
    "preprocessing_hash": "abc",
    "weights": "/weights/a.pt",
    "weights_sha256": "f" * 64,
    "clearbench_version": "0.1.0",
    "dataset": "ds",
    "dataset_root": "/data/ds",
    "card": {"family": "fam", "params": {}, "description": "x"},
}
BOTH = [WINDOWS["abdomen"], WINDOWS["lung"]]


def make_scan(
    scan_id: str, n_slices: int, rng: np.random.Generator, windows=("abdomen", "lung"), dim: int = DIM
) -> ScanEmbeddings:
    w = np.repeat(np.array(windows, dtype=object), n_slices)
    s = np.tile(np.arange(n_slices, dtype=np.int32), len(windows))
    return ScanEmbeddings(
        scan_id, "pat-" + scan_id[:2], w, s, s * 1.5 + 3.0, rng.normal(size=(len(w), dim)).astype(np.float32)
    )


@pytest.fixture
def store(tmp_path):
    return EmbeddingStore(tmp_path / "store")


def test_schema_key_vector_and_provenance(store):
    table = store.open_for_writing("ds__enc", DIM, PROV, BOTH)
    schema = table.table.schema
    assert not schema.field("key").nullable
    assert schema.field("key").metadata == {b"lance-schema:unenforced-primary-key:position": b"1"}
    assert schema.field("vector").type == pa.list_(pa.float16(), DIM)
    rng = np.random.default_rng(0)
    table.write([make_scan("s1", 3, rng)])
    keys = sorted(table.table.to_arrow()["key"].to_pylist())
    assert keys == sorted(f"s1/{w}/{i}" for w in ("abdomen", "lung") for i in range(3))
    prov = store.provenance("ds__enc")
    assert prov["weights_sha256"] == "f" * 64 and prov["preprocessing_hash"] == "abc"
    assert prov["clearbench_version"] == "0.1.0" and prov["dataset_root"] == "/data/ds"
    assert prov["windows"] == {"abdomen": [-175.0, 275.0], "lung": [-1500.0, 500.0]}


def test_bags_round_trip_values_order_offsets(store):
    rng = np.random.default_rng(1)
    scans = [make_scan(f"s{i:02d}", int(rng.integers(1, 6)), rng) for i in range(12)]
    table = store.open_for_writing("t", DIM, PROV, BOTH)
    # Written out of order, in groups, with each scan's rows shuffled: bags must still come back sorted.
    order = rng.permutation(len(scans))
    for group in np.array_split(order, 4):
        batch = []
        for i in group:
            s = scans[i]
            p = rng.permutation(s.n_rows)
            batch.append(ScanEmbeddings(s.scan_id, s.patient_id, s.window[p], s.slice_idx[p], s.z_mm[p], s.vectors[p]))
        table.write(batch)

    bags = store.bags(table="t")
    assert bags.scan_ids == sorted(s.scan_id for s in scans)
    assert bags.window_names == ("abdomen", "lung")
    assert bags.vectors.dtype == np.float32 and bags.dim == DIM
    assert bags.offsets[0] == 0 and bags.offsets[-1] == len(bags.vectors) == sum(s.n_rows for s in scans)
    by_id = {s.scan_id: s for s in scans}
    for i, scan_id in enumerate(bags.scan_ids):
        src = by_id[scan_id]
        rows = slice(bags.offsets[i], bags.offsets[i + 1])
        # The writer's order is already window-major then slice: exactly the order bags must return.
        np.testing.assert_array_equal(bags.vectors[rows], src.vectors.astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(bags.bag(scan_id), bags.vectors[rows])
        assert [bags.window_names[c] for c in bags.window[rows]] == list(src.window)
        np.testing.assert_array_equal(bags.slice_idx[rows], src.slice_idx)
        np.testing.assert_array_equal(bags.z_mm[rows], src.z_mm)
        assert bags.patient_ids[i] == src.patient_id
    assert bags.missing == []


def test_bags_chosen_scans_and_windows(store):
    rng = np.random.default_rng(2)
    table = store.open_for_writing("t", DIM, PROV, BOTH)
    full = [make_scan(f"s{i}", 4, rng) for i in range(5)]
    lung_only = make_scan("s9", 3, rng, windows=("lung",))
    table.write([*full, lung_only])

    bags = store.bags(table="t", scan_ids=["s3", "s1", "nope"])
    assert bags.scan_ids == ["s1", "s3"] and bags.missing == ["nope"]
    np.testing.assert_array_equal(bags.bag("s3"), full[3].vectors.astype(np.float16).astype(np.float32))

    lung = store.bags(table="t", windows=["lung"])
    assert lung.window_names == ("lung",) and lung.scan_ids == ["s0", "s1", "s2", "s3", "s4", "s9"]
    assert list(lung.sizes()) == [4, 4, 4, 4, 4, 3]
    # A scan lacking a requested window is left out, and said to be missing, rather than half a scan.
    both = store.bags(table="t", windows=["lung", "abdomen"])
    assert both.window_names == ("lung", "abdomen") and "s9" not in both.scan_ids and both.missing == ["s9"]
    rows = both.rows("s2")
    assert [both.window_names[c] for c in both.window[rows]] == ["lung"] * 4 + ["abdomen"] * 4
    assert len(store.bags(table="t", scan_ids=[])) == 0
    # By (dataset, encoder) name, as the tasks read them.
    store.open_for_writing(store.table_name("ds", "enc"), DIM, PROV, BOTH).write(full[:2])
    assert store.bags("ds", "enc").scan_ids == ["s0", "s1"]


def test_rewriting_a_scan_adds_nothing(store):
    rng = np.random.default_rng(3)
    table = store.open_for_writing("t", DIM, PROV, BOTH)
    scans = [make_scan(f"s{i}", 3, rng) for i in range(3)]
    assert table.write(scans) == 18
    assert table.write(scans[1:]) == 0
    assert store.info("t")["rows"] == 18
    assert table.done() == {(f"s{i}", w) for i in range(3) for w in ("abdomen", "lung")}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.nan, "non-finite values (1 NaN, 0 inf)"),
        (np.inf, "non-finite values (0 NaN, 1 inf)"),
        (1e5, "beyond float16"),
    ],
)
def test_unrepresentable_vectors_are_refused_with_the_scan_named(store, bad, message):
    rng = np.random.default_rng(4)
    table = store.open_for_writing("t", DIM, PROV, BOTH)
    good, broken = make_scan("good", 2, rng), make_scan("broken", 2, rng)
    broken.vectors[1, 2] = bad
    with pytest.raises(
        NonFiniteEmbeddingError, match="scan broken: .*" + message.replace("(", r"\(").replace(")", r"\)")
    ):
        table.write([good, broken])
    # Nothing of the group was stored, and nothing infinite ever is.
    assert table.table.count_rows() == 0
    table.write([good])
    stored = np.stack(table.table.to_arrow()["vector"].to_numpy(zero_copy_only=False))
    assert np.isfinite(stored).all()


def test_dimension_mismatch_is_refused(store):
    store.open_for_writing("t", DIM, PROV, BOTH)
    with pytest.raises(DimensionMismatchError, match=r"holds 6-d vectors .* gives 8-d.*--table NAME.*--overwrite"):
        store.open_for_writing("t", 8, {**PROV, "dim": 8}, BOTH)
    table = store.open_for_writing("t", DIM, PROV, BOTH)
    with pytest.raises(DimensionMismatchError, match="scan x"):
        table.write([make_scan("x", 2, np.random.default_rng(0), dim=5)])


def test_provenance_mismatch_names_the_fix(store):
    store.open_for_writing("t", DIM, PROV, BOTH).write([make_scan("s", 2, np.random.default_rng(0))])
    other = {**PROV, "weights_sha256": "0" * 64}
    with pytest.raises(ProvenanceMismatchError, match=r"weights_sha256: .*--table NAME.*--overwrite"):
        store.open_for_writing("t", DIM, other, BOTH)
    with pytest.raises(ProvenanceMismatchError, match="preprocessing_hash"):
        store.open_for_writing("t", DIM, {**PROV, "preprocessing_hash": "zzz"}, BOTH)
    with pytest.raises(ProvenanceMismatchError, match="card"):
        store.open_for_writing("t", DIM, {**PROV, "card": {**PROV["card"], "params": {"depth": 2}}}, BOTH)
    # What does not change a vector may change: the clearbench version, where the data or the weights file
    # lie (same sha256), the card's description.
    same = {
        **PROV,
        "clearbench_version": "9.9",
        "dataset_root": "/moved",
        "weights": "/elsewhere/a.pt",
        "card": {**PROV["card"], "description": "new words"},
    }
    store.open_for_writing("t", DIM, same, BOTH)
    # A window known under this name with other bounds is refused; a new window is recorded.
    with pytest.raises(ProvenanceMismatchError, match="window 'lung'"):
        store.open_for_writing("t", DIM, PROV, [Window("lung", -1000, 400)])
    store.open_for_writing("t", DIM, PROV, [Window("bone", 300, 1500)])
    assert store.provenance("t")["windows"]["bone"] == [300.0, 1500.0]
    # --overwrite replaces the table.
    store.open_for_writing("t", DIM, other, BOTH, overwrite=True)
    assert store.info("t")["rows"] == 0 and store.provenance("t")["weights_sha256"] == "0" * 64


def test_tables_info_optimize_rm(store):
    rng = np.random.default_rng(5)
    table = store.open_for_writing("ds__enc", DIM, PROV, BOTH)
    for i in range(4):
        table.write([make_scan(f"s{i}", 3, rng)])
    # A results table in the same store is not an embedding table.
    connect(store.path).create_table("runs", data=pa.table({"run": ["a"]}))
    assert store.tables() == ["ds__enc"]
    before = store.bags(table="ds__enc")
    info = store.info("ds__enc")
    assert (info["rows"], info["scans"], info["dim"]) == (24, 4, DIM)
    assert info["windows"] == {"abdomen": 12, "lung": 12} and info["fragments"] == 4
    assert info["provenance"]["encoder"] == "enc" and info["versions"] >= 5

    store.optimize("ds__enc")
    info = store.info("ds__enc")
    assert info["fragments"] == 1 and info["indices"] == ["scan_id_idx"]
    after = store.bags(table="ds__enc")
    np.testing.assert_array_equal(after.vectors, before.vectors)
    assert store.scan_ids("ds__enc") == ["s0", "s1", "s2", "s3"]

    with pytest.raises(TableNotFoundError, match="no embedding table 'runs'"):
        store.rm("runs")
    store.rm("ds__enc")
    assert store.tables() == []
    with pytest.raises(TableNotFoundError, match="clearbench embed"):
        store.info("ds__enc")


def test_overwrite_never_drops_a_table_that_is_not_an_embedding_table(store):
    # `clearbench embed --table runs --overwrite` must not delete the run results kept in the same store.
    connect(store.path).create_table("runs", data=pa.table({"run": ["a", "b"]}))
    for overwrite in (False, True):
        with pytest.raises(ClearbenchError, match=r"'runs' .* is not an embedding table"):
            store.open_for_writing("runs", DIM, PROV, BOTH, overwrite=overwrite)
    assert connect(store.path).open_table("runs").to_arrow()["run"].to_pylist() == ["a", "b"]


def test_table_names_are_safe_and_tables_list_past_ten(store):
    assert EmbeddingStore.table_name("deeplesion", "mambaout-femto-random") == "deeplesion__mambaout-femto-random"
    assert EmbeddingStore.table_name("my cohort", "enc/v2") == "my_cohort__enc_v2"
    for i in range(12):  # the deprecated table_names() stops at 10
        store.open_for_writing(f"t{i:02d}", DIM, PROV, BOTH)
    assert len(store.tables()) == 12
    with pytest.raises(ClearbenchError, match="name the table"):
        store.bags()


def test_a_second_process_sees_new_rows(store, tmp_path):
    # Cross-process visibility relies on read_consistency_interval=0: a handle opened earlier sees later commits.
    reader_side = EmbeddingStore(store.path)
    table = store.open_for_writing("t", DIM, PROV, BOTH)
    assert reader_side.info("t")["rows"] == 0
    writer_table = EmbeddingStore(store.path).open_for_writing("t", DIM, PROV, BOTH)
    writer_table.write([make_scan("s", 2, np.random.default_rng(0))])
    assert table.done() == {("s", "abdomen"), ("s", "lung")}
    assert reader_side.info("t")["rows"] == 4


def test_two_optimizes_at_once_both_succeed(store):
    # Two runs finishing together both compact; Lance refuses the later compaction as a retryable conflict
    # (without the retry, every one of 15 trials raised here).
    import threading

    rng = np.random.default_rng(6)
    for trial in range(3):
        name = f"t{trial}"
        table = store.open_for_writing(name, DIM, PROV, BOTH)
        for i in range(8):
            table.write([make_scan(f"s{i}", 2, rng)])
        errors: list[BaseException] = []

        def optimize(handle: EmbeddingStore, table_name: str = name, sink: list[BaseException] = errors) -> None:
            try:
                handle.optimize(table_name)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
                sink.append(exc)

        threads = [threading.Thread(target=optimize, args=(EmbeddingStore(store.path),)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        info = store.info(name)
        assert info["rows"] == 32 and info["fragments"] == 1
