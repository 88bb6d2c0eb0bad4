"""Writing an HU volume as a CT series that real DICOM software accepts, for synthetic cohorts and tests.

The files look like a scanner export: CT Image Storage with proper UIDs, ImageOrientationPatient and
ImagePositionPatient, PixelSpacing, RescaleSlope 1 / RescaleIntercept −1024 and 16-bit pixels. File names
and InstanceNumbers are a shuffled permutation of the slice order, so a reader that sorts by file name or
InstanceNumber instead of position gets the volume wrong and the round-trip tests catch it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from clearbench.scans.dicom_series import display_axes

RESCALE_INTERCEPT = -1024.0
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _ds(value: float) -> str:
    """A decimal string at the full precision DICOM allows (16 characters), so geometry survives the trip."""
    return format_number_as_ds(float(value))


def stable_uid(*parts: object) -> str:
    """A UID that is the same every time for the same parts, so that synthetic cohorts are reproducible."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


@dataclass(frozen=True)
class SeriesIds:
    """Who and what a series belongs to."""

    patient_id: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    series_number: int = 1
    series_description: str = ""
    study_date: str = "20080918"


def _base_dataset(ids: SeriesIds, sop_class: str, sop_uid: str, modality: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Modality = modality
    ds.PatientID = ids.patient_id
    ds.PatientName = ids.patient_id
    ds.StudyInstanceUID = ids.study_uid
    ds.SeriesInstanceUID = ids.series_uid
    ds.FrameOfReferenceUID = ids.frame_of_reference_uid
    ds.StudyDate = ids.study_date
    ds.SeriesNumber = ids.series_number
    ds.SeriesDescription = ids.series_description
    ds.StudyID = "NA"
    ds.Manufacturer = "clearbench synthetic"
    return ds


def write_ct_series(
    folder: Path,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    ids: SeriesIds,
    *,
    rng: np.random.Generator,
    z0: float = 0.0,
    orientation: Sequence[float] = AXIAL,
    unsigned: bool = True,
    name_pattern: str = "1-{:03d}.dcm",
) -> list[Path]:
    """Write ``hu`` (int16 ``[Z, Y, X]``, increasing z, display orientation) as one CT file per slice.

    Slice ``k`` lies at z = ``z0 + k * spacing[0]``. ``orientation`` may be any axis-aligned axial
    ImageOrientationPatient; the pixels are stored so that a correct reader turns them back into ``hu``.
    ``unsigned`` stores raw = HU + 1024 as uint16 (PixelRepresentation 0), else as int16.
    Returns the paths in slice order (inferior → superior).
    """
    folder.mkdir(parents=True, exist_ok=True)
    n, height, width = hu.shape
    dz, dy, dx = (float(s) for s in spacing)
    transpose, flip_rows, flip_cols = display_axes(tuple(orientation))
    raw = hu.astype(np.int32) - int(RESCALE_INTERCEPT)
    if unsigned and raw.min() < 0:
        raise ValueError(f"HU below {RESCALE_INTERCEPT:.0f} cannot be stored as unsigned raw values")
    dtype = np.uint16 if unsigned else np.int16
    # The position of the first stored pixel: the display corner that the stored (0, 0) pixel comes from.
    x0, y0 = -dx * (width - 1) / 2, -dy * (height - 1) / 2
    corner_x = x0 + (dx * (width - 1) if flip_cols else 0.0)
    corner_y = y0 + (dy * (height - 1) if flip_rows else 0.0)
    row_mm, col_mm = (dx, dy) if transpose else (dy, dx)

    numbers = rng.permutation(n) + 1  # file name and InstanceNumber of slice k, deliberately not in z order
    paths: list[Path] = []
    for k in range(n):
        plane = raw[k]
        if flip_cols:
            plane = plane[:, ::-1]
        if flip_rows:
            plane = plane[::-1, :]
        if transpose:
            plane = plane.T
        plane = np.ascontiguousarray(plane.astype(dtype))
        number = int(numbers[k])
        sop_uid = stable_uid(ids.series_uid, number)
        ds = _base_dataset(ids, CTImageStorage, sop_uid, "CT")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = number
        z = z0 + k * dz
        ds.ImageOrientationPatient = [_ds(v) for v in orientation]
        ds.ImagePositionPatient = [_ds(corner_x), _ds(corner_y), _ds(z)]
        ds.SliceLocation = _ds(z)
        ds.SliceThickness = _ds(dz)
        ds.PixelSpacing = [_ds(row_mm), _ds(col_mm)]
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0 if unsigned else 1
        ds.RescaleSlope = "1"
        ds.RescaleIntercept = f"{RESCALE_INTERCEPT:g}"
        ds.RescaleType = "HU"
        ds.KVP = "120"
        ds.PixelData = plane.tobytes()
        path = folder / name_pattern.format(number)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_rtstruct(
    path: Path,
    ids: SeriesIds,
    referenced_series_uid: str,
    roi_name: str,
    contours: Sequence[np.ndarray],
) -> Path:
    """A minimal RTSTRUCT with one ROI of closed planar contours (each an ``(N, 3)`` array of mm points).

    It exists so that a patient folder holds a non-CT series beside the CT, as real NSCLC downloads do;
    readers must recognise it by its Modality tag and leave it out.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = _base_dataset(ids, RTStructureSetStorage, stable_uid(ids.series_uid, "rtstruct"), "RTSTRUCT")
    ds.StructureSetLabel = "synthetic"
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = referenced_series_uid
    ref_study = Dataset()
    ref_study.ReferencedSOPInstanceUID = ids.study_uid
    ref_study.RTReferencedSeriesSequence = DicomSequence([ref_series])
    ref_frame = Dataset()
    ref_frame.FrameOfReferenceUID = ids.frame_of_reference_uid
    ref_frame.RTReferencedStudySequence = DicomSequence([ref_study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([ref_frame])
    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = ids.frame_of_reference_uid
    roi.ROIName = roi_name
    ds.StructureSetROISequence = DicomSequence([roi])
    items = []
    for points in contours:
        contour = Dataset()
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.NumberOfContourPoints = len(points)
        contour.ContourData = [f"{v:.2f}" for v in np.asarray(points, dtype=float).ravel()]
        items.append(contour)
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 1
    roi_contour.ROIDisplayColor = [255, 0, 0]
    roi_contour.ContourSequence = DicomSequence(items)
    ds.ROIContourSequence = DicomSequence([roi_contour])
    observation = Dataset()
    observation.ObservationNumber = 1
    observation.ReferencedROINumber = 1
    observation.RTROIInterpretedType = "GTV"
    ds.RTROIObservationsSequence = DicomSequence([observation])
    ds.save_as(path, enforce_file_format=True)
    return path
