"""The patients a task tests on, known before any run: so pretraining can leave them out.

They are the test patients of the task's stored split (:mod:`clearbench.protocols.stored_split`), the
very split every ``clearbench run`` of the task reads; it is drawn and stored here when absent.

This module imports no store (and so no LanceDB), because pretraining calls it before it forks its data
loader workers: a process that has started LanceDB's threads is not safe to fork. Unless LanceDB is
already loaded, the split is read in a short-lived *spawned* process, and only the patient ids come back.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from clearbench.errors import ClearbenchError
from clearbench.scans.base import ScanRecord
from clearbench.tasks.card import TaskCard
from clearbench.tasks.labels import task_labels
from clearbench.tasks.registry import get_task


@dataclass(frozen=True)
class TaskTestSet:
    """The test patients of a task's stored split, and that split's id."""

    task: str
    split_id: str
    patients: frozenset[str]


def _read_test_set(card: TaskCard, records: list[ScanRecord], label_names: list[str], store: str | None) -> TaskTestSet:
    """Runs where LanceDB may be loaded (a spawned process, or one that has it already)."""
    from clearbench.protocols.stored_split import CohortChangedError, task_split

    labels = task_labels(card, records, label_names)
    if not labels.scan_ids:
        return TaskTestSet(card.name, "", frozenset())
    try:
        split = task_split(card, labels, store)
    except CohortChangedError as exc:
        # Plain ClearbenchError: it crosses the process boundary, and names the command that settles it.
        raise ClearbenchError(f"{exc}, with: clearbench splits {card.name} --keep-split (or --resplit)") from None
    return TaskTestSet(card.name, split.split_id, frozenset(split.test_patients()))


def task_test_set(
    task: str | Path | TaskCard,
    records: Sequence[ScanRecord],
    label_names: Sequence[str] = (),
    *,
    store: str | Path | None = None,
    isolate: bool | None = None,
) -> TaskTestSet:
    """The patients ``task`` tests on, from its stored split in ``store`` (drawn and stored when absent).

    The cohort is the labelled scans of ``records``, as ``clearbench run`` finds them under the same root.
    ``isolate`` reads the store in a spawned process; by default it does unless LanceDB is already loaded.
    """
    card = task if isinstance(task, TaskCard) else get_task(task)
    args = (card, list(records), list(label_names), None if store is None else str(store))
    if isolate is None:
        isolate = "lancedb" not in sys.modules
    if not isolate:
        return _read_test_set(*args)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_read_test_set, *args).result()


def task_test_patients(
    task: str | Path | TaskCard,
    records: Sequence[ScanRecord],
    label_names: Sequence[str] = (),
    *,
    store: str | Path | None = None,
) -> set[str]:
    """The patients of :func:`task_test_set`, as a set.

    Pretraining leaves these patients out (``clearbench pretrain --exclude-test-of``), as the paper kept
    its task-1 test patients out of pretraining. Under nested k-fold every labelled patient is a test
    patient once.
    """
    return set(task_test_set(task, records, label_names, store=store).patients)
