"""One int16 HU conversion (clearbench.scans.hu) for every reader: rounded, clipped, and the clipping reported."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from clearbench.problems import ProblemLog
from clearbench.scans.hu import int16_hu, to_int16_hu

PACKAGE = Path(__file__).resolve().parents[1] / "clearbench"


def test_values_in_range_are_rounded_and_cast() -> None:
    hu, clipped = int16_hu(np.array([-1000.4, 0.5, 1.5, 2999.6]))
    assert hu.dtype == np.int16 and hu.tolist() == [-1000, 0, 2, 3000] and clipped == 0


def test_integers_in_range_are_cast_without_a_float_copy() -> None:
    raw = np.array([[-1024, 3071]], dtype=np.int32)
    hu, clipped = int16_hu(raw)
    assert hu.dtype == np.int16 and hu.tolist() == [[-1024, 3071]] and clipped == 0
    same = np.array([1, 2], dtype=np.int16)
    assert int16_hu(same)[0] is same


def test_out_of_range_values_are_clipped_and_counted() -> None:
    hu, clipped = int16_hu(np.array([40000, -40000, 5], dtype=np.int64))
    assert hu.tolist() == [32767, -32768, 5] and clipped == 2
    hu, clipped = int16_hu(np.array([32767.4, 32767.6, -32768.6]))
    assert hu.tolist() == [32767, 32767, -32768] and clipped == 2


def test_the_clipping_is_one_warning_naming_the_file_and_scan() -> None:
    log = ProblemLog()
    to_int16_hu(np.array([1e6, 2e6, 0.0]), "/data/a.npz", log, "a")
    assert [(p.path, p.scan_id, p.severity, p.reason) for p in log.problems] == [
        ("/data/a.npz", "a", "warning", "2 voxel(s) outside the int16 HU range were clipped")
    ]
    to_int16_hu(np.array([1.0]), "/data/b.npz", log, "b")
    assert len(log.problems) == 1


def _own_int16_conversion(node: ast.AST) -> bool:
    """``np.iinfo(...)``, or ``<something clipped>.astype(np.int16)``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    if node.func.attr == "iinfo":
        return True
    target = ast.unparse(node.args[0]) if node.args else ""
    return node.func.attr == "astype" and target == "np.int16" and "clip" in ast.unparse(node.func.value)


def test_no_reader_casts_to_int16_on_its_own() -> None:
    """A second clip-and-cast would drift again (one of three once clipped silently): none outside scans/hu.py."""
    found = [
        f"{path.name}:{node.lineno}"
        for path in (PACKAGE / "scans").glob("*.py")  # the readers; synth/ paints HU on purpose
        if path.name != "hu.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if _own_int16_conversion(node)
    ]
    assert found == []
