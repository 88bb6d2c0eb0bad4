"""The patients a task tests on, known before any run: so pretraining can leave them out.

This module imports no store (and so no LanceDB), because pretraining calls it before it forks its data
loader workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from clearbench.protocols.splits import make_folds
from clearbench.scans.base import ScanRecord
from clearbench.tasks.card import TaskCard
from clearbench.tasks.labels import task_labels
from clearbench.tasks.registry import get_task


def task_test_patients(task: str | Path | TaskCard, records: Sequence[ScanRecord], label_names: Sequence[str] = ()) -> set[str]:
    """The patients ``task``'s protocol tests on, drawn exactly as :func:`clearbench.protocols.run.run_encoder` draws them.

    Pretraining leaves these patients out (``clearbench pretrain --exclude-test-of``), as the paper kept its
    task-1 test patients out of pretraining. The folds are drawn from all labelled scans of ``records``,
    so they match a run whose table holds every labelled scan; a run missing some embeddings may draw
    other folds. Under nested k-fold every labelled patient is a test patient once.
    """
    card = task if isinstance(task, TaskCard) else get_task(task)
    labels = task_labels(card, records, label_names)
    if not labels.scan_ids:
        return set()
    folds = make_folds(card.protocol, labels.patient_ids, labels.y, labels.splits)
    return {labels.patient_ids[i] for fold in folds for i in fold.test}
