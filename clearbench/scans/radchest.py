"""RAD-ChestCT (Draelos et al.) as users download it: ``.npz`` volumes plus label and metadata CSVs.

Layout (facts in ``docs/DATASETS.md`` §2), anywhere below the root::

    trn00001.npz  val00001.npz  tst00001.npz ...                 key "ct": int16 HU, [-1000, 1000]
    img{train,valid,test}_Abnormality_and_Location_Labels.csv   NoteAcc_DEID + "{abnormality}*{location}"
    CT_Scan_Metadata_Complete_35747.csv or Extrema_35747.csv    NoteAcc_DEID -> MRN_DEID (optional)

Choices made here:

- **Axes.** The release stores axis 0 superior→inferior; the Scan flips it so z increases (toward
  superior). Rows (anterior→posterior) and columns (right→left) are already display orientation.
- **Labels.** Each of the paper's 8 abnormalities is the OR (max) over every column named
  ``{abnormality}*{location}`` (or plain ``{abnormality}``, as in the older CT-Net
  ``*_BinaryLabels.csv``) that the CSVs hold, so a CSV with only some of the 4,368 columns works.
  ``nodule`` does not include ``nodulegr1cm``. An abnormality with no column at all is None for
  every scan, reported once.
- **Intersection.** The label CSVs cover whole splits, while the public release holds 3,630 volumes:
  label rows without a volume are reported in one line per CSV and dropped; a volume without a
  label row is reported and kept with unknown (None) labels, so it can still be embedded.
- **Patients.** ``patient_id`` is ``MRN_DEID`` from a metadata CSV when one is present; without
  one, each scan is its own patient and a warning says that patient grouping is unavailable.
- **Spacing.** ``final_spacing`` from the metadata CSV when present, else the release's 0.8 mm.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from clearbench.errors import InputError
from clearbench.problems import Severity
from clearbench.scans.base import DatasetReader, ScanRecord
from clearbench.scans.hu import to_int16_hu
from clearbench.scans.scan import Scan

ABNORMALITIES: tuple[str, ...] = (
    "emphysema",
    "bronchiectasis",
    "pleural_effusion",
    "atelectasis",
    "fibrosis",
    "opacity",
    "calcification",
    "nodule",
)
SPLIT_PREFIX: dict[str, str] = {"trn": "train", "val": "val", "tst": "test"}
NOMINAL_SPACING_MM = 0.8
LABEL_CSV_GLOBS = ("*_Abnormality_and_Location_Labels*.csv", "*_BinaryLabels*.csv")
META_CSV_GLOBS = ("CT_Scan_Metadata*.csv", "Extrema*.csv")
_NAME = re.compile(r"^(trn|val|tst)\d+$")
# What a damaged .npz raises: a broken zip directory, a short file, or a corrupt deflate stream (zlib.error,
# which is no OSError) inside an intact directory.
NPZ_ERRORS = (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error)


def _find(root: Path, patterns: Iterable[str]) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in root.rglob(pattern) if p.is_file())
    return sorted(found)


def npz_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the ``ct`` array, read from the npy header without decompressing the volume."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if "ct.npy" not in names:
                keys = ", ".join(n.removesuffix(".npy") for n in names) or "none"
                raise InputError(
                    path, f"no 'ct' array in this .npz (keys: {keys}); RAD-ChestCT volumes are saved as ct=..."
                )
            with zf.open("ct.npy") as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(fh)
    except InputError:
        raise
    except NPZ_ERRORS as exc:
        raise InputError(path, f"not a readable .npz file (truncated or corrupt): {exc}") from None
    return tuple(shape), np.dtype(dtype)


def read_label_csv(path: Path, report: Any) -> tuple[dict[str, dict[str, float | None]], set[str]] | None:
    """Scan-level labels of one label CSV: ``{NoteAcc_DEID: {abnormality: 1.0/0.0/None}}``, and the
    abnormalities that have at least one column in it.

    Returns None (after reporting) when the CSV cannot be used at all.
    """
    try:
        df = pl.read_csv(path, infer_schema_length=0)
    except (pl.exceptions.PolarsError, OSError) as exc:
        report(path, f"cannot read label CSV: {exc}")
        return None
    if "NoteAcc_DEID" not in df.columns:
        report(path, "no NoteAcc_DEID column; not a RAD-ChestCT label CSV")
        return None
    exprs = []
    covered = set()
    for abn in ABNORMALITIES:
        cols = [c for c in df.columns if c == abn or c.startswith(abn + "*")]
        if cols:
            covered.add(abn)
            exprs.append(pl.max_horizontal([pl.col(c).cast(pl.Float64, strict=False) for c in cols]).alias(abn))
        else:
            exprs.append(pl.lit(None, dtype=pl.Float64).alias(abn))
    labels = df.select(pl.col("NoteAcc_DEID").str.strip_chars(), *exprs)
    out: dict[str, dict[str, float | None]] = {}
    for row in labels.iter_rows():
        scan_id, values = row[0], row[1:]
        out[scan_id] = {
            abn: (None if v is None else float(v > 0)) for abn, v in zip(ABNORMALITIES, values, strict=True)
        }
    return out, covered


class RadChestReader(DatasetReader):
    """RAD-ChestCT: one ``{NoteAcc_DEID}.npz`` per chest CT, with abnormality×location labels."""

    name = "radchest"
    summary = "RAD-ChestCT: {NoteAcc_DEID}.npz volumes (key ct) plus img*_Abnormality_and_Location_Labels.csv"
    default_windows = ("lung",)
    label_names = ABNORMALITIES

    def _report(self, path: str | Path, reason: str, scan_id: str | None = None, severity: Severity = "error") -> None:
        self.problems.report(path, reason, scan_id=scan_id, severity=severity)

    def _labels(self) -> dict[str, tuple[dict[str, float | None], Path]]:
        csvs = _find(self.root, LABEL_CSV_GLOBS)
        if not csvs:
            self._report(self.root, "no img*_Abnormality_and_Location_Labels.csv below this folder; all labels unknown")
            return {}
        labels: dict[str, tuple[dict[str, float | None], Path]] = {}
        covered: set[str] = set()
        for path in csvs:
            got = read_label_csv(path, self._report)
            if got is None:
                continue
            table, present = got
            covered |= present
            for scan_id, row in table.items():
                if scan_id in labels:
                    self._report(
                        path,
                        f"{scan_id} also has a row in {labels[scan_id][1].name}; that row is kept",
                        scan_id=scan_id,
                    )
                    continue
                labels[scan_id] = (row, path)
        absent = [a for a in ABNORMALITIES if a not in covered]
        if absent and labels:
            self._report(
                csvs[0].parent,
                f"no {{abnormality}}*{{location}} column for {', '.join(absent)} in any "
                "label CSV; those labels are unknown (None)",
                severity="warning",
            )
        return labels

    def _patients(self) -> tuple[dict[str, str], dict[str, float]]:
        patients: dict[str, str] = {}
        spacing: dict[str, float] = {}
        for path in _find(self.root, META_CSV_GLOBS):
            try:
                header = pl.read_csv(path, n_rows=0).columns
                if "NoteAcc_DEID" not in header or "MRN_DEID" not in header:
                    continue
                cols = ["NoteAcc_DEID", "MRN_DEID"] + (["final_spacing"] if "final_spacing" in header else [])
                df = pl.read_csv(path, columns=cols, infer_schema_length=0)
            except (pl.exceptions.PolarsError, OSError) as exc:
                self._report(path, f"cannot read metadata CSV: {exc}", severity="warning")
                continue
            for row in df.iter_rows(named=True):
                scan_id = (row["NoteAcc_DEID"] or "").strip()
                if row["MRN_DEID"]:
                    patients.setdefault(scan_id, row["MRN_DEID"].strip())
                try:
                    value = float(row.get("final_spacing") or "nan")
                except ValueError:
                    value = float("nan")
                if np.isfinite(value) and value > 0:
                    spacing.setdefault(scan_id, value)
        return patients, spacing

    def _volumes(self) -> dict[str, Path]:
        """Every ``.npz`` below the root by scan id; a second file of the same name is reported and ignored."""
        volumes: dict[str, Path] = {}
        for dirpath, _, files in os.walk(self.root):
            for f in files:
                if f.endswith(".npz"):
                    scan_id = f[: -len(".npz")]
                    path = Path(dirpath) / f
                    if scan_id in volumes:
                        self._report(path, f"duplicate volume name; {volumes[scan_id]} is used", scan_id=scan_id)
                        continue
                    volumes[scan_id] = path
        if not volumes:
            self._report(self.root, "no .npz volumes below this folder")
        return volumes

    def _report_coverage(
        self,
        volumes: dict[str, Path],
        labels: dict[str, tuple[dict[str, float | None], Path]],
        patients: dict[str, str],
    ) -> None:
        """What the CSVs and the volumes on disk fail to cover: each is reported once, for the whole cohort."""
        if volumes and not patients:
            self._report(
                self.root,
                "no CT_Scan_Metadata*.csv or Extrema*.csv with MRN_DEID: patient grouping is "
                "unavailable, each scan counts as its own patient",
                severity="warning",
            )

        by_csv: dict[Path, list[str]] = {}
        for scan_id, (_, path) in labels.items():
            if scan_id not in volumes:
                by_csv.setdefault(path, []).append(scan_id)
        for path, ids in by_csv.items():
            ids.sort()
            shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
            self._report(path, f"{len(ids)} label row(s) have no .npz volume on disk ({shown}); dropped")

        odd_names = sorted(s for s in volumes if not _NAME.match(s))
        if odd_names:
            shown = ", ".join(odd_names[:3]) + (", ..." if len(odd_names) > 3 else "")
            self._report(
                self.root,
                f"{len(odd_names)} volume name(s) without a trn/val/tst prefix ({shown}); their split is unknown",
                severity="warning",
            )
        unmapped = [s for s in volumes if patients and s not in patients]
        if unmapped:
            self._report(
                self.root,
                f"{len(unmapped)} volume(s) missing from the metadata CSV; each counts as its own patient",
                severity="warning",
            )

    def _index(self) -> Iterable[ScanRecord]:
        volumes = self._volumes()
        labels = self._labels()
        patients, spacing = self._patients()
        self._report_coverage(volumes, labels, patients)
        records = []
        for scan_id, path in sorted(volumes.items()):
            try:
                shape, dtype = npz_header(path)
            except InputError as exc:
                self._skip(scan_id, exc.path, exc.reason, patients.get(scan_id))
                continue
            if len(shape) != 3:
                self._skip(
                    scan_id, path, f"'ct' has shape {shape}; a volume is [slices, rows, cols]", patients.get(scan_id)
                )
                continue
            row = labels.get(scan_id)
            if row is None:
                self._report(path, "no row in any label CSV; labels unknown", scan_id=scan_id)
            s = spacing.get(scan_id, NOMINAL_SPACING_MM)
            records.append(
                ScanRecord(
                    scan_id=scan_id,
                    patient_id=patients.get(scan_id, scan_id),
                    source=path,
                    split=SPLIT_PREFIX.get(scan_id[:3]) if _NAME.match(scan_id) else None,
                    labels=dict(row[0]) if row else {a: None for a in ABNORMALITIES},
                    meta={
                        "n_slices": int(shape[0]),
                        "shape": tuple(int(v) for v in shape),
                        "dtype": str(dtype),
                        "spacing": (s, s, s),
                        "spacing_known": scan_id in spacing,
                        "labels_csv": row[1].name if row else None,
                    },
                )
            )
        return records

    def load(self, record: ScanRecord) -> Scan:
        path = record.source
        try:
            with np.load(path, allow_pickle=False) as npz:
                if "ct" not in npz.files:
                    raise InputError(path, f"no 'ct' array in this .npz (keys: {', '.join(npz.files) or 'none'})")
                ct = npz["ct"]
        except InputError:
            raise
        except NPZ_ERRORS as exc:
            raise InputError(path, f"not a readable .npz file (truncated or corrupt): {exc}") from None
        if ct.ndim != 3 or 0 in ct.shape:
            raise InputError(path, f"'ct' has shape {ct.shape}; a volume is [slices, rows, cols]")
        if ct.dtype != np.int16:
            if not np.issubdtype(ct.dtype, np.number):
                raise InputError(path, f"'ct' has dtype {ct.dtype}; expected int16 HU")
            finite = np.isfinite(ct)
            if not finite.all():
                bad = int(ct.size - finite.sum())
                what = "every voxel is" if bad == ct.size else f"{bad} of {ct.size} voxels are"
                raise InputError(path, f"{what} NaN or infinite; the volume is unusable")
            ct = to_int16_hu(ct, path, self.problems, record.scan_id)
        hu = np.ascontiguousarray(ct[::-1])  # superior->inferior on disk; the Scan's z increases
        dz, dy, dx = (float(v) for v in record.meta.get("spacing", (NOMINAL_SPACING_MM,) * 3))
        return Scan(
            scan_id=record.scan_id,
            patient_id=record.patient_id,
            hu=hu,
            spacing=(dz, dy, dx),
            split=record.split,
            meta={k: v for k, v in record.meta.items() if k != "dtype"},
        )
