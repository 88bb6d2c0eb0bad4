"""The task registry: built-in cards, the user's own cards, and cards that packages add.

Cards are found in this order, and the first card of a name wins (a later one with the same name is
reported and ignored, so nobody silently changes what ``task1`` means):

1. built-in cards shipped in the wheel (``clearbench/_cards/tasks/*.toml``, the repository's ``tasks/``);
2. the user's cards in ``CLEARBENCH_HOME/tasks/*.toml``;
3. the entry-point group ``clearbench.tasks``. A package declares, in its ``pyproject.toml``::

       [project.entry-points."clearbench.tasks"]
       mytask = "mypackage.tasks:MYTASK"

   where ``MYTASK`` is a card as a dict, a path to a TOML card, a :class:`TaskCard`, or a function
   returning one of these.

A card that fails validation is reported with its file and field, and the others stay usable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from importlib.metadata import EntryPoint, entry_points
from importlib.resources import files
from os import PathLike
from pathlib import Path
from typing import Any

from clearbench.config import user_card_dir
from clearbench.errors import ClearbenchError, InputError
from clearbench.problems import ProblemLog
from clearbench.tasks.card import TaskCard, card_from_dict, load_card

ENTRY_POINT_GROUP = "clearbench.tasks"


def builtin_card_dir() -> Path:
    return Path(str(files("clearbench") / "_cards" / "tasks"))


def _card_files(folder: Path) -> list[Path]:
    """The card files of ``folder`` by name, a name before its variants (``task1``, ``task1-demo``, ``task2``)."""
    return sorted(folder.glob("*.toml"), key=lambda p: p.stem) if folder.is_dir() else []


def _from_entry_point(name: str, value: str, loaded: Any) -> TaskCard:
    source = f"entry point {ENTRY_POINT_GROUP}:{name} ({value})"
    obj = loaded() if callable(loaded) and not isinstance(loaded, type) else loaded
    if isinstance(obj, TaskCard):
        return obj
    if isinstance(obj, Mapping):
        return card_from_dict(obj, source, default_name=name)
    if isinstance(obj, (str, PathLike)) or hasattr(obj, "read_bytes"):
        return load_card(Path(str(obj)))
    raise InputError(source, f"expected a card dict, a path to a TOML card or a TaskCard, got {type(obj).__name__}")


def _candidates() -> list[tuple[str, Callable[[], TaskCard]]]:
    """(where, loader) for every card source, in priority order; nothing is parsed yet."""
    found: list[tuple[str, Callable[[], TaskCard]]] = []
    for folder in (builtin_card_dir(), user_card_dir("tasks")):
        for path in _card_files(folder):
            found.append((str(path), partial(load_card, path)))
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.append((f"entry point {ep.name}", partial(_entry_point_card, ep)))
    return found


def _entry_point_card(ep: EntryPoint) -> TaskCard:
    return _from_entry_point(ep.name, ep.value, ep.load())


def task_cards(problems: ProblemLog | None = None) -> dict[str, TaskCard]:
    """Every valid task card by name; invalid and duplicate cards go to ``problems``."""
    problems = problems if problems is not None else ProblemLog()
    cards: dict[str, TaskCard] = {}
    for where, load in _candidates():
        try:
            card = load()
        except InputError as exc:
            problems.report(exc.path, exc.reason)
            continue
        except Exception as exc:  # noqa: BLE001 - a plugin that fails to import must not hide the other cards
            problems.report(where, f"cannot load task card ({type(exc).__name__}: {exc})")
            continue
        if card.name in cards:
            problems.report(
                card.source or where,
                f"task '{card.name}' is already defined by {cards[card.name].source}; this card is ignored",
                severity="warning",
            )
            continue
        cards[card.name] = card
    return cards


def get_task(name: str | Path) -> TaskCard:
    """A task by name, or a card file given by path (``my_task.toml``)."""
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        return load_card(path)
    problems = ProblemLog()
    cards = task_cards(problems)
    if str(name) in cards:
        return cards[str(name)]
    # A card file of that name that failed validation, or was shadowed by an earlier card of its name.
    for problem in problems.problems:
        if Path(problem.path).stem == str(name) or problem.path.endswith(f" {name}"):
            raise InputError(problem.path, problem.reason)
    known = ", ".join(sorted(cards)) or "none"
    raise ClearbenchError(
        f"unknown task '{name}': known tasks are {known}; add a card in {user_card_dir('tasks')}/ or pass a .toml path"
    )


def list_tasks(problems: ProblemLog | None = None) -> list[TaskCard]:
    """Every valid task card: built-in ones first, then the user's, then those of plugins."""
    return list(task_cards(problems).values())
