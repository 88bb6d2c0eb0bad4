"""``run_task``: a task card, the embeddings in the store and the dataset's labels -> stored results.

The task's folds come from its stored split (:mod:`clearbench.protocols.stored_split`), drawn once from
every labelled scan of the cohort and read by every run, so every encoder is trained and tested on the
same patients. For each encoder with embeddings of the task's dataset, the bags of the split's scans are
read from the store once (a scan of the split without embeddings in that table is reported as missing,
and counted), joined with the labels from the dataset reader's records, placed in the stored folds, and
every fold is trained, evaluated and committed to the results tables before the next one starts. Folds
already committed under the same configuration hash are reused unless ``rerun`` is set; a run that
reuses every fold reports the run that made them instead of adding a new one.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import torch

from clearbench import runtime
from clearbench.config import dataset_roots
from clearbench.errors import ClearbenchError
from clearbench.mil.data import BagSet
from clearbench.mil.train import EpochInfo, Standardized, TrainConfig
from clearbench.problems import ProblemLog
from clearbench.protocols.cv import FoldResult, run_fold
from clearbench.protocols.metrics import MACRO, METRICS, FoldScores, Summary, summarise
from clearbench.protocols.splits import Fold, need_patients
from clearbench.protocols.stored_split import StoredSplit, json_digest, task_split
from clearbench.scans.registry import open_dataset
from clearbench.store import EmbeddingStore
from clearbench.store.bags import Bags
from clearbench.store.results import ResultsStore, now
from clearbench.tasks.card import HeadSpec, TaskCard, TrainingSpec
from clearbench.tasks.labels import Exclusion, TaskLabels, task_labels
from clearbench.tasks.registry import get_task
from clearbench.version import __version__

# A fold with fewer optimizer steps than this in all is warned about; the hint names a --min-steps that trains.
MIN_STEPS_WARNING = 10
# Provenance entries that do not change a single vector, left out of the configuration hash.
_VOLATILE_PROVENANCE = frozenset({"created", "dataset_root"})


class RunProgress(Protocol):
    """What a display needs to follow a run; every method is optional to act on."""

    def encoder_started(
        self, task: str, encoder: str, n_folds: int, reused: Sequence[int], max_epochs: int
    ) -> None: ...

    def fold_started(self, fold: int) -> None: ...

    def epoch_done(self, fold: int, info: EpochInfo) -> None: ...

    def fold_done(self, fold: int, scores: FoldScores, reused: bool) -> None: ...


@dataclass
class EncoderTable:
    """An embedding table that holds the task's dataset, with what its provenance says about it."""

    table: str
    encoder: str
    kind: str
    provenance: dict[str, Any]


@dataclass
class EncoderRun:
    """The outcome of one task on one encoder's embeddings."""

    task: str
    encoder: str
    table: str
    kind: str
    head: str
    run_id: str
    config_hash: str
    labels: list[str]
    metrics: list[str]
    n_scans: int
    n_patients: int
    folds: list[FoldScores]
    summary: dict[str, dict[str, Summary]]
    reused: list[int] = field(default_factory=list)
    excluded: list[Exclusion] = field(default_factory=list)
    split: StoredSplit | None = None
    missing: list[str] = field(default_factory=list)

    training: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    threads: int = 1
    warnings: list[str] = field(default_factory=list)

    @property
    def split_id(self) -> str | None:
        return self.split.split_id if self.split is not None else None

    def macro_labels(self) -> tuple[int, int]:
        """The fewest and most labels any fold's macro average covers (labels with both classes in its test set)."""
        counts = [len(f.labels) - len(f.undefined_labels()) for f in self.folds] or [0]
        return min(counts), max(counts)

    def summary_dict(self) -> dict[str, dict[str, dict[str, float | int | None]]]:
        return {
            m: {
                name: {"mean": _none_if_nan(s.mean), "std": _none_if_nan(s.std), "n": s.n}
                for name, s in per_label.items()
            }
            for m, per_label in self.summary.items()
        }


def _none_if_nan(x: float) -> float | None:
    return None if x != x else float(x)


def encoder_tables(emb: EmbeddingStore, dataset: str, encoders: Sequence[str] | None = None) -> list[EncoderTable]:
    """The store's embedding tables of ``dataset``, restricted to ``encoders`` when given."""
    found: dict[str, EncoderTable] = {}
    for name in emb.tables():
        prov = emb.provenance(name)
        table_dataset = prov.get("dataset") or name.split("__", 1)[0]
        if table_dataset != dataset:
            continue
        encoder = prov.get("encoder") or name.split("__", 1)[-1]
        kind = prov.get("kind") or (prov.get("card") or {}).get("kind") or "slice"
        found.setdefault(encoder, EncoderTable(name, encoder, kind, prov))
    if encoders:
        missing = [e for e in encoders if e not in found]
        if missing:
            have = ", ".join(sorted(found)) or "none"
            raise ClearbenchError(
                f"no embeddings of dataset '{dataset}' for encoder(s) {', '.join(missing)} in {emb.path} "
                f"(encoders with embeddings: {have}); run: clearbench embed --dataset {dataset} --encoder {missing[0]}"
            )
        return [found[e] for e in encoders]
    if not found:
        raise ClearbenchError(
            f"no embeddings of dataset '{dataset}' in {emb.path}; run: clearbench embed --dataset {dataset} --encoder NAME"
        )
    return [found[e] for e in sorted(found)]


def labels_root(dataset: str, root: str | Path | None, tables: Sequence[EncoderTable]) -> Path:
    """``root`` if given, else config.toml's root for the dataset, else the root recorded at embed time."""
    if root is not None:
        return Path(root)
    configured = dataset_roots().get(dataset)
    if configured is not None:
        return configured
    for t in tables:
        recorded = t.provenance.get("dataset_root")
        if recorded:
            return Path(recorded)
    raise ClearbenchError(
        f"cannot find the labels of dataset '{dataset}': pass --root DIR or set [datasets.{dataset}] root in config.toml"
    )


def run_config(
    card: TaskCard,
    enc: EncoderTable,
    seed: int,
    epochs: int | None,
    bags: BagSet,
    folds: Sequence[Fold] = (),
    split_id: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Everything that determines a run's numbers, as plain data; its hash keys reusable folds.

    The data enter by content: the vectors themselves (a table re-embedded in place keeps its scans, slice
    counts and provenance, but not its vectors), the stored split the folds come from, and the folds as
    placed on this encoder's scans. The training recipe enters with the command line's overrides applied,
    and the overrides are listed as well. The CPU thread count enters too: torch splits its reductions by
    thread, so two thread counts give results that differ in the last bits.
    """
    head = card.head_for(enc.kind)
    return {
        "task": card.to_dict(),
        "encoder": enc.encoder,
        "encoder_kind": enc.kind,
        "encoder_provenance": {k: v for k, v in enc.provenance.items() if k not in _VOLATILE_PROVENANCE},
        "head": {"head": head.head, **head.params},
        "training": {**card.to_dict()["training"], "max_epochs": epochs or card.training.max_epochs},
        "seed": seed,
        "data": json_digest([bags.scan_ids, bags.patient_ids, bags.targets.tolist(), bags.lengths.tolist()]),
        "vectors": hashlib.sha256(np.ascontiguousarray(bags.features.cpu().numpy()).tobytes()).hexdigest(),
        "folds": json_digest([[f.train.tolist(), f.val.tolist(), f.test.tolist()] for f in folds]),
        "split_id": split_id,
        "overrides": dict(overrides or {}),
        "threads": torch.get_num_threads() if threads is None else threads,
        "clearbench_version": __version__,
    }


def _bagset(bags: Bags, labels: TaskLabels) -> BagSet:
    row = labels.index()
    idx = np.array([row[s] for s in bags.scan_ids], dtype=np.int64)
    patients = [labels.patient_ids[i] for i in idx]
    return BagSet.from_arrays(bags.scan_ids, patients, bags.vectors, bags.offsets, labels.y[idx])


def _scores_from_rows(rows: list[dict[str, Any]], labels: Sequence[str]) -> FoldScores:
    values: dict[str, dict[str, float]] = {m: {} for m in METRICS}
    for r in rows:
        if r["metric"] in values:
            values[r["metric"]][r["label"]] = float("nan") if r["value"] is None else float(r["value"])
    return FoldScores(list(labels), values)


def _metric_rows(
    common: dict[str, Any], split: str, scores: FoldScores, thresholds: np.ndarray
) -> list[dict[str, Any]]:
    rows = []
    for m in METRICS:
        for j, name in enumerate([*scores.labels, MACRO]):
            v = scores.values[m][name]
            rows.append(
                {
                    **common,
                    "split": split,
                    "label": name,
                    "metric": m,
                    "value": None if v != v else v,
                    "threshold": float(thresholds[j]) if name != MACRO else None,
                }
            )
    return rows


def fold_training_state(r: FoldResult) -> dict[str, Any]:
    """What a fold trained with beyond the config: its batch (``min_steps`` may shrink it), its optimizer
    steps, and the training bags' feature mean and std when it standardised (so its predictions can be
    reproduced from the stored vectors)."""
    state: dict[str, Any] = {"batch_size": r.train.batch_size, "steps": r.train.steps}
    model = r.train.model
    if isinstance(model, Standardized):
        state["feature_mean"] = model.mean.cpu().tolist()
        state["feature_std"] = model.std.cpu().tolist()
    return state


def few_steps_warnings(
    card: TaskCard, encoder: str, cfg: TrainConfig, folds: Sequence[Fold], minimum: int = MIN_STEPS_WARNING
) -> list[str]:
    """One line per fold whose whole training budget is fewer than ``minimum`` optimizer steps."""
    lines = []
    for fold in folds:
        n = len(fold.train)
        steps = cfg.planned_steps(n)
        if steps < minimum:
            lines.append(
                f"{card.name} · {encoder} fold {fold.index}: only {steps} optimizer steps in all ({n} training bags, "
                f"batch {cfg.batch_size_for(n)}, {cfg.max_epochs} epochs), too few for the head to learn; "
                f"raise --epochs, lower --batch-size, or pass --min-steps {TrainingSpec().min_steps}"
            )
    return lines


def check_test_size(card: TaskCard, encoder: str, bags: BagSet, folds: Sequence[Fold]) -> None:
    """Refuse a protocol whose test set (of any fold) has fewer patients than the card's minimum."""
    minimum = card.min_test_patients
    for fold in folds:
        n = len({bags.patient_ids[i] for i in fold.test})
        if n < minimum:
            raise ClearbenchError(
                f"task {card.name} on {encoder}: the test set of fold {fold.index} has {n} patient{'s' if n != 1 else ''}, "
                f"fewer than the task's minimum of {minimum} (min_test_patients in the card); its AUC would move by "
                f"whole tenths with one patient. Embed more scans, or pass --min-test-patients {max(n, 1)} to accept it"
            )


def _store_fold(results: ResultsStore, common: dict[str, Any], bags: BagSet, raw: Bags, r: FoldResult) -> None:
    """Commit one fold: its val and test predictions (with attention per window and slice), metrics, marker.

    ``common`` holds config_hash, run_id, task, encoder and fold, the columns every row starts with.
    """
    window_names = np.asarray(raw.window_names, dtype=object)
    tables = []
    for role, idx, preds in (("val", r.fold.val, r.val), ("test", r.fold.test, r.test)):
        starts, ends = raw.offsets[idx], raw.offsets[idx + 1]
        windows = [window_names[raw.window[s:e]] for s, e in zip(starts, ends, strict=True)]
        slices = [raw.slice_idx[s:e] for s, e in zip(starts, ends, strict=True)]
        attention = [preds.attention_of(i) for i in range(len(idx))]
        tables.append(
            results.predictions_table(
                common,
                role,
                preds.scan_ids,
                [bags.patient_ids[i] for i in idx],
                r.val_scores.labels,
                preds.y_true,
                preds.prob,
                preds.prob >= r.thresholds,
                attention,
                windows,
                slices,
            )
        )
    fold_row = {
        **common,
        "seed": r.seed,
        "stratified": r.fold.stratified,
        "train_scan_ids": [bags.scan_ids[i] for i in r.fold.train],
        "val_scan_ids": [bags.scan_ids[i] for i in r.fold.val],
        "test_scan_ids": [bags.scan_ids[i] for i in r.fold.test],
        "best_epoch": r.train.best_epoch,
        "epochs_run": r.train.epochs_run,
        "train_loss": r.train.train_loss,
        "val_loss": r.train.val_loss,
        "labels": r.val_scores.labels,
        "thresholds": r.thresholds.tolist(),
        "thresholds_defaulted": r.thresholds_defaulted.tolist(),
        "seconds": r.seconds,
        "training": json.dumps(fold_training_state(r)),
    }
    metric_rows = _metric_rows(common, "val", r.val_scores, r.thresholds) + _metric_rows(
        common, "test", r.test_scores, r.thresholds
    )
    results.write_fold(fold_row, metric_rows, pa.concat_tables(tables))


def _split_folds(card: TaskCard, enc: EncoderTable, split: StoredSplit, bags: BagSet) -> list[Fold]:
    """The stored split's folds on the scans this table holds; raises when a fold would lack a role."""
    where = f" among the scans of split {split.split_id} with embeddings in table {enc.table}"
    need_patients(len(set(bags.patient_ids)), card.protocol, where)
    folds = split.folds_for(bags.scan_ids)
    for fold in folds:
        empty = [role for role in ("train", "val", "test") if len(getattr(fold, role)) == 0]
        if empty:
            raise ClearbenchError(
                f"table {enc.table} holds no {' or '.join(empty)} scans of fold {fold.index} of split {split.split_id}; "
                f"embed the missing scans with: clearbench embed --dataset {card.dataset} --encoder {enc.encoder}"
            )
    return folds


def _left_out(split: StoredSplit) -> list[Exclusion]:
    """Labelled scans that a kept split does not hold (added to the cohort after it was drawn)."""
    reason = f"not in the stored split {split.split_id} (added after it was drawn; --resplit includes them)"
    return [Exclusion(s, reason) for s in split.change.added]


def _stored_bags(
    card: TaskCard, enc: EncoderTable, labels: TaskLabels, emb: EmbeddingStore, split: StoredSplit
) -> tuple[Bags, list[Exclusion], list[str]]:
    """The table's bags of the split's labelled scans, every exclusion so far, and the scans with no embedding."""
    volume = enc.kind == "volume"
    in_split = set(split.patient_of)
    raw = emb.bags(
        table=enc.table,
        scan_ids=[s for s in labels.scan_ids if s in in_split],
        windows=None if volume else list(card.windows),
    )
    excluded = list(labels.excluded) + _left_out(split)
    missing = sorted(raw.missing)
    if missing:
        wanted = "the embedding" if volume else f"embeddings in window(s) {', '.join(card.windows)}"
        excluded += [Exclusion(s, f"no {wanted} in table {enc.table}") for s in missing]
    if len(raw) == 0:
        raise ClearbenchError(
            f"table {enc.table} has no labelled scans of task {card.name} in windows {', '.join(card.windows)}; "
            f"embed them with: clearbench embed --dataset {card.dataset} --encoder {enc.encoder} --windows {','.join(card.windows)}"
        )
    return raw, excluded, missing


def _run_row(
    keys: dict[str, str],
    card: TaskCard,
    enc: EncoderTable,
    head: HeadSpec,
    seed: int,
    config: dict[str, Any],
    device: str,
    bags: BagSet,
    excluded: list[Exclusion],
    split: StoredSplit,
    missing: list[str],
) -> dict[str, Any]:
    """The run's row, written when it starts: its configuration, the encoder's provenance and the cohort."""
    return {
        **keys,
        "dataset": card.dataset,
        "embedding_table": enc.table,
        "head": head.head,
        "seed": seed,
        "config": json.dumps(config, sort_keys=True, default=str),
        "encoder_provenance": json.dumps(enc.provenance, sort_keys=True, default=str),
        "clearbench_version": __version__,
        "device": device,
        "n_scans": len(bags),
        "n_patients": len(set(bags.patient_ids)),
        "excluded": json.dumps([{"scan_id": e.scan_id, "reason": e.reason} for e in excluded]),
        "split_id": split.split_id,
        "n_missing": len(missing),
        "missing": json.dumps(missing),
    }


def _reused_fold(
    fold: Fold, stored_rows: list[dict[str, Any]], labels: Sequence[str], progress: RunProgress | None
) -> FoldScores:
    """A fold committed before under the same configuration: its test scores as stored."""
    scores = _scores_from_rows([r for r in stored_rows if r["fold"] == fold.index], labels)
    if progress is not None:
        progress.fold_done(fold.index, scores, reused=True)
    return scores


def _train_fold(
    card: TaskCard,
    head: HeadSpec,
    cfg: TrainConfig,
    seed: int,
    bags: BagSet,
    raw: Bags,
    fold: Fold,
    results: ResultsStore,
    common: dict[str, Any],
    progress: RunProgress | None,
) -> FoldScores:
    """Train one fold from a fresh model, commit it to ``results`` and return its test scores."""
    if progress is not None:
        progress.fold_started(fold.index)
    on_epoch = (lambda info, k=fold.index: progress.epoch_done(k, info)) if progress is not None else None
    result = run_fold(bags, fold, head, cfg, card.labels, seed, on_epoch)
    _store_fold(results, common, bags, raw, result)
    if progress is not None:
        progress.fold_done(fold.index, result.test_scores, reused=False)
    return result.test_scores


def run_encoder(
    card: TaskCard,
    enc: EncoderTable,
    labels: TaskLabels,
    emb: EmbeddingStore,
    results: ResultsStore,
    *,
    split: StoredSplit,
    seed: int,
    rerun: bool = False,
    epochs: int | None = None,
    device: str = "cpu",
    progress: RunProgress | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> EncoderRun:
    """Run ``card``'s protocol on one encoder's embeddings, on the task's stored ``split``, and commit
    every fold as it finishes.

    ``card`` carries the recipe to train with (its training and minimum test set with any override
    applied); ``overrides`` lists what the command line changed, which the configuration records beside it.
    """
    card = card.with_training(max_epochs=epochs)
    raw, excluded, missing = _stored_bags(card, enc, labels, emb, split)
    bags = _bagset(raw, labels)
    folds = _split_folds(card, enc, split, bags)
    check_test_size(card, enc.encoder, bags, folds)

    threads = torch.get_num_threads()
    config = run_config(card, enc, seed, epochs, bags, folds, split.split_id, overrides, threads)
    config_hash = json_digest(config)
    if rerun:
        results.delete_config(config_hash)
    finished = results.finished_folds(config_hash)
    head = card.head_for(enc.kind)
    reused = sorted(k for k in finished if k < len(folds))
    # Every fold already committed: this is the same result again, reported under the run that made it.
    previous = results.latest_complete_run(config_hash) if len(reused) == len(folds) else None
    run_id = previous["run_id"] if previous else f"{now():%Y%m%dT%H%M%S}-{config_hash[:8]}-{uuid.uuid4().hex[:6]}"
    keys = {"config_hash": config_hash, "run_id": run_id, "task": card.name, "encoder": enc.encoder}
    if previous is None:
        results.start_run(_run_row(keys, card, enc, head, seed, config, device, bags, excluded, split, missing))
    cfg = card.train_config(device=device)
    warnings = few_steps_warnings(card, enc.encoder, cfg, [f for f in folds if f.index not in finished])
    if progress is not None:
        progress.encoder_started(card.name, enc.encoder, len(folds), reused, cfg.max_epochs)
    stored_rows = results.metrics(config_hash, split="test").to_pylist() if reused else []
    scores: list[FoldScores] = []
    for fold in folds:
        if fold.index in finished:
            scores.append(_reused_fold(fold, stored_rows, card.labels, progress))
        else:
            common = {**keys, "fold": fold.index}
            scores.append(_train_fold(card, head, cfg, seed, bags, raw, fold, results, common, progress))
    out = EncoderRun(
        task=card.name,
        encoder=enc.encoder,
        table=enc.table,
        kind=enc.kind,
        head=head.head,
        run_id=run_id,
        config_hash=config_hash,
        labels=list(card.labels),
        metrics=list(card.metrics),
        n_scans=len(bags),
        n_patients=len(set(bags.patient_ids)),
        folds=scores,
        summary=summarise(scores),
        reused=reused,
        excluded=excluded,
        split=split,
        missing=missing,
        training=config["training"],
        overrides=dict(overrides or {}),
        threads=threads,
        warnings=warnings,
    )
    if previous is None:
        results.finish_run(run_id, "complete", out.summary_dict(), reused)
    return out


def cohort_labels(
    card: TaskCard, root: str | Path | None, tables: Sequence[EncoderTable], problems: ProblemLog | None = None
) -> TaskLabels:
    """The task's labelled scans as the dataset reader finds them (see :func:`labels_root` for where)."""
    reader = open_dataset(card.dataset, labels_root(card.dataset, root, tables), problems=problems)
    labels = task_labels(card, reader.records(), reader.label_names)
    if not labels.scan_ids:
        reasons = group_exclusions(labels.excluded)
        raise ClearbenchError(
            f"dataset '{card.dataset}' under {reader.root} has no scans labelled for task {card.name}"
            + (f" ({'; '.join(f'{len(v)} scans: {k}' for k, v in reasons.items())})" if reasons else "")
        )
    return labels


def load_task_split(
    task: str | Path | TaskCard,
    *,
    root: str | Path | None = None,
    store: str | Path | None = None,
    seed: int | None = None,
    resplit: bool = False,
    keep_split: bool = False,
    problems: ProblemLog | None = None,
) -> tuple[StoredSplit, TaskLabels]:
    """The task's stored split (drawn and stored on first use) with the labels of the cohort on disk.

    The dataset root is found as ``clearbench run`` finds it, so both see the same cohort.
    """
    card = task if isinstance(task, TaskCard) else get_task(task)
    emb = EmbeddingStore(store)
    try:
        tables = encoder_tables(emb, card.dataset)
    except ClearbenchError:
        tables = []  # no embeddings yet: the root must come from --root or config.toml
    labels = cohort_labels(card, root, tables, problems)
    return task_split(card, labels, emb.db, seed=seed, resplit=resplit, keep=keep_split), labels


def run_task(
    task: str | Path | TaskCard,
    encoders: Sequence[str] | None = None,
    *,
    root: str | Path | None = None,
    seed: int | None = None,
    rerun: bool = False,
    epochs: int | None = None,
    device: str = "auto",
    store: str | Path | None = None,
    progress: RunProgress | None = None,
    problems: ProblemLog | None = None,
    resplit: bool = False,
    keep_split: bool = False,
    training: Mapping[str, Any] | None = None,
    min_test_patients: int | None = None,
) -> list[EncoderRun]:
    """Train and evaluate ``task`` on every encoder with embeddings of its dataset (or on ``encoders``).

    ``training`` overrides fields of the card's recipe (``lr``, ``batch_size``, ``max_epochs``,
    ``patience``, ``standardize``, ``min_steps``, ``weight_decay``; ``None`` values keep the card's), as
    ``epochs`` does ``max_epochs``; ``min_test_patients`` overrides the card's minimum test set.

    Labels come from the dataset reader at ``root`` (else config.toml, else the root recorded when the
    embeddings were made). The folds come from the task's stored split for that cohort, drawn and stored
    on first use; when the cohort changed since, ``keep_split`` or ``resplit`` says what to do (without
    either, :class:`~clearbench.protocols.stored_split.CohortChangedError`). Results go to the results
    tables of the same store. An encoder whose embeddings cannot carry the split (too few of its scans,
    missing windows) raises, unless a non-strict ``problems`` log is given: then it is reported there and
    the other encoders still run.
    """
    card = task if isinstance(task, TaskCard) else get_task(task)
    overrides = {k: v for k, v in (training or {}).items() if v is not None}
    if epochs is not None:
        overrides["max_epochs"] = epochs
    if min_test_patients is not None:
        card = replace(card, min_test_patients=min_test_patients)
    card = card.with_training(**overrides)
    emb = EmbeddingStore(store)
    tables = encoder_tables(emb, card.dataset, encoders)
    labels = cohort_labels(card, root, tables, problems)
    results = ResultsStore(db=emb.db)
    device = str(runtime.resolve_device(device))
    run_seed = card.protocol.seed if seed is None else seed
    split = task_split(card, labels, emb.db, seed=run_seed, resplit=resplit, keep=keep_split)
    done: list[EncoderRun] = []
    for enc in tables:
        try:
            done.append(
                run_encoder(
                    card,
                    enc,
                    labels,
                    emb,
                    results,
                    split=split,
                    seed=run_seed,
                    rerun=rerun,
                    device=device,
                    progress=progress,
                    overrides=overrides,
                )
            )
        except ClearbenchError as exc:
            # One encoder's embeddings that cannot carry the protocol must not cost the others their run.
            if problems is None or problems.strict:
                raise
            problems.report(enc.table, f"task {card.name} skipped for encoder {enc.encoder}: {exc}")
    return done


def group_exclusions(excluded: Sequence[Exclusion]) -> dict[str, list[str]]:
    """Excluded scan ids by reason, in order of first appearance."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for e in excluded:
        grouped[e.reason].append(e.scan_id)
    return dict(grouped)


def exclusion_lines(excluded: Sequence[Exclusion], limit: int = 10) -> list[str]:
    """One line per reason: how many scans and which (the first ``limit`` ids)."""
    lines = []
    for reason, ids in group_exclusions(excluded).items():
        shown = ", ".join(ids[:limit]) + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")
        lines.append(f"{len(ids)} scan{'s' if len(ids) != 1 else ''} excluded, {reason}: {shown}")
    return lines
