"""The package imports in one direction only: each part of clearbench imports only from the layers below it.

The order is the one docs/ARCHITECTURE.md documents ("Layers"). Every ``import`` statement counts, at module
level, inside functions and under ``if TYPE_CHECKING:`` alike: a function-level import that goes upward is
still a cycle, only one that shows up later. A new top-level module or subpackage must be placed in
:data:`LAYERS`, so that where it sits is a decision and not an accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clearbench"

# Bottom to top. A part (a top-level module or subpackage of clearbench) may import itself and any part of
# a LOWER layer, never a part of its own layer or of one above.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "version", "progress"),
    ("problems", "settings", "runtime", "atomic"),
    ("config",),
    ("scans",),
    ("store", "mil", "encoders"),
    ("embedding", "tasks"),
    ("protocols",),
    ("pretraining", "explaining"),
    ("leaderboards",),
    ("htmlboard",),
    ("demo", "doctor"),
    ("cli",),
    ("__main__",),
]
RANK = {part: rank for rank, layer in enumerate(LAYERS) for part in layer}


def _module_name(path: Path) -> str:
    parts = ["clearbench", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    """The import statements under ``if TYPE_CHECKING:``: they never run, so they close no import cycle."""
    guarded: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded.update(
                n for stmt in node.body for n in ast.walk(stmt) if isinstance(n, ast.Import | ast.ImportFrom)
            )
    return guarded


def _imports(source: str, module: str, is_package: bool, *, runtime_only: bool = False) -> list[tuple[str, int]]:
    """Every clearbench module or package an import statement of ``module`` names, with its line.

    ``from clearbench.x import y`` names ``clearbench.x.y`` (resolved by the caller when y is a module)."""
    package = module if is_package else module.rsplit(".", 1)[0]
    tree = ast.parse(source)
    skip = _type_checking_only(tree) if runtime_only else set()
    found = []
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            where = ".".join([*base, node.module] if node.module else base)
            names = [f"{where}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(name, node.lineno) for name in names if name.split(".")[0] == "clearbench"]
    return found


def _part(module: str) -> str:
    """The layer unit of a clearbench module: its top-level module or subpackage (``""`` for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _source_imports(module: str, path: Path, *, runtime_only: bool = False) -> list[tuple[str, int]]:
    return _imports(path.read_text(), module, path.name == "__init__.py", runtime_only=runtime_only)


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The module an imported name lives in: ``clearbench.x.y`` is module y if that exists, else x's."""
    while name not in modules:
        name = name.rsplit(".", 1)[0]
    return name


def _upward(importer: str, names: list[str]) -> list[str]:
    """The modules of ``names`` that ``importer``'s part may not import: its own layer, a higher one, or the root."""
    own = _part(importer)
    modules = _modules()
    resolved = [_resolve(name, modules) for name in names]
    return [m for m in resolved if _part(m) != own and (not _part(m) or RANK[_part(m)] >= RANK[own])]


def test_every_part_has_a_layer() -> None:
    parts = {_part(module) for module in _modules()} - {""}
    assert parts - set(RANK) == set(), "place each new part of clearbench in LAYERS (and in docs/ARCHITECTURE.md)"
    assert set(RANK) - parts == set(), "LAYERS names a part that no longer exists"


def test_parts_import_only_lower_layers() -> None:
    found = []
    for module, path in _modules().items():
        if module == "clearbench":
            continue
        for name, line in _source_imports(module, path):
            found += [f"{path.relative_to(PACKAGE.parent)}:{line} imports {m}" for m in _upward(module, [name])]
    assert found == [], "imports that go sideways or upward:\n" + "\n".join(found)


def test_root_stays_lazy() -> None:
    """``import clearbench`` loads only the version; the rest of the API is named in a table, not imported."""
    assert [name for name, _ in _source_imports("clearbench", PACKAGE / "__init__.py")] == [
        "clearbench.version.__version__"
    ]


def test_no_import_cycle_between_modules() -> None:
    """Within a part too, no module imports one that imports it back (``TYPE_CHECKING`` imports aside)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        imports = _source_imports(module, path, runtime_only=True)
        graph[module] = {_resolve(name, modules) for name, _ in imports} - {module}
    cycles = [m for m in graph if _reaches(graph, m, m)]
    assert cycles == [], f"modules on an import cycle: {cycles}"


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen: set[str] = set()
    stack = list(graph[start])
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(graph[node])
    return False


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("from clearbench.protocols.splits import make_folds\n", ["clearbench.protocols.splits"]),
        ("def f():\n    import clearbench.explaining.hit_rate\n", ["clearbench.explaining.hit_rate"]),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from clearbench.cli import app\n",
            ["clearbench.cli"],
        ),
        ("from ..embedding import pipeline\n", ["clearbench.embedding.pipeline"]),
        ("from clearbench import run_task\n", ["clearbench"]),
        ("from clearbench.mil import heads\nfrom . import spec\nimport numpy\n", []),
    ],
)
def test_checker_flags_every_kind_of_upward_import(source: str, flagged: list[str]) -> None:
    """As if written in clearbench/tasks/card.py: upward, same-layer (embedding) and root imports are flagged,
    at module level, in a function or for type checking only; lower layers and the own part are not."""
    names = [name for name, _ in _imports(source, "clearbench.tasks.card", is_package=False)]
    assert _upward("clearbench.tasks.card", names) == flagged
