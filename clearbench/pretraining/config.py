"""Every setting of a pretraining run, its defaults, and the card name it produces.

Defaults follow the paper (section 4.3: AdamW, learning rate 1e-4, 10 warmup epochs, 100 epochs, "all
other parameters as in the official MoCo-v3 repository") and, where the paper is silent, MoCo v3's recipe
for its AdamW-trained ViTs (CONFIG.md): temperature 0.2, weight decay 0.1, momentum 0.99 on a cosine
schedule to 1, a 256-d projection with 4096-d hidden layers, crops of 8-100 % of the slice. ``lr`` is the
rate per 256 images: the optimizer uses ``lr * batch_size / 256`` (MoCo v3 and CLEAR both scale this way).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from clearbench.errors import ClearbenchError
from clearbench.pretraining.backbones import ARCHES, variant_params
from clearbench.scans.windows import get_window

METHODS = ("moco", "lecl")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CACHES = ("auto", "memory", "stream")

# Settings that may change between a run and its resumption without changing what is trained.
RESUMABLE_CHANGES = frozenset(
    {
        "workers",
        "device",
        "stop_after",
        "checkpoint_every",
        "cache",
        "cache_gb",
        "buffer_size",
        "strict",
        "out",
        "progress",
        "paper_name",
    }
)


@dataclass
class PretrainConfig:
    """One pretraining run. ``batch_size`` is global (all ranks together), as in MoCo v3."""

    arch: str
    method: str = "moco"
    dataset: str = "deeplesion"
    root: str | None = None
    lam: float = 0.0
    variant: str | None = None
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.1
    warmup_epochs: float | None = None  # None: a tenth of the epochs, at most 10 (MoCo v3 and the paper: 10 of 100)
    tau: float = 0.2
    momentum: float = 0.99
    proj_dim: int = 256
    mlp_dim: int = 4096
    image_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    lesion_scale: tuple[float, float] = (0.08, 1.0)
    windows: tuple[str, ...] = ("abdomen", "lung")
    splits: tuple[str, ...] | None = None
    exclude_test_of: tuple[str, ...] = ()
    store: str | None = None  # the store holding the stored splits of exclude_test_of (default CLEARBENCH_HOME/store)
    paper_name: str | None = None  # a paper row name for the card: only ever the user's explicit choice
    seed: int = 0
    tag: str | None = None
    out: str | None = None
    workers: int | None = None  # None: one per CPU core, at most 4
    device: str = "auto"
    precision: str = "auto"
    cache: str = "auto"
    cache_gb: float = 16.0
    buffer_size: int = 4096
    checkpoint_every: int = 0
    stop_after: int | None = None
    strict: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.crop_scale = tuple(float(v) for v in self.crop_scale)  # type: ignore[assignment]
        self.lesion_scale = tuple(float(v) for v in self.lesion_scale)  # type: ignore[assignment]
        self.windows = tuple(self.windows)
        self.splits = tuple(self.splits) if self.splits else None
        if self.workers is None:
            self.workers = min(4, os.cpu_count() or 1)
        if self.warmup_epochs is None:
            self.warmup_epochs = min(10.0, self.epochs / 10)
        self.exclude_test_of = tuple(self.exclude_test_of)
        self.root = str(self.root) if self.root is not None else None
        self.out = str(self.out) if self.out is not None else None
        self.store = str(self.store) if self.store is not None else None
        self.validate()

    def validate(self) -> None:
        if self.arch not in ARCHES:
            raise ClearbenchError(f"unknown architecture '{self.arch}'; choose one of {', '.join(ARCHES)}")
        if self.method not in METHODS:
            raise ClearbenchError(f"unknown method '{self.method}'; choose moco or lecl")
        if self.lam < 0:
            raise ClearbenchError(f"--lam must be >= 0, got {self.lam}")
        if self.lam > 0 and self.method != "lecl":
            raise ClearbenchError("--lam applies to --method lecl only")
        self.variant, _ = variant_params(self.arch, self.variant, self.image_size)
        for name in ("epochs", "batch_size", "proj_dim", "mlp_dim", "image_size"):
            if getattr(self, name) <= 0:
                raise ClearbenchError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("lr", "tau"):
            if not getattr(self, name) > 0:
                raise ClearbenchError(f"--{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ClearbenchError(
                f"--warmup-epochs {self.warmup_epochs:g} does not fit in --epochs {self.epochs}; "
                f"pass --warmup-epochs between 0 and {self.epochs}"
            )
        if not 0 <= self.momentum < 1:
            raise ClearbenchError(f"--momentum must lie in [0, 1), got {self.momentum}")
        for name in ("crop_scale", "lesion_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ClearbenchError(f"--{name.replace('_', '-')} must satisfy 0 < min <= max <= 1, got {lo} {hi}")
        if not self.windows:
            raise ClearbenchError("at least one HU window is needed")
        for w in self.windows:
            get_window(w)
        if self.precision not in PRECISIONS:
            raise ClearbenchError(f"unknown precision '{self.precision}'; choose one of {', '.join(PRECISIONS)}")
        if self.cache not in CACHES:
            raise ClearbenchError(f"unknown cache mode '{self.cache}'; choose one of {', '.join(CACHES)}")
        if self.workers < 0 or self.checkpoint_every < 0 or self.buffer_size <= 0:
            raise ClearbenchError("--workers and --checkpoint-every must be >= 0 and --buffer-size > 0")
        if self.stop_after is not None and self.stop_after <= 0:
            raise ClearbenchError(f"--stop-after must be positive, got {self.stop_after}")
        if self.tag is not None and (not self.tag or any(c.isspace() or c == "/" for c in self.tag)):
            raise ClearbenchError(f"--tag {self.tag!r} must be non-empty, without spaces or '/'")

    @property
    def method_tag(self) -> str:
        """``moco``, ``lecl0``, ``lecl1``, ``lecl0p5`` ... (the paper's MambaOut-LECL-0 naming)."""
        if self.method == "moco":
            return "moco"
        return "lecl" + f"{self.lam:g}".replace(".", "p")

    @property
    def card_name(self) -> str:
        """The encoder card this run writes: ``<arch>-<method tag>-<tag>`` (tag: the dataset by default)."""
        return f"{self.arch}-{self.method_tag}-{self.tag or self.dataset}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def differences(self, saved: dict[str, Any]) -> list[str]:
        """The settings that differ from a saved run's and would change what is trained."""
        out = []
        for f in fields(self):
            if f.name in RESUMABLE_CHANGES or f.name not in saved:
                continue
            mine, theirs = getattr(self, f.name), saved[f.name]
            if isinstance(mine, tuple):
                theirs = tuple(theirs) if theirs is not None else None
            if mine != theirs:
                out.append(f"{f.name}: {theirs!r} in the checkpoint, {mine!r} now")
        return out
