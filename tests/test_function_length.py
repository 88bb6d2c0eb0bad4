"""Every function in clearbench/ fits in 80 lines, so that a reader sees one job at a time.

Lines are counted from the ``def`` line to the function's last line, docstring, signature and nested
functions included (a nested function counts for itself and inside its parent). A function that may stay
longer is named in ``ALLOWED`` with the reason; an entry that no longer needs to be there fails too, so the
list cannot go stale.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "clearbench"
MAX_LINES = 80

# "path relative to clearbench/::qualified name" -> why it may be longer.
ALLOWED: dict[str, str] = {}


def _functions(tree: ast.Module) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method with its qualified name (``Class.method``, ``outer.inner``)."""
    found: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((prefix + child.name, child))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def _lengths() -> dict[str, int]:
    lengths = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, node in _functions(tree):
            assert node.end_lineno is not None
            lengths[f"{path.relative_to(PACKAGE).as_posix()}::{name}"] = node.end_lineno - node.lineno + 1
    return lengths


def test_the_walk_finds_methods_and_nested_functions() -> None:
    tree = ast.parse("class A:\n    def m(self):\n        def inner():\n            pass\n\nasync def f():\n    pass\n")
    assert [name for name, _ in _functions(tree)] == ["A.m", "A.m.inner", "f"]


def test_every_function_fits_in_80_lines() -> None:
    lengths = _lengths()
    assert len(lengths) > 500  # the walk reached the package
    too_long = {name: n for name, n in lengths.items() if n > MAX_LINES and name not in ALLOWED}
    assert not too_long, (
        f"functions over {MAX_LINES} lines (split them, or name them in ALLOWED with the reason): "
        + ", ".join(f"{name} ({n})" for name, n in sorted(too_long.items(), key=lambda kv: -kv[1]))
    )


def test_every_allowed_exception_is_still_needed() -> None:
    lengths = _lengths()
    stale = [name for name in ALLOWED if lengths.get(name, 0) <= MAX_LINES]
    assert not stale, f"no longer over {MAX_LINES} lines (or gone): remove from ALLOWED: {', '.join(stale)}"
