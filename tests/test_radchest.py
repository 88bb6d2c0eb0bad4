"""RAD-ChestCT: the synthetic writer and the reader agree, labels are ORs, bad input is reported."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from render_spy import write_and_capture

import clearbench.scans.synth.radchest as synth_rc
from clearbench.errors import InputError
from clearbench.problems import ProblemLog
from clearbench.scans.radchest import ABNORMALITIES, RadChestReader
from clearbench.scans.registry import open_dataset

N_SCANS = 8


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    return write_and_capture(synth_rc, tmp_path_factory.mktemp("rc") / "radchest", N_SCANS, seed=2)


def _copy(cohort: tuple[Path, list[np.ndarray]], tmp_path: Path) -> Path:
    return Path(shutil.copytree(cohort[0], tmp_path / "copy"))


def _label_rows(root: Path) -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    for path in root.glob("*_Abnormality_and_Location_Labels.csv"):
        with path.open(newline="") as fh:
            rows.update({r["NoteAcc_DEID"]: r for r in csv.DictReader(fh)})
    return rows


def test_layout(cohort: tuple[Path, list[np.ndarray]]) -> None:
    root, _ = cohort
    names = sorted(p.stem for p in root.glob("*.npz"))
    assert len(names) == N_SCANS and all(n[:3] in ("trn", "val", "tst") and len(n) == 8 for n in names)
    for subset in ("imgtrain", "imgvalid", "imgtest"):
        assert (root / f"{subset}_Abnormality_and_Location_Labels.csv").is_file()
    with np.load(root / f"{names[0]}.npz") as npz:
        assert npz.files == ["ct"]
        ct = npz["ct"]
    assert ct.dtype == np.int16 and ct.ndim == 3 and ct.min() >= -1000 and ct.max() <= 1000
    header = next(csv.reader((root / "imgtrain_Abnormality_and_Location_Labels.csv").open()))
    assert header[0] == "NoteAcc_DEID" and all("*" in c for c in header[1:])
    assert {c.split("*")[0] for c in header[1:]} >= set(ABNORMALITIES)


def test_round_trip_pixels_labels_patients(cohort: tuple[Path, list[np.ndarray]]) -> None:
    root, rendered = cohort
    reader = open_dataset("radchest", root)
    assert isinstance(reader, RadChestReader)
    records = reader.records()
    assert len(records) == N_SCANS and not reader.problems.problems
    assert len(rendered) == N_SCANS
    labels_csv = _label_rows(root)
    for record in records:
        scan = reader.load(record)
        with np.load(record.source) as npz:
            on_disk = npz["ct"]
        assert np.array_equal(scan.hu, on_disk[::-1])  # axis 0 flipped: z increases toward the head
        match = [v for v in rendered if v.shape == on_disk.shape and np.array_equal(np.clip(v, -1000, 1000), on_disk)]
        assert len(match) == 1  # the pixels are exactly what the phantom rendered (HU within ±1)
        row = labels_csv[record.scan_id]
        for abn in ABNORMALITIES:
            expected = max(float(v) for c, v in row.items() if c.startswith(abn + "*"))
            assert record.labels[abn] == expected
        assert record.split == {"trn": "train", "val": "val", "tst": "test"}[record.scan_id[:3]]
        assert record.patient_id.startswith("mrn") and scan.spacing[0] == pytest.approx(record.meta["spacing"][0])
        assert scan.spacing[0] > 3.0  # final_spacing from the metadata CSV, not the release's 0.8 mm
    by_patient: dict[str, set[str | None]] = {}
    for r in records:
        by_patient.setdefault(r.patient_id, set()).add(r.split)
    assert len(by_patient) < len(records) and all(len(s) == 1 for s in by_patient.values())


def test_superior_is_the_end_of_the_scan(cohort: tuple[Path, list[np.ndarray]]) -> None:
    """The liver (inferior) fills the first slices of the Scan, the lung apices the last ones."""
    reader = RadChestReader(cohort[0])
    scan = reader.load(reader.records()[0])
    soft = ((scan.hu > 60) & (scan.hu < 130)).mean(axis=(1, 2))
    quarter = scan.n_slices // 4
    assert soft[:quarter].mean() > 2 * soft[-quarter:].mean()


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    def digest(root: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}

    a = digest(synth_rc.write_cohort(tmp_path / "a", 2, seed=5))
    b = digest(synth_rc.write_cohort(tmp_path / "b", 2, seed=5))
    c = digest(synth_rc.write_cohort(tmp_path / "c", 2, seed=6))
    assert a == b and a != c


def test_a_subset_of_columns_and_plain_abnormality_columns(cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = _copy(cohort, tmp_path)
    rows = _label_rows(root)
    for path in root.glob("*_Abnormality_and_Location_Labels.csv"):
        path.unlink()
    ids = sorted(rows)
    with (root / "imgtrain_Abnormality_and_Location_Labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(
            ["NoteAcc_DEID", "nodule*right_upper", "nodule*left_lower", "nodulegr1cm*left_lower", "emphysema"]
        )
        writer.writerow([ids[0], "0", "1", "1", "0.0"])
        writer.writerow([ids[1], "0", "0", "1", "1.0"])
        for scan_id in ids[2:]:
            writer.writerow([scan_id, "0", "0", "0", "0"])
    reader = RadChestReader(root)
    records = {r.scan_id: r for r in reader.records()}
    assert records[ids[0]].labels["nodule"] == 1.0 and records[ids[0]].labels["emphysema"] == 0.0
    assert records[ids[1]].labels["nodule"] == 0.0  # nodulegr1cm is not folded into nodule
    assert records[ids[1]].labels["emphysema"] == 1.0
    assert records[ids[0]].labels["fibrosis"] is None
    (warning,) = [p for p in reader.problems.warnings if "no {abnormality}*{location} column" in p.reason]
    listed = warning.reason.split(" column for ")[1].split(" in any")[0].split(", ")
    assert set(listed) == set(ABNORMALITIES) - {"nodule", "emphysema"}
    assert not reader.problems.errors


def test_no_metadata_means_no_patient_grouping(cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = _copy(cohort, tmp_path)
    next(root.glob("CT_Scan_Metadata*.csv")).unlink()
    reader = RadChestReader(root)
    records = reader.records()
    assert all(r.patient_id == r.scan_id for r in records)
    assert all(r.meta["spacing"] == (0.8, 0.8, 0.8) for r in records)
    (warning,) = reader.problems.warnings
    assert "patient grouping is unavailable" in warning.reason


def test_labels_without_volume_and_volume_without_labels(cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = _copy(cohort, tmp_path)
    gone = sorted(root.glob("trn*.npz"))[0]
    gone.unlink()
    shutil.copy(sorted(root.glob("trn*.npz"))[0], root / "trn99999.npz")
    reader = RadChestReader(root)
    records = {r.scan_id: r for r in reader.records()}
    assert gone.stem not in records
    assert all(v is None for v in records["trn99999"].labels.values())
    errors = {p.path: p.reason for p in reader.problems.errors}
    assert "1 label row(s) have no .npz volume" in errors[str(root / "imgtrain_Abnormality_and_Location_Labels.csv")]
    assert gone.stem in errors[str(root / "imgtrain_Abnormality_and_Location_Labels.csv")]
    assert "no row in any label CSV" in errors[str(root / "trn99999.npz")]
    with pytest.raises(InputError, match=re.escape("no .npz volume")):
        RadChestReader(root, problems=ProblemLog(strict=True)).records()


def test_npz_without_ct_key_corrupt_npz_and_nan_volume(cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = _copy(cohort, tmp_path)
    names = sorted(p.stem for p in root.glob("*.npz"))
    np.savez_compressed(root / f"{names[0]}.npz", volume=np.zeros((4, 8, 8), dtype=np.int16))
    (root / f"{names[1]}.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez_compressed(root / f"{names[2]}.npz", ct=np.full((4, 8, 8), np.nan, dtype=np.float32))
    np.savez_compressed(root / f"{names[3]}.npz", ct=np.full((4, 8, 8), -500.4, dtype=np.float32))
    reader = RadChestReader(root)
    records = reader.records()
    assert len(records) == N_SCANS - 2
    errors = {p.path: p.reason for p in reader.problems.errors}
    assert (
        "no 'ct' array" in errors[str(root / f"{names[0]}.npz")] and "volume" in errors[str(root / f"{names[0]}.npz")]
    )
    assert "truncated or corrupt" in errors[str(root / f"{names[1]}.npz")]
    scans = {s.scan_id: s for s in reader.scans()}
    assert names[2] not in scans and len(scans) == N_SCANS - 3
    assert "every voxel is NaN" in {p.path: p.reason for p in reader.problems.errors}[str(root / f"{names[2]}.npz")]
    assert scans[names[3]].hu.dtype == np.int16 and int(scans[names[3]].hu[0, 0, 0]) == -500
    with pytest.raises(InputError, match="no 'ct' array"):
        RadChestReader(root, problems=ProblemLog(strict=True)).records()


def _write_npz_with_corrupt_stream(path: Path, ct: np.ndarray) -> None:
    """An .npz whose zip directory and npy header are intact but whose deflate stream breaks half-way.

    A bit flip in a download does this; ``np.load`` then raises ``zlib.error``, which is not an OSError.
    """
    buf = io.BytesIO()
    np.lib.format.write_array(buf, ct)
    payload = buf.getvalue()
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = deflate.compress(payload[: len(payload) // 2]) + deflate.flush(zlib.Z_FULL_FLUSH) + b"\xff" * 16
    name, fields = b"ct.npy", (zlib.crc32(payload), len(stream), len(payload), 6)
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, *fields, 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, *fields, 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(stream), 0)
    path.write_bytes(local + stream + central + end)


def test_corrupt_deflate_stream_is_reported_not_raised(cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = _copy(cohort, tmp_path)
    victim = min(root.glob("*.npz"))
    _write_npz_with_corrupt_stream(victim, np.random.default_rng(0).integers(-1000, 1000, (8, 64, 64)).astype(np.int16))
    reader = RadChestReader(root)
    assert victim.stem in {r.scan_id for r in reader.records()}  # the header still reads: the index keeps it
    scans = [s.scan_id for s in reader.scans()]
    assert victim.stem not in scans and len(scans) == N_SCANS - 1
    (problem,) = reader.problems.for_scan(victim.stem)
    assert problem.path == str(victim) and "truncated or corrupt" in problem.reason


def test_an_empty_root(tmp_path: Path) -> None:
    reader = RadChestReader(tmp_path)
    assert reader.records() == []
    reasons = [p.reason for p in reader.problems.errors]
    assert any("no .npz volumes" in r for r in reasons)


def test_a_volume_beyond_int16_reports_its_clipping(cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A float .npz whose values int16 cannot hold is clipped, and the reader says how many voxels, once."""
    root = _copy(cohort, tmp_path)
    name = sorted(p.stem for p in root.glob("*.npz"))[0]
    ct = np.full((4, 8, 8), -1000.0, dtype=np.float32)
    ct[0, 0, :3] = 40000.0
    ct[3, 7, 7] = -40000.0
    np.savez_compressed(root / f"{name}.npz", ct=ct)
    reader = RadChestReader(root)
    scan = next(reader.scans([reader.record(name)]))
    assert int(scan.hu.max()) == 32767 and int(scan.hu.min()) == -32768
    [problem] = reader.problems.for_scan(name)
    assert problem.severity == "warning" and problem.path == str(root / f"{name}.npz")
    assert "4 voxel(s) outside the int16 HU range were clipped" in problem.reason
