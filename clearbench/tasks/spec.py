"""A protocol's parameters, metric names and attention hit-rate window as a task card gives them.

Free of heavy imports, so that listing cards does not load torch or scikit-learn; and it imports nothing
from clearbench, so that protocols (which run what a card says) and explaining (which scores attention)
both read it from ``tasks`` without ``tasks`` importing either of them.
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOLS = ("holdout+kfold", "nested-kfold")
# The metrics every fold reports, per label and as a macro average.
METRICS: tuple[str, ...] = ("auc", "auprc", "f1")
# Attention hit rate: a slice within this many slices of a key slice counts as a hit (a card's hit_rate_k).
DEFAULT_K = 2


@dataclass(frozen=True)
class ProtocolSpec:
    """Which protocol and its parameters.

    ``holdout+kfold`` uses ``test_fraction`` (or the official split named by ``test_split``) and
    ``folds``; ``nested-kfold`` uses ``folds`` outer folds and ``val_fraction`` of each outer-training
    part as validation. ``seed`` drives every split and every fold's training.
    """

    kind: str = "holdout+kfold"
    folds: int = 5
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    seed: int = 0
    # The value of ScanRecord.split that marks the official test set; None draws a seeded test set.
    test_split: str | None = None
