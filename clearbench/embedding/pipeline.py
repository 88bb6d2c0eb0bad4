"""``clearbench.embed``: a dataset through a frozen encoder into the store, resumable and in parallel.

The run has three concurrent parts. Loader threads decode scans ahead of time (bounded). The calling
thread windows slices on the encoder's device, runs the encoder's preprocessing there, and embeds batches
that cut across scans. A writer thread commits finished scans, whole, to LanceDB. A restarted run reads
the (scan, window) pairs already stored once and embeds only the rest; under ``torchrun`` each rank takes
``todo[rank::world]`` of the same sorted to-do list and rank 0 compacts the table at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clearbench import runtime
from clearbench.embedding.batches import BatchBuffer, ScanJob, cut_batches, scatter
from clearbench.embedding.cohort import check_cohort
from clearbench.embedding.loader import Failed, Prefetcher
from clearbench.embedding.progress import EmbedProgress
from clearbench.embedding.writer import StoreWriter
from clearbench.encoders.base import Encoder, SliceEncoder, VolumeEncoder
from clearbench.errors import ClearbenchError, InputError
from clearbench.problems import Problem, ProblemLog
from clearbench.scans.base import DatasetReader, ScanRecord
from clearbench.scans.signature import source_signature
from clearbench.scans.windows import Window, get_window
from clearbench.store.db import check_table_name
from clearbench.store.embeddings import (
    EmbeddingStore,
    EmbeddingTable,
    NonFiniteEmbeddingError,
    ScanEmbeddings,
    check_vectors,
)
from clearbench.store.schema import VOLUME_SLICE_IDX, VOLUME_WINDOW, schema_provenance


@dataclass
class EmbedSummary:
    """What a run did. ``skipped`` scans were already stored; ``failed`` ones are in ``problems``; ``changed``
    ones were stored, but from files that have changed since, and were embedded again.

    ``slices_embedded`` counts encoder outputs (one per scan for a volume encoder); ``rows_written`` the rows
    this run inserted. ``seconds`` is the whole call; ``embed_seconds`` the embedding loop alone (the slowest
    rank), which ``slices_per_s`` is based on.
    """

    table: str
    store: str
    encoder: str
    dataset: str
    windows: list[str]
    scans_total: int
    scans_done: int
    scans_skipped: int
    scans_failed: int
    rows_written: int
    slices_embedded: int
    seconds: float
    embed_seconds: float
    world_size: int = 1
    scans_changed: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def slices_per_s(self) -> float:
        return self.slices_embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["problems"] = [p.to_dict() for p in self.problems]
        out["slices_per_s"] = round(self.slices_per_s, 2)
        return out


def resolve_windows(
    reader: DatasetReader, windows: Sequence[str | Window] | str | None, encoder: Encoder
) -> list[Window]:
    """The windows to embed: those asked for, else the reader's ``default_windows``; none for a volume encoder."""
    if isinstance(windows, str):
        windows = [w for w in windows.split(",") if w.strip()]
    if encoder.kind == "volume":
        if windows:
            raise ClearbenchError(
                f"encoder '{encoder.name}' embeds whole volumes with its own 3D preprocessing; drop --windows"
            )
        return []
    if not windows:
        if not reader.default_windows:
            raise ClearbenchError(
                f"dataset '{reader.name}' has no default windows; choose them with --windows, e.g. --windows lung "
                "or --windows abdomen,lung (custom: name:lo:hi)"
            )
        windows = reader.default_windows
    resolved = [get_window(w.strip() if isinstance(w, str) else w) for w in windows]
    names = [w.name for w in resolved]
    if len(set(names)) != len(names):
        raise ClearbenchError(f"window names must be distinct, got {', '.join(names)}")
    return resolved


def table_provenance(encoder: Encoder, reader: DatasetReader) -> dict[str, Any]:
    """The encoder's provenance plus what the store adds: dataset, its root, and this clearbench."""
    from clearbench.version import __version__

    return {
        **encoder.provenance,
        "encoder": encoder.name,
        "kind": encoder.kind,
        "dim": encoder.dim,
        "dataset": reader.name,
        "dataset_root": str(Path(reader.root).resolve()),
        "clearbench_version": __version__,
    }


def _todo(
    records: list[ScanRecord], windows: list[Window], stored: set[tuple[str, str]]
) -> tuple[list[tuple[ScanRecord, list[Window]]], int]:
    """Scans with at least one window not yet stored (with those windows), and how many are complete."""
    names = [w.name for w in windows] or [VOLUME_WINDOW]
    todo = []
    for rec in records:
        missing = [n for n in names if (rec.scan_id, n) not in stored]
        if missing:
            todo.append((rec, [w for w in windows if w.name in missing]))
    return todo, len(records) - len(todo)


def _forget_changed(
    table: EmbeddingTable, reader: DatasetReader, records: list[ScanRecord], problems: ProblemLog
) -> int:
    """Refuse another cohort; report the stored scans whose source files changed and delete their rows."""
    check = check_cohort(table, schema_provenance(table.schema).get("dataset_root"), reader, records)
    for rec in check.changed:
        problems.report(
            rec.source,
            f"changed since scan '{rec.scan_id}' was embedded into table '{table.name}' "
            "(its files, sizes or modification times differ); embedding it again",
            scan_id=rec.scan_id,
            severity="warning",
        )
    table.forget([rec.scan_id for rec in check.changed])
    return len(check.changed)


def _default_workers() -> int:
    """One decode thread per core, up to 8: a GPU outruns a few PNG decoders, a CPU encoder needs little."""
    return max(1, min(8, os.cpu_count() or 1))


def _encoder_on(encoder: str | Encoder, dev: torch.device, trust_checkpoint: bool) -> Encoder:
    """The encoder on ``dev``: a card name is loaded there, a loaded encoder is moved."""
    if isinstance(encoder, str):
        from clearbench.encoders.registry import load_encoder

        return load_encoder(encoder, device=str(dev), trust_checkpoint=trust_checkpoint)
    encoder.to(dev)
    return encoder


def _reader(dataset: str | DatasetReader, root: str | Path | None, problems: ProblemLog) -> DatasetReader:
    """The dataset's reader, reporting to ``problems``: a name is opened under ``root``, a reader is reused."""
    if isinstance(dataset, str):
        from clearbench.scans.registry import open_dataset

        return open_dataset(dataset, root, problems=problems)
    dataset.problems = problems
    return dataset


def _gathered_counts(counts: list[tuple[int, int, int, int, float, list[Problem]]]) -> dict[str, Any]:
    """The summary's totals over the ranks' ``(done, failed, rows, slices, loop seconds, problems)``."""
    return {
        "scans_done": sum(c[0] for c in counts),
        "scans_failed": sum(c[1] for c in counts),
        "rows_written": sum(c[2] for c in counts),
        "slices_embedded": sum(c[3] for c in counts),
        "embed_seconds": max(c[4] for c in counts),
        "problems": list(dict.fromkeys(p for c in counts for p in c[5])),  # each rank reports the index's own
    }


def _records(reader: DatasetReader, limit: int | None) -> list[ScanRecord]:
    """The dataset's scans by scan id, the first ``limit`` of them; none at all is an error."""
    records = reader.records()
    if not records:
        raise ClearbenchError(f"no {reader.name} scans found under {reader.root}: check --root and the dataset layout")
    return records if limit is None else records[: max(0, limit)]


def _open_table(
    store: EmbeddingStore,
    name: str,
    dim: int,
    provenance: dict[str, Any],
    windows: list[Window],
    overwrite: bool,
    ranks: runtime.DistContext,
    reader: DatasetReader,
    records: list[ScanRecord],
    problems: ProblemLog,
) -> tuple[EmbeddingTable, int]:
    """The table to write, and how many stored scans changed on disk (their rows are dropped).

    Rank 0 creates (or replaces) the table and checks the cohort first, so that the others only ever open a
    checked one, and read what is stored after the rows of changed scans are gone.
    """
    if ranks.is_main:
        target = store.open_for_writing(name, dim, provenance, windows, overwrite=overwrite)
        changed = _forget_changed(target, reader, records, problems)
        runtime.barrier(ranks)
        return target, changed
    runtime.barrier(ranks)
    return store.open_for_writing(name, dim, provenance, windows), 0


def embed(
    encoder: str | Encoder,
    dataset: str | DatasetReader,
    root: str | Path | None = None,
    windows: Sequence[str | Window] | str | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    workers: int | None = None,
    limit: int | None = None,
    strict: bool = False,
    store: EmbeddingStore | str | Path | None = None,
    table: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    *,
    trust_checkpoint: bool = False,
    problems: ProblemLog | None = None,
    commit_seconds: float = 5.0,
) -> EmbedSummary:
    """Embed every scan of ``dataset`` with ``encoder`` into the store; resumes where a previous run stopped.

    ``encoder`` is a card name or a loaded :class:`Encoder`; ``dataset`` a dataset name (with ``root`` or the
    root in ``config.toml``) or an open reader. ``limit`` takes the first N scans of the dataset by scan id,
    so a resumed trial run finishes the same N. Bad scans are reported to ``problems`` (one line each) and
    skipped; ``strict`` stops at the first. Under ``torchrun`` each rank embeds its share of the to-do list.
    """
    started = time.perf_counter()
    if table is not None:
        check_table_name(table)  # before the encoder loads: a bad name is known at once
    if device is None:
        device = encoder.device if isinstance(encoder, Encoder) else "auto"
    ranks = runtime.start(device)
    dev = ranks.device
    try:
        problems = problems if problems is not None else ProblemLog(strict=strict)
        problems.strict = strict or problems.strict
        encoder = _encoder_on(encoder, dev, trust_checkpoint)
        reader = _reader(dataset, root, problems)
        chosen = resolve_windows(reader, windows, encoder)
        records = _records(reader, limit)
        store = store if isinstance(store, EmbeddingStore) else EmbeddingStore(store)
        name = table or store.table_name(reader.name, encoder.name)
        provenance = table_provenance(encoder, reader)

        target, changed = _open_table(
            store, name, encoder.dim, provenance, chosen, overwrite, ranks, reader, records, problems
        )
        todo, skipped = _todo(records, chosen, target.done())
        runtime.barrier(ranks)  # every rank has read the same stored set before any rank writes
        mine = todo[ranks.rank :: ranks.world]

        run = _Run(encoder, reader, target, problems, batch_size, workers or _default_workers(), commit_seconds)
        loop_started = time.perf_counter()
        with EmbedProgress(name, len(mine), enabled=progress and ranks.is_main) as bar:
            run.execute(mine, bar)
        loop_seconds = time.perf_counter() - loop_started

        counts = runtime.gather_objects(
            ranks, (run.done, run.failed, run.rows_written, run.slices, loop_seconds, problems.problems)
        )
        runtime.barrier(ranks)
        if ranks.is_main:
            store.optimize(name)
        runtime.barrier(ranks)
        return EmbedSummary(
            table=name,
            store=str(store.path),
            encoder=encoder.name,
            dataset=reader.name,
            windows=[w.name for w in chosen] or [VOLUME_WINDOW],
            scans_total=len(records),
            scans_skipped=skipped,
            seconds=time.perf_counter() - started,
            world_size=ranks.world,
            scans_changed=changed,
            **_gathered_counts(counts),
        )
    finally:
        runtime.close(ranks)


class _Run:
    """One rank's share of the work: load, embed, check and hand over whole scans."""

    def __init__(
        self,
        encoder: Encoder,
        reader: DatasetReader,
        table: EmbeddingTable,
        problems: ProblemLog,
        batch_size: int,
        workers: int,
        commit_seconds: float,
    ) -> None:
        self.encoder = encoder
        self.reader = reader
        self.table = table
        self.problems = problems
        self.batch_size = max(1, batch_size)
        self.workers = workers
        self.commit_seconds = commit_seconds
        self.done = 0
        self.failed = 0
        self.slices = 0
        self.rows_written = 0
        self._windows: dict[str, list[Window]] = {}
        self._signatures: dict[str, str] = {}  # filled by the loader threads, each before it reads its scan

    def execute(self, todo: list[tuple[ScanRecord, list[Window]]], bar: EmbedProgress) -> None:
        if not todo:
            return
        self._windows = {rec.scan_id: windows for rec, windows in todo}
        writer = StoreWriter(self.table, commit_seconds=self.commit_seconds)
        prepare: Callable[[ScanRecord], Any]
        prepare = self._prepare_volume if isinstance(self.encoder, VolumeEncoder) else self._prepare_slices
        loader = Prefetcher(prepare, [rec for rec, _ in todo], self.workers, depth=2 * self.workers + 2)
        try:
            if isinstance(self.encoder, VolumeEncoder):
                self._embed_volumes(loader, writer, bar)
            else:
                self._embed_slices(loader, writer, bar)
        finally:
            loader.close()
            try:
                writer.close()
            finally:
                self.rows_written = writer.rows_written

    # -- slice encoders --------------------------------------------------------------------------------------

    def _prepare_slices(self, record: ScanRecord) -> tuple[Any, ...]:
        """Decode one scan (in a loader thread); pinned memory lets its copy to the GPU run asynchronously."""
        self._signatures[record.scan_id] = source_signature(record, self.reader.root)
        scan = self.reader.load(record)
        hu = torch.from_numpy(np.ascontiguousarray(scan.hu))
        if self.encoder.device.type == "cuda":
            hu = hu.pin_memory()
        return record, scan, hu, self._windows[record.scan_id]

    def _jobs(self, loader: Prefetcher, bar: EmbedProgress) -> Iterator[ScanJob]:
        for item in loader:
            if isinstance(item, Failed):
                self._fail(item.record, item.path, item.reason, bar)
                continue
            record, scan, hu, windows = item
            if scan.n_slices == 0:
                self._fail(record, str(record.source), "the scan has no slices", bar)
                continue
            yield ScanJob(record, scan, hu.to(self.encoder.device, non_blocking=True), windows, self.encoder.dim)

    def _embed_slices(self, loader: Prefetcher, writer: StoreWriter, bar: EmbedProgress) -> None:
        encoder = self.encoder
        assert isinstance(encoder, SliceEncoder)
        buffer = BatchBuffer(self.batch_size)
        for segments in cut_batches(self._jobs(loader, bar), self.batch_size):
            with torch.inference_mode():
                batch = encoder.preprocess(buffer.assemble(segments))
            vectors = encoder.embed(batch).numpy()
            n = len(vectors)
            self.slices += n
            bar.slices(n)
            for job in scatter(segments, vectors):
                self._finish(job.record, job.embeddings(), writer, bar)

    # -- volume encoders -------------------------------------------------------------------------------------

    def _prepare_volume(self, record: ScanRecord) -> tuple[Any, ...]:
        """Decode one scan and run the family's 3D preprocessing (in a loader thread, on the CPU)."""
        self._signatures[record.scan_id] = source_signature(record, self.reader.root)
        scan = self.reader.load(record)
        assert isinstance(self.encoder, VolumeEncoder)
        batch = self.encoder.preprocess(scan)
        return record, scan, batch

    def _embed_volumes(self, loader: Prefetcher, writer: StoreWriter, bar: EmbedProgress) -> None:
        for item in loader:
            if isinstance(item, Failed):
                self._fail(item.record, item.path, item.reason, bar)
                continue
            record, scan, batch = item
            vector = self.encoder.embed(batch).numpy()
            self.slices += 1
            bar.slices(1)
            rows = ScanEmbeddings(
                scan_id=scan.scan_id,
                patient_id=scan.patient_id,
                window=np.array([VOLUME_WINDOW], dtype=object),
                slice_idx=np.array([VOLUME_SLICE_IDX], dtype=np.int32),
                z_mm=np.array([float(np.mean(scan.z_mm))]),
                vectors=vector,
            )
            self._finish(record, rows, writer, bar)

    # -- bookkeeping -----------------------------------------------------------------------------------------

    def _finish(self, record: ScanRecord, rows: ScanEmbeddings, writer: StoreWriter, bar: EmbedProgress) -> None:
        try:
            check_vectors(rows.scan_id, rows.vectors)
        except NonFiniteEmbeddingError as exc:
            self._fail(record, str(record.source), f"scan {exc.scan_id}: {exc.reason}", bar)
            return
        rows.source_sig = self._signatures.pop(record.scan_id, None)
        writer.put(rows)
        self.done += 1
        bar.scan_done()

    def _fail(self, record: ScanRecord, path: str, reason: str, bar: EmbedProgress) -> None:
        self.failed += 1
        bar.scan_done()
        # Under --strict a reader's own report raised in the loader thread: raise it here, but report it once.
        if any((p.path, p.reason) == (path, reason) for p in self.problems.for_scan(record.scan_id)):
            if self.problems.strict:
                raise InputError(path, reason)
            return
        self.problems.report(path, reason, scan_id=record.scan_id)
