"""The dataset registry: built-in readers plus those that packages add through entry points.

A package adds a reader by declaring, in its ``pyproject.toml``::

    [project.entry-points."clearbench.datasets"]
    mycohort = "mypackage.reader:MyCohortReader"

where ``MyCohortReader`` subclasses :class:`clearbench.scans.base.DatasetReader`.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path

from clearbench.config import dataset_root
from clearbench.errors import ClearbenchError
from clearbench.problems import ProblemLog
from clearbench.scans.base import DatasetReader

ENTRY_POINT_GROUP = "clearbench.datasets"

# Built-in readers, imported only when used.
BUILTIN: dict[str, str] = {
    "deeplesion": "clearbench.scans.deeplesion:DeepLesionReader",
    "radchest": "clearbench.scans.radchest:RadChestReader",
    "nsclc": "clearbench.scans.nsclc:NSCLCReader",
    "dicom": "clearbench.scans.dicom:DicomCohortReader",
    "nifti": "clearbench.scans.nifti:NiftiCohortReader",
}


def _load_target(target: str) -> type[DatasetReader]:
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


def dataset_targets() -> dict[str, str]:
    """Every known dataset name mapped to its ``module:Class``; plugins may add names, not replace."""
    targets = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        targets.setdefault(ep.name, ep.value)
    return targets


def reader_class(name: str) -> type[DatasetReader]:
    targets = dataset_targets()
    if name not in targets:
        raise ClearbenchError(f"unknown dataset '{name}': known datasets are {', '.join(sorted(targets))}")
    cls = _load_target(targets[name])
    if not (isinstance(cls, type) and issubclass(cls, DatasetReader)):
        raise ClearbenchError(f"dataset '{name}' ({targets[name]}) is not a DatasetReader subclass")
    return cls


def open_dataset(name: str, root: str | Path | None = None, problems: ProblemLog | None = None) -> DatasetReader:
    """A reader for dataset ``name`` at ``root`` (or the root set in ``CLEARBENCH_HOME/config.toml``)."""
    cls = reader_class(name)
    return cls(dataset_root(name, root), problems=problems)
