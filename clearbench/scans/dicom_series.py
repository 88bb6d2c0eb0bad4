"""One CT series from a folder of DICOM files, read the way a radiologist's viewer would place it.

Folder and file names, InstanceNumber and SliceThickness are all unreliable in the wild, so everything here
comes from the geometry tags: the CT images are chosen by their Modality tag, scouts and non-axial images
are rejected by ImageType and ImageOrientationPatient, slices are ordered by ImagePositionPatient projected
on the slice normal, and the z spacing is the most common distance between neighbouring slices. Anything
odd on the way (a gap, a duplicate position, a file without pixels) is reported to a
:class:`~clearbench.problems.ProblemLog` and the series is still read when that is safe.

Two CT series in one folder are an error for that scan: which one the user meant is a guess we refuse to
make. The message tells them to put each series in its own folder.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from clearbench.errors import InputError
from clearbench.problems import ProblemLog
from clearbench.scans.hu import int16_hu, report_clipped
from clearbench.scans.scan import Scan
from clearbench.scans.walk import files_under

# Slices closer than this along the normal are at the same position.
DUPLICATE_TOLERANCE_MM = 0.01
# A step between neighbouring slices that differs from the usual step by more than this is a gap.
GAP_TOLERANCE_MM = 0.05
GAP_TOLERANCE_REL = 0.05
# Gantry tilts up to this angle still count as axial; anything steeper is an oblique or a scout.
MAX_TILT_DEG = 30.0

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
# Files so named claim to be DICOM: when one is not, a slice is missing and the user must hear which file it is.
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")
# "1-020 copy.dcm", "1-020 (1).dcm", "1-020 - Copy.dcm", "Copy of 1-020.dcm": names a file manager gives a copy.
_COPY_NAME = re.compile(r"(\bcopy\b|\(\d+\)$)", re.IGNORECASE)


@dataclass(frozen=True)
class DicomHeader:
    """The tags of one DICOM file that decide whether and where it belongs in a CT volume."""

    path: Path
    modality: str
    patient_id: str
    study_uid: str
    series_uid: str
    series_number: int | None
    series_description: str
    image_type: tuple[str, ...]
    orientation: tuple[float, ...] | None
    position: tuple[float, float, float] | None
    instance_number: int | None
    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    n_frames: int
    has_pixels: bool | None  # None when only the header was read

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type

    @property
    def normal(self) -> np.ndarray | None:
        """The unit slice normal, pointing to the patient's head (so positions grow inferior → superior)."""
        if self.orientation is None or len(self.orientation) != 6:
            return None
        row, col = np.array(self.orientation[:3]), np.array(self.orientation[3:])
        n = np.cross(row, col)
        norm = np.linalg.norm(n)
        if norm < 1e-6:
            return None
        n = n / norm
        return -n if n[2] < 0 else n

    @property
    def tilt_deg(self) -> float | None:
        """The angle between the slice normal and the patient's long axis (0 for a true axial slice)."""
        n = self.normal
        return None if n is None else float(np.degrees(np.arccos(min(1.0, abs(float(n[2]))))))

    @property
    def is_axial(self) -> bool:
        tilt = self.tilt_deg
        return tilt is not None and tilt <= MAX_TILT_DEG + 1e-6


def _str(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _floats(ds: Dataset, keyword: str, n: int) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _position_along_normal(header: DicomHeader) -> float:
    """Where the slice lies along its normal (mm); :func:`_select` keeps only slices that have both."""
    if header.normal is None or header.position is None:
        raise InputError(header.path, "no ImageOrientationPatient/ImagePositionPatient: the slice cannot be placed")
    return float(np.dot(header.normal, header.position))


def _header_from(ds: Dataset, path: Path, pixels_read: bool) -> DicomHeader:
    image_type = ds.get("ImageType")
    if isinstance(image_type, str):
        image_type = image_type.split("\\")
    thickness = ds.get("SliceThickness")
    try:
        thickness_mm = None if thickness in (None, "") else float(thickness)
    except (TypeError, ValueError):
        thickness_mm = None
    position = _floats(ds, "ImagePositionPatient", 3)
    spacing = _floats(ds, "PixelSpacing", 2)
    return DicomHeader(
        path=path,
        modality=_str(ds, "Modality").upper(),
        patient_id=_str(ds, "PatientID"),
        study_uid=_str(ds, "StudyInstanceUID"),
        series_uid=_str(ds, "SeriesInstanceUID"),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_str(ds, "SeriesDescription"),
        image_type=tuple(str(t).strip().upper() for t in (image_type or ())),
        orientation=_floats(ds, "ImageOrientationPatient", 6),
        position=None if position is None else (position[0], position[1], position[2]),
        instance_number=_int(ds, "InstanceNumber"),
        rows=_int(ds, "Rows") or 0,
        columns=_int(ds, "Columns") or 0,
        pixel_spacing=None if spacing is None else (spacing[0], spacing[1]),
        slice_thickness=thickness_mm,
        n_frames=_int(ds, "NumberOfFrames") or 1,
        has_pixels=("PixelData" in ds) if pixels_read else None,
    )


def _read(path: Path, *, with_pixels: bool) -> tuple[DicomHeader, Dataset] | None:
    """Parse one file; ``None`` for anything that is not DICOM (README files, thumbnails, DICOMDIR).

    A file named like DICOM (``.dcm``) that is not DICOM is an error naming it: a slice is probably missing.
    Old exports without the 128-byte preamble and ``DICM`` prefix are still DICOM, and are read.
    """
    # Large elements (the pixel data) are read only when decoded, so headers of skipped files cost little.
    options: dict[str, Any] = {"defer_size": "64 KB"} if with_pixels else {"stop_before_pixels": True}
    ds: Dataset | None
    try:
        ds = pydicom.dcmread(path, **options)
    except InvalidDicomError:
        if path.suffix.lower() not in DICOM_SUFFIXES:
            return None
        ds = _read_without_preamble(path, options)
        if ds is None:
            raise InputError(
                path, "named like a DICOM file but is not one (no DICOM header or data set); skipped"
            ) from None
    except (IsADirectoryError, PermissionError):
        return None
    except Exception as exc:
        raise InputError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if "SOPClassUID" not in ds and "Modality" not in ds:
        sop_class = str(getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", "") or "")
        if sop_class and sop_class != _DICOMDIR_SOP_CLASS:
            raise InputError(path, "the file meta announces an image but the dataset is empty: truncated file?")
        return None  # DICOMDIR and other non-image objects
    return _header_from(ds, path, with_pixels), ds


def _read_without_preamble(path: Path, options: dict[str, Any]) -> Dataset | None:
    """The data set of a DICOM file written without preamble, or ``None`` when the bytes are not DICOM at all."""
    try:
        ds = pydicom.dcmread(path, force=True, **options)
        return ds if "SOPClassUID" in ds or "Modality" in ds else None
    except Exception:  # noqa: BLE001 - forced parsing of arbitrary bytes fails in many ways
        return None


def read_header(path: str | Path) -> DicomHeader | None:
    """The geometry header of one file without its pixels, or ``None`` when the file is not DICOM."""
    parsed = _read(Path(path), with_pixels=False)
    return None if parsed is None else parsed[0]


def dicom_files(
    folder: str | Path, recursive: bool = False, problems: ProblemLog | None = None, scan_id: str | None = None
) -> list[Path]:
    """The candidate files of a folder in name order; hidden files are left out, extensions are not required.

    Recursively, links to folders are followed once and never in a loop (reported to ``problems``).
    """
    folder = Path(folder)
    if recursive:
        return files_under(folder, problems if problems is not None else ProblemLog(), scan_id)
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def probe_folder(folder: str | Path, max_headers: int = 5) -> tuple[DicomHeader | None, int]:
    """A cheap look at what a folder holds: one representative header, and the number of files.

    Reads at most ``max_headers`` DICOM headers in name order and returns the first axial CT image among
    them (so a scout that sorts first does not hide the CT), else the first DICOM header, else ``None``.
    Dataset indexes use it to tell a CT folder from an RTSTRUCT or SEG folder without opening every slice.
    """
    files = dicom_files(folder)
    first: DicomHeader | None = None
    seen = 0
    for path in files:
        try:
            header = read_header(path)
        except InputError:
            continue
        if header is None:
            continue
        if header.modality == "CT" and not header.is_localizer and header.is_axial:
            return header, len(files)
        first = first or header
        seen += 1
        if seen >= max_headers:
            break
    return first, len(files)


@dataclass
class _Slice:
    header: DicomHeader
    dataset: Dataset
    z: float


def _reject(problems: ProblemLog, slices: Iterable[_Slice], reason: str, scan_id: str | None) -> None:
    for s in slices:
        problems.report(s.header.path, reason, scan_id=scan_id)


def _majority(slices: list[_Slice], key: Any, what: str, problems: ProblemLog, scan_id: str | None) -> list[_Slice]:
    """Keep the slices that share the most common value of ``key``; the others are reported as errors."""
    counts = Counter(key(s) for s in slices)
    if len(counts) <= 1:
        return slices
    best = max(counts.items(), key=lambda kv: (kv[1], str(kv[0])))[0]
    _reject(
        problems,
        [s for s in slices if key(s) != best],
        f"{what} differs from the rest of the series; image skipped",
        scan_id,
    )
    return [s for s in slices if key(s) == best]


def _orientation_key(h: DicomHeader) -> tuple[float, ...]:
    return tuple(round(v, 3) for v in h.orientation or ())


def _select(
    parsed: list[tuple[DicomHeader, Dataset]], where: Path, problems: ProblemLog, scan_id: str | None
) -> list[_Slice]:
    """The images of the one axial CT series among ``parsed``, with everything else reported or ignored."""
    candidates: list[tuple[DicomHeader, Dataset]] = []
    n_ct = 0
    for header, ds in parsed:
        if header.modality != "CT":
            continue  # RTSTRUCT, SEG, dose reports: other objects that legitimately sit beside a CT
        n_ct += 1
        if not header.has_pixels:
            problems.report(header.path, "CT file has no pixel data; skipped", scan_id=scan_id)
        elif header.n_frames > 1:
            problems.report(
                header.path,
                f"multi-frame (enhanced) CT with {header.n_frames} frames is not supported; "
                "convert it to single-frame slices (e.g. with dcm2niix or emf2sf) and read it again",
                scan_id=scan_id,
            )
        elif header.is_localizer:
            problems.report(header.path, "scout/localizer image (ImageType LOCALIZER) rejected", scan_id=scan_id)
        elif header.orientation is None or header.position is None:
            problems.report(
                header.path,
                "no ImageOrientationPatient/ImagePositionPatient: the slice cannot be placed; skipped",
                scan_id=scan_id,
            )
        elif not header.is_axial:
            problems.report(
                header.path,
                f"non-axial image (ImageOrientationPatient {list(header.orientation)}) rejected",
                scan_id=scan_id,
            )
        else:
            candidates.append((header, ds))
    if not candidates:
        if n_ct:
            raise InputError(where, f"none of the {n_ct} CT file(s) is a usable axial image (see the problems above)")
        modalities = ", ".join(sorted({h.modality or "<none>" for h, _ in parsed}))
        raise InputError(where, f"no CT images: the DICOM files here have Modality {modalities}")

    by_series = Counter(h.series_uid for h, _ in candidates)
    if len(by_series) > 1:
        listing = ", ".join(f"{uid or '<no SeriesInstanceUID>'} ({n} images)" for uid, n in by_series.most_common())
        raise InputError(
            where,
            f"{len(by_series)} CT series in one folder: {listing}; put each series in its own folder",
        )

    slices = [_Slice(h, ds, _position_along_normal(h)) for h, ds in candidates]
    slices = _majority(slices, lambda s: _orientation_key(s.header), "ImageOrientationPatient", problems, scan_id)
    slices = _majority(slices, lambda s: (s.header.rows, s.header.columns), "image size", problems, scan_id)
    slices = _majority(slices, lambda s: s.header.pixel_spacing, "PixelSpacing", problems, scan_id)
    return slices


def _canonical_first(s: _Slice) -> tuple[Any, ...]:
    """Which of the slices at one position to keep: the lowest InstanceNumber, then a name that is not a copy's."""
    stem = s.header.path.stem
    return (
        s.header.instance_number is None,
        s.header.instance_number or 0,
        bool(_COPY_NAME.search(stem)),
        len(stem),
        str(s.header.path),
    )


def _drop_duplicates(slices: list[_Slice], problems: ProblemLog, scan_id: str | None) -> list[_Slice]:
    """Keep one slice per position (the lowest InstanceNumber, the original's name over a copy's); report the others.

    A copy with identical pixels is harmless (a warning); different pixels at one position mean two
    acquisitions were merged, so the volume is ambiguous (an error, fatal under ``--strict``).
    """
    kept: list[_Slice] = []
    group: list[_Slice] = []

    def flush() -> None:
        if not group:
            return
        group.sort(key=_canonical_first)
        keep, extra = group[0], group[1:]
        kept.append(keep)
        for dup in extra:
            try:
                same = np.array_equal(_raw_pixels(dup), _raw_pixels(keep))
            except InputError:
                same = False
            problems.report(
                dup.header.path,
                f"duplicate slice position z={dup.z:.3f} mm (same as {keep.header.path.name}); "
                + ("identical pixels, copy dropped" if same else "different pixels, this image dropped"),
                scan_id=scan_id,
                severity="warning" if same else "error",
            )
        group.clear()

    for s in slices:
        if group and abs(s.z - group[0].z) > DUPLICATE_TOLERANCE_MM:
            flush()
        group.append(s)
    flush()
    return kept


def _raw_pixels(s: _Slice) -> np.ndarray:
    try:
        return s.dataset.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(s.dataset, "file_meta", None), "TransferSyntaxUID", None)
        hint = (
            f"; {syntax.name} files need a decoder: pip install pylibjpeg pylibjpeg-libjpeg (or gdcm)"
            if syntax is not None and syntax.is_compressed
            else ""
        )
        raise InputError(s.header.path, f"pixel data cannot be decoded ({type(exc).__name__}: {exc}){hint}") from exc


def _hu(s: _Slice) -> tuple[np.ndarray, int, bool]:
    """One slice as int16 HU = raw × RescaleSlope + RescaleIntercept (or the Modality LUT).

    Also returns how many voxels had to be clipped to the int16 range, and whether a rescale was present.
    """
    from pydicom.pixels import apply_modality_lut

    ds = s.dataset
    hu, clipped = int16_hu(apply_modality_lut(_raw_pixels(s), ds))
    rescaled = "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds
    return hu, clipped, rescaled


def _z_spacing(z: np.ndarray, fallback: float | None) -> float:
    """The usual distance between neighbouring slices: the mode of the steps, not SliceThickness."""
    if z.size < 2:
        return float(fallback) if fallback and fallback > 0 else 1.0
    steps = np.diff(z)
    binned = np.round(steps, 2)
    values, counts = np.unique(binned, return_counts=True)
    mode = values[np.argmax(counts)]
    return float(np.median(steps[binned == mode]))


def _report_gaps(
    z: np.ndarray, spacing: float, slices: Sequence[_Slice], where: Path, problems: ProblemLog, scan_id: str | None
) -> None:
    steps = np.diff(z)
    tolerance = max(GAP_TOLERANCE_MM, GAP_TOLERANCE_REL * spacing)
    for i in np.flatnonzero(np.abs(steps - spacing) > tolerance):
        missing = round(steps[i] / spacing) - 1 if spacing > 0 else 0
        hint = f"; about {missing} slice(s) missing" if missing >= 1 else ""
        problems.report(
            slices[i + 1].header.path,
            f"irregular slice spacing: {steps[i]:.2f} mm between z={z[i]:.2f} and z={z[i + 1]:.2f} "
            f"(usual step {spacing:.2f} mm){hint}",
            scan_id=scan_id,
            severity="warning",
        )


def display_axes(orientation: tuple[float, ...]) -> tuple[bool, bool, bool]:
    """How to turn a slice into display orientation: (transpose, flip rows, flip columns).

    Display orientation is rows anterior → posterior and columns patient right → left, i.e. increasing
    row index follows +y and increasing column index follows +x of the DICOM patient system (LPS).
    """
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    transpose = abs(row_dir[1]) > abs(row_dir[0])  # columns run along y: the image is stored transposed
    if transpose:
        row_dir, col_dir = col_dir, row_dir
    return transpose, bool(col_dir[1] < 0), bool(row_dir[0] < 0)


def _series_files(
    source: str | Path | Sequence[str | Path], recursive: bool, problems: ProblemLog, scan_id: str | None
) -> tuple[Path, list[Path]]:
    """The folder to name in messages and the files to read, from a folder or an explicit list."""
    if not isinstance(source, (str, Path)):
        files = [Path(p) for p in source]
        if not files:
            raise InputError("<no files>", "no DICOM files given")
        return files[0].parent, files
    where = Path(source)
    if not where.is_dir():
        raise InputError(where, "not a folder of DICOM files")
    files = dicom_files(where, recursive=recursive, problems=problems, scan_id=scan_id)
    if not files:
        raise InputError(
            where, "empty folder: no files to read" + ("" if recursive else " (subfolders are not searched)")
        )
    return where, files


def _parse_series(files: list[Path], where: Path, problems: ProblemLog, scan_id: str | None) -> list[_Slice]:
    """The slices of the one axial CT series among ``files``; unreadable files are reported and skipped."""
    parsed: list[tuple[DicomHeader, Dataset]] = []
    for path in files:
        try:
            item = _read(path, with_pixels=True)
        except InputError as exc:
            problems.report(exc.path, exc.reason, scan_id=scan_id)
            continue
        if item is not None:
            parsed.append(item)
    if not parsed:
        raise InputError(where, "no DICOM files in folder")
    return _select(parsed, where, problems, scan_id)


def _decode(
    slices: list[_Slice], where: Path, problems: ProblemLog, scan_id: str | None
) -> tuple[np.ndarray, list[_Slice]]:
    """The int16 HU volume of the slices that decode, and those slices; a slice that fails is reported."""
    first = slices[0].header
    hu = np.empty((len(slices), first.rows, first.columns), dtype=np.int16)
    kept: list[_Slice] = []
    clipped = 0
    missing_rescale = False
    for s in slices:
        try:
            plane, n_clipped, rescaled = _hu(s)
        except InputError as exc:
            problems.report(exc.path, exc.reason, scan_id=scan_id)
            continue
        hu[len(kept)] = plane
        kept.append(s)
        clipped += n_clipped
        missing_rescale |= not rescaled
    if not kept:
        raise InputError(where, "no CT image in the series could be decoded")
    if missing_rescale:
        problems.report(
            where, "no RescaleSlope/RescaleIntercept: stored values taken as HU", scan_id=scan_id, severity="warning"
        )
    report_clipped(problems, where, clipped, scan_id)  # once for the series, not once per slice
    return hu[: len(kept)], kept


def _to_display(
    hu: np.ndarray, first: DicomHeader, where: Path, problems: ProblemLog, scan_id: str | None
) -> tuple[np.ndarray, float, float]:
    """The volume in display orientation (see :func:`display_axes`) and its (row, column) pixel spacing."""
    transpose, flip_rows, flip_cols = display_axes(first.orientation or (1, 0, 0, 0, 1, 0))
    row_mm, col_mm = first.pixel_spacing or (1.0, 1.0)
    if first.pixel_spacing is None:
        problems.report(where, "no PixelSpacing: 1 mm assumed", scan_id=scan_id, severity="warning")
    if transpose:
        hu = hu.transpose(0, 2, 1)
        row_mm, col_mm = col_mm, row_mm
    if flip_rows:
        hu = hu[:, ::-1, :]
    if flip_cols:
        hu = hu[:, :, ::-1]
    return hu, row_mm, col_mm


def read_ct_series(
    source: str | Path | Sequence[str | Path],
    *,
    scan_id: str | None = None,
    patient_id: str | None = None,
    problems: ProblemLog | None = None,
    recursive: bool = False,
) -> Scan:
    """Read the one axial CT series in a folder (or list of files) into a :class:`Scan`.

    Returns an int16 HU volume ``[Z, Y, X]`` in increasing z (inferior → superior), in display orientation,
    with ``z_mm`` the real slice positions along the normal. ``scan_id`` defaults to the SeriesInstanceUID
    and ``patient_id`` to the PatientID tag. Raises :class:`InputError` when no usable series is there.
    """
    problems = problems if problems is not None else ProblemLog()
    where, files = _series_files(source, recursive, problems, scan_id)
    slices = sorted(_parse_series(files, where, problems, scan_id), key=lambda s: s.z)
    slices = _drop_duplicates(slices, problems, scan_id)
    hu, kept = _decode(slices, where, problems, scan_id)
    first = slices[0].header
    hu, row_mm, col_mm = _to_display(hu, first, where, problems, scan_id)

    z = np.array([s.z for s in kept])
    dz = _z_spacing(z, first.slice_thickness)
    _report_gaps(z, dz, kept, where, problems, scan_id)
    tilt = first.tilt_deg or 0.0
    if tilt > 0.5:
        problems.report(
            where,
            f"gantry tilt of {tilt:.1f}°: slices are kept as acquired (sheared), not resampled",
            scan_id=scan_id,
            severity="warning",
        )

    return Scan(
        scan_id=scan_id or first.series_uid,
        patient_id=patient_id or first.patient_id,
        hu=np.ascontiguousarray(hu),
        spacing=(dz, float(row_mm), float(col_mm)),
        z_mm=z,
        meta={
            "source": str(where),
            "series_uid": first.series_uid,
            "study_uid": first.study_uid,
            "series_description": first.series_description,
            "slice_thickness": first.slice_thickness,
            "gantry_tilt_deg": round(tilt, 3),
            "orientation": list(first.orientation or ()),
        },
    )
