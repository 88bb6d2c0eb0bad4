"""Run a synthetic writer while keeping every volume the phantom rendered for it.

The round-trip tests compare what a reader decodes with these exact pixels, so that "HU within ±1"
is checked against the truth rather than against the writer's own files.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest


def write_and_capture(writer: ModuleType, out: Path, n_scans: int, seed: int) -> tuple[Path, list[np.ndarray]]:
    """``writer.write_cohort(out, n_scans, seed)`` plus the rendered volumes, in the order written."""
    rendered: list[np.ndarray] = []
    real_render = writer.render

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        volume = real_render(*args, **kwargs)
        rendered.append(volume.copy())
        return volume

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(writer, "render", spy)
        root = writer.write_cohort(out, n_scans, seed=seed)
    return root, rendered
