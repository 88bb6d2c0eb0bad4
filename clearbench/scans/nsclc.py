"""``nsclc``: NSCLC-Radiomics (TCIA "Lung1", 422 patients) as NBIA or IDC downloads lay it out.

Typical layout (the manifest folder and every folder name below the patient vary by downloader)::

    manifest-1603198545583/NSCLC-Radiomics/
      LUNG1-001/09-18-2008-StudyID-NA-69331/
        0.000000-NA-82046/1-001.dcm ...          CT
        3.000000-NA-78236/1-1.dcm                RTSTRUCT
        300.000000-Segmentation-9.554/1-1.dcm    SEG
    NSCLC-Radiomics-Lung1.clinical-version3-Oct-2019.csv   anywhere under the root

Series are told apart by their tags, never by folder names: every folder is probed with the header of
one file, and the folder whose images are axial CT is the patient's scan. The patient is the PatientID
tag. The scan-level label is ``stage_high`` (1.0 for stage III/IV, 0.0 for I/II) from the clinical CSV's
``Overall.Stage``; patients whose stage is NA keep the scan but get ``None``, and each is reported.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from clearbench.problems import ProblemLog
from clearbench.scans.base import DatasetReader, ScanRecord
from clearbench.scans.dicom_series import DicomHeader, probe_folder, read_ct_series
from clearbench.scans.scan import Scan

CLINICAL_GLOB = "*Lung1.clinical*.csv"
CLINICAL_COLUMNS = (
    "PatientID",
    "age",
    "clinical.T.Stage",
    "Clinical.N.Stage",
    "Clinical.M.Stage",
    "Overall.Stage",
    "Histology",
    "gender",
    "Survival.time",
    "deadstatus.event",
)
STAGE_COLUMN = "Overall.Stage"
NA_VALUES = frozenset({"", "NA", "NAN", "N/A", "NONE", "NULL"})
_STAGE = re.compile(r"^(?:STAGE\s*)?(IV|III|II|I)([ABC]?)$")
_PATIENT_FOLDER = re.compile(r"^LUNG1-\d+$", re.IGNORECASE)
# How many patient ids one summary line lists before it says "and N more".
_LIST_AT_MOST = 10


def normalise_stage(value: str | None) -> str | None:
    """The canonical stage ("I", "II", "IIIa", "IIIb", "IV", ...) or ``None`` for NA.

    The CSV mixes case ("IIIa", "IIIB"); the canonical form keeps the Roman numeral upper-case and the
    sub-stage lower-case. Raises ValueError for anything that is not an AJCC overall stage.
    """
    text = (value or "").strip()
    if text.upper() in NA_VALUES:
        return None
    match = _STAGE.match(text.upper().replace(" ", ""))
    if match is None:
        raise ValueError(f"'{text}' is not a stage (expected I, II, IIIa, IIIb or IV)")
    return match.group(1) + match.group(2).lower()


def stage_high(stage: str | None) -> float | None:
    """1.0 for stage III or IV, 0.0 for stage I or II, ``None`` when the stage is unknown."""
    if stage is None:
        return None
    return 1.0 if stage.rstrip("abc") in ("III", "IV") else 0.0


def _short_list(ids: list[str]) -> str:
    shown = ", ".join(ids[:_LIST_AT_MOST])
    return shown + (f" and {len(ids) - _LIST_AT_MOST} more" if len(ids) > _LIST_AT_MOST else "")


def find_clinical_csv(root: Path, problems: ProblemLog) -> Path | None:
    """The clinical CSV under ``root`` (glob ``*Lung1.clinical*.csv``); the last by name when several match."""
    found = sorted(root.rglob(CLINICAL_GLOB))
    if not found:
        problems.report(
            root,
            f"no clinical CSV matching {CLINICAL_GLOB} under the root; stage labels are unknown "
            "(download NSCLC-Radiomics-Lung1.clinical-version3-Oct-2019.csv from TCIA into the root)",
        )
        return None
    if len(found) > 1:
        problems.report(
            found[-1],
            f"{len(found)} clinical CSVs match {CLINICAL_GLOB}; using this one (the last by name)",
            severity="warning",
        )
    return found[-1]


def read_clinical_csv(path: Path, problems: ProblemLog) -> dict[str, dict[str, str]]:
    """The clinical rows keyed by PatientID, with values as the CSV spells them."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            reader.fieldnames = header
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.report(path, f"cannot read the clinical CSV ({exc})")
        return {}
    missing = [c for c in ("PatientID", STAGE_COLUMN) if c not in header]
    if missing:
        problems.report(
            path,
            f"missing required column(s) {', '.join(missing)} (found: {', '.join(header) or 'no header'}); "
            f"expected the TCIA header {','.join(CLINICAL_COLUMNS)}",
        )
        return {}
    table: dict[str, dict[str, str]] = {}
    for line, row in enumerate(rows, start=2):
        pid = (row.get("PatientID") or "").strip()
        if not pid:
            continue
        if pid in table:
            problems.report(
                path, f"line {line}: patient {pid} has a second row; the first is used", scan_id=pid, severity="warning"
            )
            continue
        table[pid] = {k: (v or "").strip() for k, v in row.items() if k is not None}
        table[pid]["_line"] = str(line)
    return table


class NSCLCReader(DatasetReader):
    name = "nsclc"
    summary = "NSCLC-Radiomics (TCIA Lung1): one CT series per patient under LUNG1-xxx/, plus the clinical CSV"
    default_windows = ("lung",)
    label_names = ("stage_high",)

    def _series_folders(self) -> dict[str, list[tuple[Path, DicomHeader, int]]]:
        """Axial CT series folders per patient, from one header per folder."""
        per_patient: dict[str, list[tuple[Path, DicomHeader, int]]] = defaultdict(list)
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if not any(not f.startswith(".") and not f.lower().endswith(".csv") for f in filenames):
                continue
            folder = Path(dirpath)
            header, n_files = probe_folder(folder)
            if header is None or header.modality != "CT" or header.is_localizer or not header.is_axial:
                continue
            patient_folders = [p for p in folder.relative_to(self.root).parts if _PATIENT_FOLDER.match(p)]
            pid = header.patient_id or (patient_folders[-1] if patient_folders else folder.name)
            if len(patient_folders) > 1:
                self.problems.report(
                    folder,
                    f"series of patient {pid} is nested inside the folder of {patient_folders[0]}; move it up beside the other patients",
                    scan_id=pid,
                    severity="warning",
                )
            elif patient_folders and patient_folders[-1].upper() != pid.upper():
                self.problems.report(
                    folder,
                    f"PatientID tag {pid} differs from the folder name {patient_folders[-1]}; the tag is used",
                    scan_id=pid,
                    severity="warning",
                )
            per_patient[pid].append((folder, header, n_files))
        return per_patient

    def _index(self) -> Iterable[ScanRecord]:
        csv_path = find_clinical_csv(self.root, self.problems)
        clinical = read_clinical_csv(csv_path, self.problems) if csv_path is not None else {}
        series = self._series_folders()
        if not series:
            self.problems.report(
                self.root, "no axial CT series found under the root (expected LUNG1-xxx/<study>/<series>/*.dcm)"
            )

        no_images = sorted(set(clinical) - set(series))
        if no_images and csv_path is not None:
            self.problems.report(
                csv_path,
                f"{len(no_images)} patient(s) in the clinical CSV have no CT under the root: {_short_list(no_images)}",
            )
        na_patients: list[str] = []
        for pid in sorted(series):
            folders = sorted(series[pid], key=lambda item: (-item[2], str(item[0])))
            folder, header, n_files = folders[0]
            if len(folders) > 1:
                others = ", ".join(str(f) for f, _, _ in folders[1:])
                self.problems.report(
                    folder,
                    f"patient {pid} has {len(folders)} CT series; using this one ({n_files} files), not {others}",
                    scan_id=pid,
                    severity="warning",
                )
            row = clinical.get(pid)
            stage: str | None = None
            raw_stage: str | None = None
            if row is None:
                if csv_path is not None:
                    self.problems.report(
                        folder, f"patient {pid} has no row in {csv_path.name}; stage unknown", scan_id=pid
                    )
            elif csv_path is not None:  # always: the clinical rows come from that file
                raw_stage = row.get(STAGE_COLUMN, "")
                try:
                    stage = normalise_stage(raw_stage)
                except ValueError as exc:
                    self.problems.report(
                        csv_path, f"line {row['_line']}: patient {pid}: {exc}; stage unknown", scan_id=pid
                    )
                else:
                    if stage is None:
                        na_patients.append(pid)
                        self.problems.report(
                            csv_path,
                            f"line {row['_line']}: patient {pid} has {STAGE_COLUMN} NA; excluded from stage_high",
                            scan_id=pid,
                            severity="warning",
                        )
            yield ScanRecord(
                scan_id=pid,
                patient_id=pid,
                source=folder,
                labels={"stage_high": stage_high(stage)},
                meta={
                    "stage": stage,
                    "stage_raw": raw_stage,
                    "series_uid": header.series_uid,
                    "n_files": n_files,
                    "clinical": {k: v for k, v in (row or {}).items() if k != "_line"},
                },
            )
        if len(na_patients) > 1:
            self.problems.report(
                csv_path or self.root,
                f"{len(na_patients)} patients excluded from stage_high for stage NA: {_short_list(na_patients)}",
                severity="info",
            )

    def load(self, record: ScanRecord) -> Scan:
        scan = read_ct_series(
            record.source, scan_id=record.scan_id, patient_id=record.patient_id, problems=self.problems
        )
        scan.meta["stage"] = record.meta.get("stage")
        return scan
