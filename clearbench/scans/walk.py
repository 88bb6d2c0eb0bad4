"""Walking a dataset's folders with symbolic links followed once, never in a loop, and reported as links.

Cohorts are often assembled from links (a scan folder linked in from another disk), and a stray link such as
``loop -> .`` would otherwise be read as a scan folder, or walked forever. A link to a folder is followed
the first time its target is met (reported as ``info``); a link whose target contains it, or the dataset
root, is a loop and is skipped (a ``warning``); a target already walked is not walked twice.
"""

from __future__ import annotations

import os
from pathlib import Path

from clearbench.problems import ProblemLog


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _loops(link: Path, target: Path, top: Path) -> bool:
    """A link loops when its target is the folder it sits in, or the walk's top, or a folder above either."""
    return any(target == folder or target in folder.parents for folder in (link.parent.resolve(), top))


def enter(folder: Path, top: Path, problems: ProblemLog, scan_id: str | None, seen: set[Path]) -> bool:
    """Whether to walk ``folder`` (met while walking ``top``); a link to a folder is followed at most once."""
    target = follow_link(folder, top, problems, scan_id, seen) if folder.is_symlink() else folder.resolve()
    if target is None:
        return False
    seen.add(target)
    return True


def follow_link(link: Path, top: Path, problems: ProblemLog, scan_id: str | None, seen: set[Path]) -> Path | None:
    """The real folder a link in the walk of ``top`` leads to, or ``None`` (loop, dangling, or already walked)."""
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a link chain that loops on itself
        problems.report(
            link, f"broken symbolic link ({type(exc).__name__}); skipped", scan_id=scan_id, severity="warning"
        )
        return None
    if _loops(link, target, top.resolve()):
        problems.report(
            link,
            f"symbolic link loop: it points to {target}, which contains it; not followed",
            scan_id=scan_id,
            severity="warning",
        )
        return None
    if target in seen:
        problems.report(
            link,
            f"symbolic link to {target}, which is already read; not followed again",
            scan_id=scan_id,
            severity="info",
        )
        return None
    problems.report(link, f"symbolic link to {target}; followed", scan_id=scan_id, severity="info")
    return target


def subfolders(root: Path, problems: ProblemLog) -> list[Path]:
    """The visible folders directly under ``root``, links to folders included once (each named by its link)."""
    folders: list[Path] = []
    seen: set[Path] = set()
    for entry in sorted(root.iterdir()):
        if not _is_hidden(entry) and entry.is_dir() and enter(entry, root, problems, entry.name, seen):
            folders.append(entry)
    return folders


def files_under(top: Path, problems: ProblemLog, scan_id: str | None = None) -> list[Path]:
    """Every visible file under ``top``, in path order; links to folders are followed once, loops skipped."""
    found: list[Path] = []
    seen = {top.resolve()}
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(folder.iterdir())
        except OSError as exc:
            problems.report(folder, f"cannot list folder ({exc.strerror or exc}); skipped", scan_id=scan_id)
            continue
        for entry in entries:
            if _is_hidden(entry):
                continue
            if entry.is_dir():
                if enter(entry, top, problems, scan_id, seen):
                    stack.append(entry)
            elif entry.is_file():
                found.append(entry)
    return sorted(found)


def has_files(top: Path) -> bool:
    """Whether any visible file lies under ``top`` (links not followed: a cheap test for an empty folder)."""
    for folder, dirs, files in os.walk(top, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(not f.startswith(".") for f in files):
            return True
        if any(Path(folder, d).is_symlink() for d in dirs):
            return True
    return False
