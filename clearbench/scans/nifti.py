"""``nifti``: the user's own cohort as NIfTI volumes (``.nii`` / ``.nii.gz``) plus ``labels.csv``.

Layout::

    ROOT/
      labels.csv            scan_id,patient_id,<label columns...>
      case001.nii.gz        scan_id = the file name without .nii/.nii.gz; subfolders are searched too
      ...

The volume is reoriented from whatever its affine says to the Scan's convention: rows anterior →
posterior, columns patient right → left, z increasing inferior → superior. Spacing comes from the header
zooms, HU from the data after the header's scl_slope/scl_inter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clearbench.errors import InputError
from clearbench.problems import ProblemLog
from clearbench.scans.base import ScanRecord
from clearbench.scans.cohort import CohortReader
from clearbench.scans.hu import to_int16_hu
from clearbench.scans.scan import Scan
from clearbench.scans.walk import files_under

# Voxels that are NaN (outside the field of view in some exports) become air.
NAN_FILL_HU = -1024
SUFFIXES = (".nii.gz", ".nii")


def nifti_scan_id(path: Path) -> str | None:
    """``case001`` for ``case001.nii.gz`` or ``case001.nii``; ``None`` for other files."""
    for suffix in SUFFIXES:
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def read_nifti_ct(path: Path, scan_id: str, patient_id: str, problems: ProblemLog) -> Scan:
    """Decode one NIfTI CT volume into a Scan in display orientation; raise InputError when unusable."""
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

    try:
        img = nib.load(str(path))
        if not isinstance(img, SpatialImage):
            raise InputError(path, f"not an image volume but a {type(img).__name__}")
        if len(img.shape) == 4 and img.shape[3] == 1:
            img = img.slicer[..., 0]
        if len(img.shape) != 3:
            raise InputError(path, f"expected a 3-D volume, got shape {tuple(img.shape)}")
        canonical = nib.as_closest_canonical(img)
        data = np.asanyarray(canonical.dataobj)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc

    hu = _int16_hu(data, path, scan_id, problems)
    if hu.min() >= 0 and hu.max() > 1500:
        problems.report(
            path,
            "no negative values: this looks like raw CT numbers rather than HU (is an intercept of -1024 missing?)",
            scan_id=scan_id,
            severity="warning",
        )

    # Canonical (RAS+) voxel axes point to the patient's right, anterior and superior. Display order
    # [Z, Y, X] is z = +k (superior), rows = -j (anterior → posterior), columns = -i (right → left).
    hu = hu.transpose(2, 1, 0)[:, ::-1, ::-1]
    zooms = [float(z) for z in canonical.header.get_zooms()[:3]]
    affine = canonical.affine
    z_mm = affine[2, 3] + affine[2, 2] * np.arange(hu.shape[0], dtype=np.float64)
    if hu.shape[0] > 1 and not np.all(np.diff(z_mm) > 0):
        z_mm = np.arange(hu.shape[0], dtype=np.float64) * zooms[2]
    return Scan(
        scan_id=scan_id,
        patient_id=patient_id,
        hu=np.ascontiguousarray(hu),
        spacing=(zooms[2], zooms[1], zooms[0]),
        z_mm=z_mm,
        meta={"source": str(path), "orientation": "".join(nib.aff2axcodes(img.affine))},
    )


def _int16_hu(data: np.ndarray, path: Path, scan_id: str, problems: ProblemLog) -> np.ndarray:
    """The volume as int16 HU, with NaN voxels filled and out-of-range ones clipped (each reported once).

    Integer data (the usual CT export: int16 without scaling, which nibabel hands over unscaled) is cast
    directly; only scaled or float data goes through float64, whose temporaries cost ten times the volume.
    """
    if not np.issubdtype(data.dtype, np.integer):
        finite = np.isfinite(data)
        if not finite.any():
            raise InputError(path, "the volume holds no finite value (all NaN or infinite)")
        if not finite.all():
            problems.report(
                path,
                f"{int((~finite).sum())} NaN/infinite voxel(s) set to {NAN_FILL_HU} HU",
                scan_id=scan_id,
                severity="warning",
            )
            data = np.where(finite, data, NAN_FILL_HU)
    return to_int16_hu(data, path, problems, scan_id)


class NiftiCohortReader(CohortReader):
    name = "nifti"
    summary = "your own cohort: .nii/.nii.gz CT volumes under the root, plus labels.csv"

    def _find_scans(self) -> dict[str, Path]:
        scans: dict[str, Path] = {}
        for path in files_under(self.root, self.problems):
            scan_id = nifti_scan_id(path)
            if scan_id is None:
                continue
            if scan_id in scans:
                self.problems.report(
                    path, f"scan id '{scan_id}' is already used by {scans[scan_id]}; file skipped", scan_id=scan_id
                )
                continue
            scans[scan_id] = path
        return scans

    def load(self, record: ScanRecord) -> Scan:
        scan = read_nifti_ct(record.source, record.scan_id, record.patient_id, self.problems)
        scan.split = record.split
        return scan
