"""HU windows: the intensity ranges that make one kind of tissue visible.

Windows are applied on the fly from the int16 HU volume, so a slice decoded once can be shown to an
encoder in as many windows as a task asks for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clearbench.errors import ClearbenchError


@dataclass(frozen=True)
class Window:
    """A named HU range; values below ``lo`` map to 0 and above ``hi`` to 1."""

    name: str
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not self.hi > self.lo:
            raise ClearbenchError(f"window '{self.name}': upper bound {self.hi} must exceed lower bound {self.lo}")


# The DeepLesion windows the paper uses: abdomen (soft tissue) and lung.
WINDOWS: dict[str, Window] = {
    "abdomen": Window("abdomen", -175.0, 275.0),
    "lung": Window("lung", -1500.0, 500.0),
}


def get_window(spec: str | Window) -> Window:
    """A window by name (``abdomen``, ``lung``) or as ``name:lo:hi`` for a custom range."""
    if isinstance(spec, Window):
        return spec
    if spec in WINDOWS:
        return WINDOWS[spec]
    name, *bounds = spec.split(":")
    if len(bounds) == 2 and all(_is_number(b) for b in bounds):
        return Window(name, float(bounds[0]), float(bounds[1]))
    raise ClearbenchError(
        f"unknown window '{spec}': use one of {', '.join(WINDOWS)} or give a custom one as name:lo:hi"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def apply_window(hu: np.ndarray, window: Window) -> np.ndarray:
    """Map HU values to float32 in [0, 1] through ``window``; works on any shape."""
    scale = np.float32(1.0 / (window.hi - window.lo))
    out = (hu.astype(np.float32) - np.float32(window.lo)) * scale
    return np.clip(out, 0.0, 1.0, out=out)
