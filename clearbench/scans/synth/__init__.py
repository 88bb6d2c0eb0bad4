"""Synthetic cohorts: phantom CT scans written in each dataset's real on-disk layout.

No real dataset can be downloaded where clearbench is tested, so these writers are the fixtures for
every test and for the demo. Each ``clearbench.scans.synth.<dataset>`` module has
``write_cohort(out, n_scans, seed, *, size=64) -> Path`` and renders its scans with
:mod:`clearbench.scans.synth.phantom`, whose lesions and abnormalities are the known ground truth.
"""

from __future__ import annotations

from pathlib import Path

from clearbench.errors import ClearbenchError


def prepare_root(
    out: str | Path, n_scans: int, size: int, *, dataset: str, markers: tuple[str, ...], min_size: int = 32
) -> Path:
    """Check a writer's request and create its root; never write over a cohort already there.

    ``markers`` are glob patterns of files that show ``out`` already holds a cohort of this dataset.
    ``min_size`` is the smallest slice at which the writer's findings are still visible.
    """
    out = Path(out)
    if n_scans < 1:
        raise ClearbenchError(f"--scans must be at least 1 (got {n_scans})")
    if size < min_size:
        raise ClearbenchError(f"--size must be at least {min_size} px for the findings to be visible (got {size})")
    if out.is_dir() and any(next(out.glob(pattern), None) is not None for pattern in markers):
        raise ClearbenchError(f"{out}: already holds a {dataset} cohort; choose an empty folder or remove it")
    out.mkdir(parents=True, exist_ok=True)
    return out
