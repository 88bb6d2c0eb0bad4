"""One split per task and cohort: drawn once from every labelled scan, stored, and read by every run.

A split drawn from the scans one encoder's table happens to hold differs from another encoder's as soon
as one scan is missing from one table, and then the encoders are tested on different patients and no
paired comparison between them is possible. So the folds belong to the task and the cohort: they are
drawn once, with the card's protocol and seed, from every labelled scan the dataset reader finds, stored
in the store's ``splits`` table, and read back by every ``clearbench run`` of the task (for every encoder)
and by ``clearbench pretrain --exclude-test-of``.

The cohort is identified by its *fingerprint*: a hash of the sorted labelled scans with their patient,
their labels and (for a protocol with an official test split) their split name, i.e. everything
:func:`~clearbench.protocols.splits.make_folds` draws from. Labels are included because the draw is
stratified on them: a relabelled scan changes the split a fresh draw would give and the prevalence of
each role, so it is a change of cohort the user should hear about, like a scan added or removed.

``split_id`` is a short hash of the task, the protocol (seed included), the cohort fingerprint and the
folds as drawn, so equal ids mean equal folds even if a later scikit-learn were to draw differently.

When the cohort on disk no longer matches the stored split, nothing is decided silently:
:class:`CohortChangedError` says what changed, and the caller chooses ``keep`` (the stored split stays;
new scans are left out and listed, vanished ones reported) or ``resplit`` (a new split for the new
cohort; runs on the old split keep their old ``split_id``). The choice is stored, so it is made once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from clearbench.errors import ClearbenchError
from clearbench.protocols.splits import Fold, make_folds
from clearbench.store import db as dbmod
from clearbench.store.splits import ROLES, SplitTables
from clearbench.tasks.card import TaskCard
from clearbench.tasks.labels import TaskLabels
from clearbench.tasks.spec import ProtocolSpec


def json_digest(obj: Any, n: int = 64) -> str:
    """The first ``n`` hex digits of the sha256 of ``obj`` as canonical JSON: the content key of splits and runs."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def protocol_json(protocol: ProtocolSpec) -> str:
    """The protocol as stored: canonical JSON of every parameter, the seed included."""
    return json.dumps(asdict(protocol), sort_keys=True)


def _entries(labels: TaskLabels, protocol: ProtocolSpec) -> dict[str, tuple[str, tuple[int, ...], str | None]]:
    """Per labelled scan, what the draw depends on: patient, labels, and the official split when used."""
    official = protocol.test_split is not None
    return {
        s: (p, tuple(int(v) for v in y), split if official else None)
        for s, p, y, split in zip(labels.scan_ids, labels.patient_ids, labels.y, labels.splits, strict=True)
    }


def cohort_fingerprint(labels: TaskLabels, protocol: ProtocolSpec) -> str:
    """A hash of the sorted labelled scans with their patient, labels and (if the protocol uses it) split."""
    return json_digest(sorted([s, p, list(y), split] for s, (p, y, split) in _entries(labels, protocol).items()), 16)


@dataclass(frozen=True)
class CohortChange:
    """How the labelled cohort on disk differs from the one a split was drawn on."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self, limit: int = 5) -> str:
        parts = []
        for ids, what in ((self.added, "added"), (self.removed, "removed"), (self.changed, "relabelled or moved")):
            if ids:
                shown = ", ".join(ids[:limit]) + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")
                parts.append(f"{len(ids)} scan{'s' if len(ids) != 1 else ''} {what}: {shown}")
        return "; ".join(parts)


class CohortChangedError(ClearbenchError):
    """The labelled scans on disk differ from those the task's stored split was drawn on."""

    def __init__(self, task: str, split_id: str, change: CohortChange) -> None:
        self.change = change
        super().__init__(
            f"the labelled scans of task {task} changed since its split {split_id} was drawn ({change.describe()}); "
            f"pass --keep-split to keep split {split_id} (new scans left out) or --resplit to draw a new split"
        )


@dataclass
class StoredSplit:
    """A task's stored folds, by scan id, and how they relate to the cohort on disk now.

    ``choice`` says how this split became the task's split for the current cohort: ``drawn`` (just now,
    for the first time), ``stored`` (drawn earlier on this very cohort), ``kept`` (drawn on an earlier
    cohort and kept for this one) or ``resplit`` (drawn anew for a changed cohort).
    """

    task: str
    split_id: str
    fingerprint: str
    seed: int
    protocol: dict[str, Any]
    created_at: datetime
    folds: list[dict[str, list[str]]]
    stratified: list[bool]
    patient_of: dict[str, str]
    choice: str = "stored"
    change: CohortChange = field(default_factory=CohortChange)

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    @property
    def scan_ids(self) -> list[str]:
        return sorted(self.patient_of)

    def patients(self, fold: int, role: str) -> set[str]:
        return {self.patient_of[s] for s in self.folds[fold][role]}

    def test_patients(self) -> set[str]:
        """Every patient some fold tests on (the common test set, or all patients under nested k-fold)."""
        return {p for k in range(self.n_folds) for p in self.patients(k, "test")}

    def folds_for(self, scan_ids: Sequence[str]) -> list[Fold]:
        """The folds as indices into ``scan_ids``; scans the split does not hold take no part."""
        pos = {s: i for i, s in enumerate(scan_ids)}
        out = []
        for k, roles in enumerate(self.folds):
            idx = {r: np.array(sorted(pos[s] for s in roles[r] if s in pos), dtype=np.int64) for r in ROLES}
            out.append(Fold(k, idx["train"], idx["val"], idx["test"], self.stratified[k]))
        return out


def _connect(store: Any) -> Any:
    return dbmod.connect(store) if store is None or isinstance(store, (str, Path)) else store


def _rows_of(
    card: TaskCard, labels: TaskLabels, protocol: ProtocolSpec, fingerprint: str, folds: list[Fold]
) -> tuple[str, list[dict[str, Any]]]:
    """The split's id and its table rows, one per fold and scan."""
    proto = protocol_json(protocol)
    assignment = [{r: [labels.scan_ids[i] for i in getattr(f, r)] for r in ROLES} for f in folds]
    split_id = json_digest([card.name, proto, fingerprint, assignment], 12)
    rows = []
    for f, roles in zip(folds, assignment, strict=True):
        for role in ROLES:
            for i, scan in zip(getattr(f, role), roles[role], strict=True):
                rows.append(
                    {
                        "task": card.name,
                        "split_id": split_id,
                        "cohort_fingerprint": fingerprint,
                        "seed": protocol.seed,
                        "protocol": proto,
                        "fold": f.index,
                        "role": role,
                        "scan_id": scan,
                        "patient_id": labels.patient_ids[i],
                        "y": [float(v) for v in labels.y[i]],
                        "official_split": labels.splits[i],
                        "stratified": f.stratified,
                    }
                )
    return split_id, rows


def _from_rows(rows: list[dict[str, Any]], choice: str, change: CohortChange) -> StoredSplit:
    n_folds = max(r["fold"] for r in rows) + 1
    folds: list[dict[str, list[str]]] = [{role: [] for role in ROLES} for _ in range(n_folds)]
    stratified = [True] * n_folds
    for r in rows:
        folds[r["fold"]][r["role"]].append(r["scan_id"])
        stratified[r["fold"]] = bool(r["stratified"])
    for roles in folds:
        for ids in roles.values():
            ids.sort()
    first = rows[0]
    return StoredSplit(
        task=first["task"],
        split_id=first["split_id"],
        fingerprint=first["cohort_fingerprint"],
        seed=int(first["seed"]),
        protocol=json.loads(first["protocol"]),
        created_at=first["created_at"],
        folds=folds,
        stratified=stratified,
        patient_of={r["scan_id"]: r["patient_id"] for r in rows},
        choice=choice,
        change=change,
    )


def _change(rows: list[dict[str, Any]], labels: TaskLabels, protocol: ProtocolSpec) -> CohortChange:
    """What differs between the cohort a split was drawn on (its rows) and ``labels`` now."""
    official = protocol.test_split is not None
    then = {
        r["scan_id"]: (r["patient_id"], tuple(int(v) for v in r["y"]), r["official_split"] if official else None)
        for r in rows
    }
    now = _entries(labels, protocol)
    return CohortChange(
        added=sorted(set(now) - set(then)),
        removed=sorted(set(then) - set(now)),
        changed=sorted(s for s in set(now) & set(then) if now[s] != then[s]),
    )


def task_split(
    card: TaskCard,
    labels: TaskLabels,
    store: Any = None,
    *,
    seed: int | None = None,
    resplit: bool = False,
    keep: bool = False,
) -> StoredSplit:
    """The stored split of ``card``'s task for the cohort ``labels``: read it, or draw and store it once.

    ``store`` is a store path (default ``CLEARBENCH_HOME/store``) or an open LanceDB connection; ``seed``
    defaults to the card's. When the cohort differs from the one the task's latest split was drawn on,
    ``keep`` keeps that split and ``resplit`` draws a new one; with neither, :class:`CohortChangedError`.
    """
    if keep and resplit:
        raise ClearbenchError("--keep-split and --resplit exclude each other: pass one of them")
    if not labels.scan_ids:
        raise ClearbenchError(f"task {card.name} has no labelled scans to split")
    protocol = replace(card.protocol, seed=card.protocol.seed if seed is None else seed)
    proto = protocol_json(protocol)
    fingerprint = cohort_fingerprint(labels, protocol)
    tables = SplitTables(_connect(store))
    choices = tables.choices(card.name, proto)
    if not resplit:
        for c in choices:
            if c["cohort_fingerprint"] != fingerprint:
                continue
            rows = tables.rows(c["split_id"])
            if rows is not None:
                how = "stored" if rows[0]["cohort_fingerprint"] == fingerprint else "kept"
                latest = tables.latest_choice(card.name)
                if latest is None or latest["split_id"] != c["split_id"]:
                    tables.choose(card.name, proto, protocol.seed, fingerprint, c["split_id"], how)
                return _from_rows(rows, how, _change(rows, labels, protocol))
        newest = next((rows for c in choices if (rows := tables.rows(c["split_id"])) is not None), None)
        if newest is not None:
            change = _change(newest, labels, protocol)
            if not keep:
                raise CohortChangedError(card.name, newest[0]["split_id"], change)
            tables.choose(card.name, proto, protocol.seed, fingerprint, newest[0]["split_id"], "kept")
            return _from_rows(newest, "kept", change)
    folds = make_folds(protocol, labels.patient_ids, labels.y, labels.splits)
    split_id, rows = _rows_of(card, labels, protocol, fingerprint, folds)
    stored = tables.rows(split_id)
    if stored is None:
        tables.write(rows)
        stored = tables.rows(split_id)
        assert stored is not None, f"split {split_id} was written but cannot be read back"
    if not choices:
        how = "drawn"
    elif any(c["split_id"] == split_id and c["cohort_fingerprint"] == fingerprint for c in choices):
        how = "stored"  # --resplit on an unchanged cohort draws the split it already has
    else:
        how = "resplit"
    tables.choose(card.name, proto, protocol.seed, fingerprint, split_id, how)
    return _from_rows(stored, how, CohortChange())


def split_overview(split: StoredSplit, labels: TaskLabels) -> dict[str, Any]:
    """The split as plain data: per fold and role, patients, scans and label prevalence, and the cohort change.

    Counts and prevalence are over the split's scans that are labelled now (those a run uses), with
    their current labels; prevalence is the fraction of those scans positive for each label.
    """
    row = labels.index()
    roles_of = []
    for k, roles in enumerate(split.folds):
        per_role = {}
        for role in ROLES:
            idx = [row[s] for s in roles[role] if s in row]
            y = labels.y[idx] if idx else np.zeros((0, len(labels.label_names)))
            per_role[role] = {
                "scans": len(idx),
                "patients": len({labels.patient_ids[i] for i in idx}),
                "prevalence": {
                    name: (float(y[:, j].mean()) if len(idx) else None) for j, name in enumerate(labels.label_names)
                },
            }
        roles_of.append({"fold": k, "stratified": split.stratified[k], "roles": per_role})
    used = [s for s in split.patient_of if s in row]
    return {
        "task": split.task,
        "split_id": split.split_id,
        "cohort_fingerprint": split.fingerprint,
        "seed": split.seed,
        "protocol": split.protocol,
        "created_at": split.created_at.isoformat(),
        "choice": split.choice,
        "labels": list(labels.label_names),
        "n_scans": len(used),
        "n_patients": len({split.patient_of[s] for s in used}),
        "test_patients": sorted(split.test_patients()),
        "folds": roles_of,
        "cohort_change": {
            "added": split.change.added,
            "removed": split.change.removed,
            "changed": split.change.changed,
        },
    }
