"""``pretrain()``: a MoCo v3 or LECL run from a dataset to a ready encoder card, on one process or many.

The run folder (``CLEARBENCH_HOME/pretrain/<card name>/`` unless ``out`` is given) holds:

- ``checkpoint.pt``: the full training state (:mod:`clearbench.pretraining.checkpoint`); a run started again
  with the same settings continues from it;
- ``metrics.jsonl``: one line per step (loss, learning rate, momentum, images/s, lesion slices in the
  batch);
- ``slices.json``: the slice index of a streamed cohort, so a resumed run skips the indexing pass;
- at the end, ``backbone.pt`` and ``pretrain.json`` (:mod:`clearbench.pretraining.export`), and the card in
  ``CLEARBENCH_HOME/encoders/``.

Under ``torchrun`` every rank runs this same function: rank 0 alone writes files and shows progress; the
others compute. The step follows MoCo v3's ``main_moco.py``: per-iteration learning rate and momentum, both
views through the online network in one DDP call, the momentum update, the keys, the symmetric loss.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from clearbench import runtime
from clearbench.config import home
from clearbench.encoders.image import IMAGENET_MEAN, IMAGENET_STD
from clearbench.errors import ClearbenchError
from clearbench.pretraining.augment import AugmentConfig, TwoViews, to_model_input
from clearbench.pretraining.backbones import Backbone, build_backbone
from clearbench.pretraining.checkpoint import CHECKPOINT, FORMAT, atomic_save, load_checkpoint, rng_state, set_rng_state
from clearbench.pretraining.config import PretrainConfig
from clearbench.pretraining.data import (
    MemorySlices,
    ResumableSampler,
    SliceIndex,
    SliceViews,
    StreamingSlices,
    index_cohort,
)
from clearbench.pretraining.distributed import check_replicas
from clearbench.pretraining.export import WEIGHTS, check_card_name_free, export
from clearbench.pretraining.moco import MoCo, lr_at, momentum_at
from clearbench.problems import ProblemLog
from clearbench.progress import LoggedProgress
from clearbench.scans.base import DatasetReader, ScanRecord
from clearbench.scans.registry import open_dataset
from clearbench.scans.windows import get_window

METRICS = "metrics.jsonl"
SLICES = "slices.json"


@dataclass
class PretrainResult:
    """What a run produced. ``finished`` is False when it stopped early (``stop_after``) to be resumed."""

    card_name: str
    run_dir: Path
    steps: int
    total_steps: int
    finished: bool
    weights: Path | None = None
    card_path: Path | None = None
    losses: list[float] = field(default_factory=list)  # the loss of every step this call ran


def pretrain(
    arch: str,
    method: str = "moco",
    dataset: str = "deeplesion",
    *,
    problems: ProblemLog | None = None,
    **settings: Any,
) -> PretrainResult:
    """Pretrain ``arch`` (an encoder family that declares pretraining: mambaout, vmamba, vit-convb, or a
    plugin's) with ``method`` (moco, lecl) on ``dataset``.

    ``settings`` are the fields of :class:`~clearbench.pretraining.config.PretrainConfig` (``lam``, ``root``,
    ``epochs``, ``batch_size``, ``lr`` ...); an unknown one, or a value of the wrong type, is a one-line
    :class:`~clearbench.errors.ClearbenchError`. Bad scans go to ``problems`` (created strict when
    ``strict=True``). Under ``torchrun`` call it on every rank. Returns where the card and weights are.
    """
    return run(PretrainConfig(arch=arch, method=method, dataset=dataset, **settings), problems)


def run(config: PretrainConfig, problems: ProblemLog | None = None) -> PretrainResult:
    ctx = runtime.start(config.device)
    try:
        return _Run(config, ctx, problems).execute()
    finally:
        runtime.close(ctx)


def normalisation(backbone: Backbone, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The family's mean and std, so training sees inputs normalised as the encoder will at embed time."""
    prep = backbone.family.default_preprocessing
    mean = torch.tensor(prep.get("mean", IMAGENET_MEAN), dtype=torch.float32, device=device)
    std = torch.tensor(prep.get("std", IMAGENET_STD), dtype=torch.float32, device=device)
    return mean, std


def run_dir_of(config: PretrainConfig) -> Path:
    return Path(config.out).expanduser() if config.out else home() / "pretrain" / config.card_name


class _EpochData:
    """Batches of one epoch, from either loading mode, starting after the batches already done."""

    def __init__(self, loader: DataLoader, source: ResumableSampler | StreamingSlices, steps_per_epoch: int) -> None:
        self.loader = loader
        self.source = source
        self.steps_per_epoch = steps_per_epoch

    def batches(self, epoch: int, skip: int) -> Iterator[dict[str, torch.Tensor]]:
        self.source.start(epoch, skip)
        return iter(self.loader)


class _MetricsLog:
    """``metrics.jsonl``, one JSON line per step, flushed as it goes; a no-op on ranks other than 0."""

    def __init__(self, path: Path | None, resumed_step: int) -> None:
        self.fh = None
        if path is not None:
            kept = []
            if path.is_file():
                kept = [
                    line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= resumed_step
                ]
            path.write_text("".join(line + "\n" for line in kept))
            self.fh = path.open("a")

    def write(self, entry: dict[str, Any]) -> None:
        if self.fh is not None:
            self.fh.write(json.dumps(entry) + "\n")
            self.fh.flush()

    def __enter__(self) -> _MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            self.fh.close()


class _Run:
    def __init__(self, config: PretrainConfig, ctx: runtime.DistContext, problems: ProblemLog | None) -> None:
        self.config = config
        self.ctx = ctx
        # Only rank 0 reports problems; the others keep theirs quiet (they see the same scans, except when
        # streaming, where :meth:`_index` hands their findings to rank 0).
        if problems is None or not ctx.is_main:
            problems = ProblemLog(strict=config.strict)
        self.problems = problems
        self.run_dir = run_dir_of(config)
        self.console = Console(stderr=True, quiet=not (ctx.is_main and config.progress))
        self.excluded_patients: dict[str, int] = {}  # task -> test patients left out of pretraining
        self.excluded_splits: dict[str, str] = {}  # task -> the stored split those patients come from

    # -- data --------------------------------------------------------------------------------------
    def _records(self, reader: DatasetReader) -> list[ScanRecord]:
        records = reader.records()
        if self.config.splits:
            wanted = set(self.config.splits)
            available = sorted({str(r.split) for r in records})
            records = [r for r in records if r.split in wanted]
            if not records:
                raise ClearbenchError(
                    f"no scans of {self.config.dataset} in split(s) {', '.join(sorted(wanted))}; "
                    f"the splits present are {', '.join(available)}"
                )
        if not records:
            raise ClearbenchError(f"no scans found for dataset '{self.config.dataset}' under {reader.root}")
        return self._without_test_patients(reader, records)

    def _without_test_patients(self, reader: DatasetReader, records: list[ScanRecord]) -> list[ScanRecord]:
        """Leave out the patients that the ``exclude_test_of`` tasks test on, so a backbone never trains on
        the images it is later evaluated on (the paper kept task 1's test patients out of pretraining)."""
        from clearbench.protocols.test_patients import task_test_set
        from clearbench.tasks.registry import get_task, list_tasks

        if not self.config.exclude_test_of and not self.config.splits:
            tested = [c.name for c in list_tasks() if c.dataset == self.config.dataset]
            if tested:
                self.console.print(
                    escape(
                        f"note: pretraining on every patient of {self.config.dataset}, including the test patients of "
                        f"{', '.join(tested)}; pass --exclude-test-of {tested[0]} to keep them out, as the paper did"
                    )
                )
        for name in self.config.exclude_test_of:
            card = get_task(name)
            if card.dataset != self.config.dataset:
                raise ClearbenchError(
                    f"task {card.name} is on dataset '{card.dataset}', not '{self.config.dataset}': "
                    "--exclude-test-of takes tasks on the pretraining dataset"
                )
            held = task_test_set(card, reader.records(), reader.label_names, store=self.config.store)
            self.excluded_patients[card.name] = len(held.patients)
            self.excluded_splits[card.name] = held.split_id
            records = [r for r in records if r.patient_id not in held.patients]
            self.console.print(
                escape(
                    f"left out the {len(held.patients)} test patients of {card.name} (its stored split {held.split_id})"
                )
            )
        if not records:
            raise ClearbenchError(f"no scans of {self.config.dataset} are left once the test patients are left out")
        return records

    def _index(
        self, reader: DatasetReader, records: list[ScanRecord]
    ) -> tuple[SliceIndex, list[ScanRecord], list | None]:
        cfg, ctx = self.config, self.ctx
        cache_bytes = {"stream": 0, "memory": math.inf, "auto": cfg.cache_gb * 2**30}[cfg.cache]
        saved = self.run_dir / SLICES
        by_id = {r.scan_id: r for r in records}
        if cfg.cache == "stream" and saved.is_file():
            index = SliceIndex.load(saved)
            if all(s in by_id for s in index.scan_ids):
                return index, [by_id[s] for s in index.scan_ids], None
        # Streaming needs no pixels kept, so the ranks split the indexing pass; caching needs them all.
        share = records[ctx.rank :: ctx.world] if cfg.cache == "stream" else records
        reported = len(self.problems.problems)
        with self._progress() as progress:
            task = progress.add_task("indexing scans", total=len(share), ips="", loss="")
            index, kept, volumes = index_cohort(reader, share, cache_bytes, lambda: progress.advance(task))
        if cfg.cache == "stream":
            found = [p.to_dict() for p in self.problems.problems[reported:]]
            parts = runtime.gather_objects(ctx, (index.to_json(), found))
            if ctx.is_main:  # the other ranks read other scans: their unreadable ones are reported here
                others = [p for rank, (_, problems) in enumerate(parts) if rank != ctx.rank for p in problems]
                for p in others:
                    self.problems.report(p["path"], p["reason"], p["scan_id"], p["severity"])
            order = {r.scan_id: i for i, r in enumerate(records)}
            merged = sorted(
                (
                    (sid, n, boxes)
                    for part, _ in parts
                    for sid, n, boxes in zip(part["scan_ids"], part["n_slices"], part["boxes"], strict=True)
                ),
                key=lambda t: order[t[0]],
            )
            index = SliceIndex.from_json(
                {
                    "scan_ids": [m[0] for m in merged],
                    "n_slices": [m[1] for m in merged],
                    "boxes": [m[2] for m in merged],
                }
            )
            kept = [by_id[s] for s in index.scan_ids]
            if ctx.is_main:
                index.save(saved)
        return index, kept, volumes

    def _data(self) -> tuple[_EpochData, SliceIndex]:
        cfg, ctx = self.config, self.ctx
        if cfg.batch_size % ctx.world:
            raise ClearbenchError(
                f"--batch-size {cfg.batch_size} must be divisible by the number of processes ({ctx.world})"
            )
        local = cfg.batch_size // ctx.world
        reader = open_dataset(cfg.dataset, cfg.root, problems=self.problems)
        records = self._records(reader)
        index, kept, volumes = self._index(reader, records)
        if index.total == 0:
            raise ClearbenchError(
                f"none of the {len(records)} scans of {cfg.dataset} could be read; see the errors above"
            )
        if cfg.method == "lecl" and index.n_lesion_slices == 0:
            raise ClearbenchError(
                f"LECL needs slices with lesion boxes, and {cfg.dataset} has none in the scans used; "
                "use --method moco, or a dataset whose scans carry lesion annotations"
            )
        steps = index.total // cfg.batch_size
        if steps == 0:
            raise ClearbenchError(
                f"{cfg.dataset} has {index.total} slices, fewer than one batch of {cfg.batch_size}; lower --batch-size"
            )
        item = SliceViews(
            [get_window(w) for w in cfg.windows],
            TwoViews(AugmentConfig(cfg.image_size, cfg.crop_scale, cfg.lesion_scale)),
            lesion_crops=cfg.method == "lecl",
        )
        pin = ctx.device.type == "cuda"
        source: ResumableSampler | StreamingSlices
        if volumes is not None:
            dataset = MemorySlices(volumes, index, item, cfg.seed)
            source = ResumableSampler(dataset, ctx.world, ctx.rank, cfg.seed, local)
            loader = DataLoader(
                dataset,
                batch_size=local,
                sampler=source,
                num_workers=cfg.workers,
                drop_last=True,
                pin_memory=pin,
                persistent_workers=cfg.workers > 0,
            )
        else:
            # The index pass reported each unreadable scan or slice once; streaming decodes every scan again
            # each epoch, on every rank and worker, and must not report them all over again.
            reader.problems = ProblemLog()
            source = StreamingSlices(
                reader,
                kept,
                index,
                item,
                seed=cfg.seed,
                rank=ctx.rank,
                world=ctx.world,
                workers=cfg.workers,
                batch_size=local,
                steps_per_epoch=steps,
                buffer_size=cfg.buffer_size,
            )
            loader = DataLoader(source, batch_size=local, num_workers=cfg.workers, pin_memory=pin)
        return _EpochData(loader, source, steps), index

    # -- model ------------------------------------------------------------------------------------
    def _precision(self) -> torch.dtype | None:
        wanted, device = self.config.precision, self.ctx.device
        if wanted == "auto":
            if device.type != "cuda":
                return None
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[wanted]

    def _model(self) -> tuple[Backbone, MoCo, torch.nn.Module]:
        cfg, ctx = self.config, self.ctx
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        backbone = build_backbone(cfg.arch, cfg.variant, cfg.image_size)
        moco = MoCo(backbone.module, backbone.dim, cfg.proj_dim, cfg.mlp_dim, cfg.tau)
        if ctx.active and ctx.device.type == "cuda":
            moco = torch.nn.SyncBatchNorm.convert_sync_batchnorm(moco)  # MoCo v3: BN over the global batch
        moco.to(ctx.device)
        online: torch.nn.Module = moco.online
        if ctx.active:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            online = DistributedDataParallel(moco.online, device_ids=ids, gradient_as_bucket_view=True)
        return backbone, moco, online

    # -- the run ----------------------------------------------------------------------------------
    def _progress(self) -> LoggedProgress:
        return LoggedProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[ips]}"),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not (self.ctx.is_main and self.config.progress),
        )

    def _checkpoint(
        self,
        moco: MoCo,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        step: int,
        steps_per_epoch: int,
    ) -> None:
        replicas = check_replicas(self.ctx, moco.online, moco.momentum)
        rngs = runtime.gather_objects(self.ctx, rng_state())
        if self.ctx.is_main:
            atomic_save(
                {
                    "format": FORMAT,
                    "config": self.config.to_dict(),
                    "step": step,
                    "epoch": step / steps_per_epoch,
                    "steps_per_epoch": steps_per_epoch,
                    "world": self.ctx.world,
                    "online": moco.online.state_dict(),
                    "momentum": moco.momentum.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rngs,
                    "replica_fingerprints": replicas,
                },
                self.run_dir / CHECKPOINT,
            )

    def _resume_state(self) -> dict[str, Any] | None:
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            return None
        ckpt = load_checkpoint(path)
        diffs = self.config.differences(ckpt["config"])
        if diffs:
            raise ClearbenchError(
                f"{path}: this run folder holds a run with other settings ({'; '.join(diffs)}); "
                "use the same settings to resume it, or another --tag/--out to start a new run"
            )
        return ckpt

    def _metrics(self, resumed_step: int) -> _MetricsLog:
        """The metrics log, cut back to the resumed step (a killed run may have logged past its checkpoint)."""
        return _MetricsLog(self.run_dir / METRICS if self.ctx.is_main else None, resumed_step)

    def execute(self) -> PretrainResult:
        cfg, ctx = self.config, self.ctx
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            check_card_name_free(cfg.card_name, self.run_dir / WEIGHTS)
        runtime.barrier(ctx)
        ckpt = self._resume_state()
        data, index = self._data()
        backbone, moco, online = self._model()
        optimizer = torch.optim.AdamW(
            [p for p in moco.online.parameters() if p.requires_grad],
            lr=cfg.lr * cfg.batch_size / 256,
            weight_decay=cfg.weight_decay,
            fused=ctx.device.type in ("cuda", "cpu"),
        )
        dtype = self._precision()
        scaler = torch.amp.GradScaler(ctx.device.type, enabled=dtype == torch.float16)
        torch.manual_seed(cfg.seed + 1 + ctx.rank)  # training randomness (e.g. drop path) differs per rank
        step = self._restore(ckpt, moco, optimizer, scaler, data.steps_per_epoch) if ckpt is not None else 0
        del ckpt
        total = data.steps_per_epoch * cfg.epochs
        start = time.time()
        step, losses = self._train(data, backbone, moco, online, optimizer, scaler, dtype, step, total)
        result = PretrainResult(cfg.card_name, self.run_dir, step, total, step >= total, losses=losses)
        if result.finished and ctx.is_main:
            result.weights, result.card_path = export(
                self.run_dir, backbone, moco.backbone, cfg, self._provenance(index, step, time.time() - start)
            )
        runtime.barrier(ctx)
        return result

    def _restore(
        self,
        ckpt: dict[str, Any],
        moco: MoCo,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        steps_per_epoch: int,
    ) -> int:
        """Load the saved training state; returns the number of steps already done."""
        if ckpt["steps_per_epoch"] != steps_per_epoch:
            raise ClearbenchError(
                f"{self.run_dir / CHECKPOINT}: the checkpoint has {ckpt['steps_per_epoch']} steps per epoch but the "
                f"cohort now gives {steps_per_epoch}; the dataset changed, so start a new run (another --tag or --out)"
            )
        moco.online.load_state_dict(ckpt["online"])
        moco.momentum.load_state_dict(ckpt["momentum"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if ckpt["world"] == self.ctx.world:  # else the seeds set above stand in
            set_rng_state(ckpt["rng"][self.ctx.rank])
        return int(ckpt["step"])

    def _train(
        self,
        data: _EpochData,
        backbone: Backbone,
        moco: MoCo,
        online: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        dtype: torch.dtype | None,
        step: int,
        total: int,
    ) -> tuple[int, list[float]]:
        """Steps from ``step`` to the end (or ``stop_after``), checkpointing; returns (steps done, their losses)."""
        cfg, ctx = self.config, self.ctx
        spe = data.steps_per_epoch
        stop_at = min(total, cfg.stop_after) if cfg.stop_after else total
        mean, std = normalisation(backbone, ctx.device)
        losses: list[float] = []
        step_time: float | None = None
        moco.train()
        with self._metrics(step) as metrics, self._progress() as progress:
            task = progress.add_task(escape(cfg.card_name), total=total, completed=step, ips="", loss="")
            while step < stop_at:
                epoch, skip = divmod(step, spe)
                tick = time.perf_counter()
                for batch in data.batches(epoch, skip):
                    lr = lr_at(step / spe, cfg.epochs, cfg.lr * cfg.batch_size / 256, cfg.warmup_epochs)
                    m = momentum_at(step / spe, cfg.epochs, cfg.momentum)
                    loss, n_lesion = training_step(
                        moco,
                        online,
                        optimizer,
                        scaler,
                        batch,
                        lr=lr,
                        momentum=m,
                        lam=cfg.lam,
                        dtype=dtype,
                        mean=mean,
                        std=std,
                        ctx=ctx,
                    )
                    step += 1
                    now = time.perf_counter()
                    step_time = now - tick if step_time is None else 0.9 * step_time + 0.1 * (now - tick)
                    tick = now
                    ips = cfg.batch_size / step_time
                    losses.append(loss)
                    metrics.write(
                        {
                            "step": step,
                            "epoch": step / spe,
                            "loss": loss,
                            "lr": lr,
                            "momentum": m,
                            "images_per_s": ips,
                            "lesion_slices": n_lesion,
                        }
                    )
                    progress.update(task, completed=step, ips=f"{ips:,.0f} img/s", loss=f"loss {loss:.4f}")
                    if step >= stop_at:
                        break
                    if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step % spe:
                        self._checkpoint(moco, optimizer, scaler, step, spe)
                self._checkpoint(moco, optimizer, scaler, step, spe)  # end of the epoch, or the stop
        return step, losses

    def _provenance(self, index: SliceIndex, steps: int, seconds: float) -> dict[str, Any]:
        from clearbench.version import __version__

        cfg = self.config
        curve = self._epoch_losses()
        return {
            "arch": cfg.arch,
            "variant": cfg.variant,
            "method": cfg.method,
            "lambda": cfg.lam,
            "epochs": cfg.epochs,
            "steps": steps,
            "dataset": cfg.dataset,
            "root": cfg.root,
            "splits": cfg.splits,
            "excluded_test_patients": self.excluded_patients,
            "excluded_test_splits": self.excluded_splits,
            "seed": cfg.seed,
            "world_size": self.ctx.world,
            "scans": len(index.scan_ids),
            "slices": index.total,
            "lesion_slices": index.n_lesion_slices,
            "settings": cfg.to_dict(),
            "epoch_losses": curve,
            "seconds_last_call": round(seconds, 1),
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "clearbench_version": __version__,
            "torch_version": torch.__version__,
        }

    def _epoch_losses(self) -> list[float]:
        """The mean loss of each epoch, from the metrics file (so a resumed run has the whole curve)."""
        path = self.run_dir / METRICS
        sums: dict[int, list[float]] = {}
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            sums.setdefault(math.ceil(entry["epoch"]) - 1, []).append(entry["loss"])
        return [sum(v) / len(v) for _, v in sorted(sums.items())]


def training_step(
    moco: MoCo,
    online: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batch: dict[str, torch.Tensor],
    *,
    lr: float,
    momentum: float,
    lam: float,
    dtype: torch.dtype | None,
    mean: torch.Tensor,
    std: torch.Tensor,
    ctx: runtime.DistContext,
) -> tuple[float, int]:
    """One optimizer step on a loader batch; returns (loss averaged over ranks, lesion slices in the batch).

    ``online`` is ``moco.online`` or its DDP wrapper. The momentum update comes before the keys, as in
    MoCo v3, so the keys of step t come from the EMA that includes the online weights of step t - 1.
    """
    device = ctx.device
    for group in optimizer.param_groups:
        group["lr"] = lr
    x1 = to_model_input(batch["view1"].to(device, non_blocking=True), mean, std)
    x2 = to_model_input(batch["view2"].to(device, non_blocking=True), mean, std)
    lesion = batch["lesion"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        q1, q2 = online(x1, x2)
        moco.update_momentum(momentum)
        k1, k2 = moco.keys(x1, x2)
        loss = moco.loss(q1, q2, k1, k2, lesion, lam)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    n_lesion = round(runtime.all_mean(ctx, lesion.sum()) * ctx.world)
    return runtime.all_mean(ctx, loss), n_lesion
