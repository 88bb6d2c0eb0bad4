"""NIH DeepLesion as users download it: ``Images_png/`` series folders plus ``DL_info.csv``.

Layout (facts in ``docs/DATASETS.md`` §1)::

    ROOT/DL_info.csv
    ROOT/Images_png/000001_01_01/103.png ... 115.png     (uint16 PNG, HU = value - 32768)

One :class:`~clearbench.scans.base.ScanRecord` per series folder that ``DL_info.csv`` describes.

Choices made here, where the dataset leaves room:

- **Slice order.** A folder holds only the slices inside the ``Slice_range`` of its lesions, often as
  several separate runs. The Scan keeps every slice of the folder, in physical order, and does not
  fill the gaps: ``z_mm`` is computed from the slice number and the CSV's z spacing, so a gap shows as
  a jump in ``z_mm``; the runs are listed in ``meta["runs"]`` as ``(first, last)`` slice numbers.
  Slice numbers grow head to feet (the official ``DL_save_nifti.py`` affine puts ``-sz`` on the slice
  axis), so the Scan holds slices in *descending* slice number, with ``z_mm = -(number - 1) * sz``,
  and ``meta["slice_numbers"]`` maps each Scan index back to its file.
- **1-based coordinates.** ``DL_info.csv`` counts slices, box corners and RECIST points from 1.
  :class:`DLRow` keeps the CSV's values as written; :func:`lesion_from_row` is the one place that
  converts them to the Scan's 0-based slice index and pixel coordinates.
- **Labels.** ``labels[type] = 1.0`` for each coarse type annotated in the series and 0.0 for the
  others; a series whose rows are all ``-1`` (the real train split) gets None for every type.
- **Pixels.** PNGs are decoded as uint16 (never through PIL's ``convert``, which saturates them); an
  8-bit PNG is reported as a pre-windowed copy.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clearbench.errors import InputError
from clearbench.problems import Severity
from clearbench.scans.base import DatasetReader, ScanRecord
from clearbench.scans.scan import LESION_TYPES, Lesion, Scan

DL_COLUMNS: tuple[str, ...] = (
    "File_name",
    "Patient_index",
    "Study_index",
    "Series_ID",
    "Key_slice_index",
    "Measurement_coordinates",
    "Bounding_boxes",
    "Lesion_diameters_Pixel_",
    "Normalized_lesion_location",
    "Coarse_lesion_type",
    "Possibly_noisy",
    "Slice_range",
    "Spacing_mm_px_",
    "Image_size",
    "DICOM_windows",
    "Patient_gender",
    "Patient_age",
    "Train_Val_Test",
)
SPLITS: dict[int, str] = {1: "train", 2: "val", 3: "test"}
_FILE_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)\.png$")
_SLICE_FILE = re.compile(r"^(\d+)\.png$")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I")


@dataclass(frozen=True)
class DLRow:
    """One row of ``DL_info.csv``, typed but otherwise as written (1-based slices and pixels).

    Fields whose column is missing from the CSV are None; ``patient_index``, ``study_index``,
    ``series_id`` and ``key_slice_index`` fall back to what ``File_name`` encodes.
    """

    line: int
    file_name: str
    folder: str
    patient_index: int
    study_index: int
    series_id: int
    key_slice_index: int
    measurement_coordinates: tuple[float, ...] | None
    bounding_box: tuple[float, float, float, float] | None
    lesion_diameters_px: tuple[float, float] | None
    normalized_location: tuple[float, float, float] | None
    coarse_type: int | None  # 1..8, or -1 when unlabelled
    possibly_noisy: bool | None
    slice_range: tuple[int, int] | None
    spacing_mm: tuple[float, float, float] | None  # (x, y, z) as in the CSV
    image_size: tuple[int, int] | None
    dicom_window: tuple[float, float] | None
    gender: str | None
    age: float | None
    split: str | None

    @property
    def type_name(self) -> str | None:
        return LESION_TYPES.get(self.coarse_type) if self.coarse_type is not None else None


def _floats(text: str, n: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in text.split(","))
    if len(values) != n:
        raise ValueError(f"expected {n} numbers, got {len(values)}")
    return values


def _optional_number(text: str) -> float | None:
    text = text.strip()
    if text == "" or text.lower() == "nan":
        return None
    value = float(text)
    return None if math.isnan(value) else value


# Columns that describe one lesion's geometry: a bad value there leaves that value unknown (as a missing column
# does), the row and its series stay. A bad value elsewhere (the scan's identity, spacing, split) drops the row.
_EXPECTED = {
    "Measurement_coordinates": "8 numbers",
    "Bounding_boxes": "4 numbers",
    "Lesion_diameters_Pixel_": "2 numbers",
    "Normalized_lesion_location": "3 numbers",
}
_LESION_COLUMNS = frozenset(
    {"Measurement_coordinates", "Bounding_boxes", "Lesion_diameters_Pixel_", "Normalized_lesion_location"}
)


def _parse_row(line: int, raw: dict[str, str], notes: list[str] | None = None) -> DLRow:
    """Type one CSV row; raises ValueError naming the column that does not parse.

    A lesion column that does not parse is taken as unknown instead, with a note appended to ``notes``.
    """
    name = raw["File_name"].strip()
    m = _FILE_NAME.match(name)
    if m is None:
        raise ValueError(f"File_name '{name}' is not PATIENT_STUDY_SERIES_SLICE.png")
    folder = f"{m.group(1)}_{m.group(2)}_{m.group(3)}"

    def get(column: str, parse: Any, default: Any = None) -> Any:
        text = raw.get(column)
        if text is None:
            return default
        try:
            return parse(text.strip())
        except ValueError as exc:
            if column in _LESION_COLUMNS and notes is not None:
                notes.append(
                    f"column {column} = '{text}' is not {_EXPECTED.get(column, 'a number')} ({exc}); taken as unknown"
                )
                return None
            raise ValueError(f"column {column} = '{text}': {exc}") from None

    split_code = get("Train_Val_Test", lambda t: int(float(t)))
    if split_code is not None and split_code not in SPLITS:
        raise ValueError(f"column Train_Val_Test = {split_code}: expected 1, 2 or 3")
    age = get("Patient_age", _optional_number)
    gender = get("Patient_gender", lambda t: t or None)
    return DLRow(
        line=line,
        file_name=name,
        folder=folder,
        patient_index=get("Patient_index", int, int(m.group(1))),
        study_index=get("Study_index", int, int(m.group(2))),
        series_id=get("Series_ID", int, int(m.group(3))),
        key_slice_index=get("Key_slice_index", int, int(m.group(4))),
        measurement_coordinates=get("Measurement_coordinates", lambda t: _floats(t, 8)),
        bounding_box=get("Bounding_boxes", lambda t: _floats(t, 4)),
        lesion_diameters_px=get("Lesion_diameters_Pixel_", lambda t: _floats(t, 2)),
        normalized_location=get("Normalized_lesion_location", lambda t: _floats(t, 3)),
        coarse_type=get("Coarse_lesion_type", lambda t: int(float(t))),
        possibly_noisy=get("Possibly_noisy", lambda t: bool(int(float(t)))),
        slice_range=get("Slice_range", lambda t: tuple(int(v) for v in _floats(t, 2))),
        spacing_mm=get("Spacing_mm_px_", lambda t: _floats(t, 3)),
        image_size=get("Image_size", lambda t: tuple(int(v) for v in _floats(t, 2))),
        dicom_window=get("DICOM_windows", lambda t: _floats(t, 2)),
        gender=gender,
        age=None if age == 0 else age,  # MULAN and others treat 0 as missing
        split=SPLITS[split_code] if split_code is not None else None,
    )


def lesion_from_row(row: DLRow, index_of_number: dict[int, int]) -> Lesion | None:
    """The lesion of ``row`` in Scan coordinates: the only place where 1-based values become 0-based.

    ``index_of_number`` maps a slice number (file name) to its index in the Scan. Returns None when
    the row has no box or its key slice is not in the Scan.
    """
    idx = index_of_number.get(row.key_slice_index)
    if idx is None or row.bounding_box is None:
        return None
    x1, y1, x2, y2 = (v - 1.0 for v in row.bounding_box)
    meta: dict[str, Any] = {
        "file_name": row.file_name,
        "key_slice_number": row.key_slice_index,
        "coarse_type_code": row.coarse_type,
        "possibly_noisy": row.possibly_noisy,
        "recist": tuple(v - 1.0 for v in row.measurement_coordinates) if row.measurement_coordinates else None,
        "diameters_px": row.lesion_diameters_px,
        "normalized_location": row.normalized_location,
        "slice_range": row.slice_range,
        "dicom_window": row.dicom_window,
    }
    return Lesion(slice_idx=idx, box=(x1, y1, x2, y2), type=row.type_name, meta=meta)


def read_dl_info(path: Path, report: Any) -> list[DLRow]:
    """Parse ``DL_info.csv`` once. Missing columns are reported in one line; bad rows one line each."""
    rows: list[DLRow] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        missing = [c for c in DL_COLUMNS if c not in header]
        unknown = [c for c in header if c not in DL_COLUMNS]
        if missing:
            report(path, f"missing column(s) {', '.join(missing)}; their values are unknown for every lesion")
        if unknown:
            report(path, f"unknown column(s) {', '.join(unknown)} ignored", severity="warning")
        if "File_name" in missing:
            return rows
        for line, raw in enumerate(reader, start=2):
            notes: list[str] = []
            try:
                row = _parse_row(line, raw, notes)
            except (ValueError, AttributeError) as exc:
                report(path, f"line {line}: {exc}; row skipped")
                continue
            rows.append(row)
            for note in notes:
                report(path, f"line {line}: lesion {row.file_name}: {note}", scan_id=row.folder, severity="warning")
    return rows


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def _first(values: Iterable[Any]) -> Any:
    return next((v for v in values if v is not None), None)


def read_png16(path: str | Path) -> np.ndarray:
    """The raw uint16 values of one DeepLesion slice (HU + 32768); InputError for a corrupt or 8-bit PNG."""
    try:
        with Image.open(path, formats=("PNG",)) as im:
            mode = im.mode
            if mode not in _SIXTEEN_BIT:
                raise InputError(
                    path,
                    f"{'8' if mode in ('L', 'P', 'RGB', 'RGBA', 'LA', '1') else 'non-16'}-bit PNG (mode {mode}) where "
                    "DeepLesion has 16-bit: this looks like a pre-windowed copy; use the original Images_png "
                    "(value = HU + 32768)",
                )
            raw = np.asarray(im)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(path, "slice file not found") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, f"cannot decode PNG (truncated or corrupt): {exc}") from None
    if raw.dtype != np.uint16:  # PIL mode "I" holds the same 0..65535 values as int32
        raw = raw.clip(0, 65535).astype(np.uint16)
    return raw


def raw_to_hu(raw: np.ndarray) -> np.ndarray:
    """HU = value - 32768, in place on a uint16 array, returned as its int16 view.

    ``value - 32768`` is the uint16 bit pattern with its top bit flipped, read as int16: one pass, no
    int32 temporary.
    """
    hu = raw.view(np.int16)
    np.bitwise_xor(hu, np.int16(-32768), out=hu)
    return hu


def decode_png16(path: str | Path) -> np.ndarray:
    """One DeepLesion slice as int16 HU."""
    return raw_to_hu(np.array(read_png16(path)))


class DeepLesionReader(DatasetReader):
    """NIH DeepLesion: 16-bit PNG series folders and ``DL_info.csv``; one scan per series folder."""

    name = "deeplesion"
    summary = "NIH DeepLesion: Images_png/ series folders (uint16 PNG) plus DL_info.csv"
    default_windows = ("abdomen", "lung")
    label_names = tuple(LESION_TYPES.values())

    def _report(self, path: str | Path, reason: str, scan_id: str | None = None, severity: Severity = "error") -> None:
        self.problems.report(path, reason, scan_id=scan_id, severity=severity)

    def _index(self) -> Iterable[ScanRecord]:
        csv_path = self.root / "DL_info.csv"
        images = self.root / "Images_png"
        if not csv_path.is_file():
            self._report(csv_path, "not found: a DeepLesion root holds DL_info.csv and Images_png/")
            return []
        if not images.is_dir():
            self._report(images, "not found: a DeepLesion root holds DL_info.csv and Images_png/")
            return []
        rows = read_dl_info(csv_path, self._report)
        by_folder: dict[str, list[DLRow]] = {}
        for row in rows:
            by_folder.setdefault(row.folder, []).append(row)
        on_disk = {e.name: Path(e.path) for e in os.scandir(images) if e.is_dir()}

        absent = sorted(set(by_folder) - set(on_disk))
        if absent:
            shown = ", ".join(absent[:3]) + (", ..." if len(absent) > 3 else "")
            self._report(
                csv_path,
                f"{len(absent)} series listed here have no folder under Images_png ({shown}); they are skipped",
            )
        for folder in sorted(set(on_disk) - set(by_folder)):
            self._skip(
                folder,
                on_disk[folder],
                "series folder has no rows in DL_info.csv that could be read (no spacing or labels); skipped",
            )

        records = []
        for folder in sorted(set(by_folder) & set(on_disk)):
            record = self._record(folder, on_disk[folder], by_folder[folder], csv_path)
            if record is not None:
                records.append(record)
        return records

    def _record(self, folder: str, path: Path, rows: list[DLRow], csv_path: Path) -> ScanRecord | None:
        numbers = sorted(int(m.group(1)) for e in os.scandir(path) if (m := _SLICE_FILE.match(e.name)))
        if not numbers:
            self._skip(
                folder, path, "empty series folder: no NNN.png slices", patient_id=f"{rows[0].patient_index:06d}"
            )
            return None
        present = set(numbers)
        missing = sorted(
            {k for r in rows if r.slice_range for k in range(r.slice_range[0], r.slice_range[1] + 1)} - present
        )
        if missing:
            shown = ", ".join(f"{k:03d}.png" for k in missing[:5]) + (", ..." if len(missing) > 5 else "")
            self._report(path, f"{len(missing)} slice file(s) missing inside Slice_range: {shown}", scan_id=folder)

        splits = {r.split for r in rows}
        if len(splits) > 1:
            self._report(
                csv_path,
                f"series {folder} has rows in several splits {sorted(map(str, splits))}; using {rows[0].split}",
                scan_id=folder,
            )
        spacing_xyz = _first(r.spacing_mm for r in rows)
        spacing_known = spacing_xyz is not None and all(math.isfinite(v) and v > 0 for v in spacing_xyz)
        if spacing_xyz is not None and not spacing_known:
            self._report(
                csv_path,
                f"series {folder}: Spacing_mm_px_ {spacing_xyz} is not positive; assuming 1 mm",
                scan_id=folder,
            )
        if not spacing_known:
            spacing_xyz = (1.0, 1.0, 1.0)
        types = [r.coarse_type for r in rows]
        labels: dict[str, float | None]
        if all(t is None or t == -1 for t in types):
            labels = {name: None for name in self.label_names}
        else:
            present_types = {LESION_TYPES.get(t) for t in types if t is not None}
            unknown = any(t is None or t == -1 for t in types)
            labels = {name: 1.0 if name in present_types else (None if unknown else 0.0) for name in self.label_names}

        order = numbers[::-1]  # descending slice number = ascending z (slice numbers run head to feet)
        index_of_number = {n: i for i, n in enumerate(order)}
        lesions = [lesion_from_row(r, index_of_number) for r in rows]
        meta = {
            "slice_numbers": order,
            "runs": _runs(numbers),
            "spacing": (float(spacing_xyz[2]), float(spacing_xyz[1]), float(spacing_xyz[0])),
            "spacing_known": spacing_known,
            "n_slices": len(numbers),
            "image_size": _first(r.image_size for r in rows),
            "study_index": rows[0].study_index,
            "series_id": rows[0].series_id,
            "gender": _first(r.gender for r in rows),
            "age": _first(r.age for r in rows),
            "rows": [asdict(r) for r in rows],
            "lesions": [
                {"slice_idx": les.slice_idx, "box": les.box, "type": les.type} for les in lesions if les is not None
            ],
        }
        return ScanRecord(
            scan_id=folder,
            patient_id=f"{rows[0].patient_index:06d}",
            source=path,
            split=rows[0].split,
            labels=labels,
            meta=meta,
        )

    def load(self, record: ScanRecord) -> Scan:
        order: list[int] = record.meta["slice_numbers"]
        size = record.meta.get("image_size")
        raw: np.ndarray | None = None  # uint16 volume, converted to HU in one pass at the end
        kept: list[int] = []
        bad: list[InputError] = []
        folder = str(record.source)
        for n, path in zip(order, [f"{folder}{os.sep}{n:03d}.png" for n in order], strict=True):
            try:
                img = read_png16(path)
                if raw is None:
                    raw = np.empty((len(order), *img.shape), dtype=np.uint16)
                elif img.shape != raw.shape[1:]:
                    raise InputError(
                        path, f"slice is {img.shape[1]}x{img.shape[0]} px, the series is {raw.shape[2]}x{raw.shape[1]}"
                    )
            except InputError as exc:
                bad.append(exc)
                continue
            raw[len(kept)] = img
            kept.append(n)
        if raw is None or not kept:
            raise bad[0] if bad else InputError(record.source, "no readable slices")
        hu = raw_to_hu(raw[: len(kept)])
        for skipped in bad:
            self._report(skipped.path, f"{skipped.reason}; slice skipped", scan_id=record.scan_id)
        if size is not None and tuple(size) != hu.shape[1:] and tuple(size[::-1]) != hu.shape[1:]:
            self._report(
                record.source,
                f"slices are {hu.shape[2]}x{hu.shape[1]} px but DL_info.csv says Image_size {size[0]}, {size[1]}",
                scan_id=record.scan_id,
                severity="warning",
            )
        dz, dy, dx = record.meta["spacing"]
        index_of_number = {n: i for i, n in enumerate(kept)}
        lesions = []
        for row in (DLRow(**r) for r in record.meta["rows"]):
            lesion = lesion_from_row(row, index_of_number)
            if lesion is None:
                why = "no Bounding_boxes value" if row.bounding_box is None else "its key slice file is missing"
                self._report(record.source, f"lesion {row.file_name} not placed: {why}", scan_id=record.scan_id)
            else:
                lesions.append(lesion)
        meta = {k: v for k, v in record.meta.items() if k not in ("rows", "lesions")}
        meta["slice_numbers"] = kept
        return Scan(
            scan_id=record.scan_id,
            patient_id=record.patient_id,
            hu=hu,
            spacing=(dz, dy, dx),
            z_mm=-(np.asarray(kept, dtype=np.float64) - 1.0) * dz,
            lesions=lesions,
            split=record.split,
            meta=meta,
        )
