"""Every setting of a pretraining run, its defaults, and the card name it produces.

:class:`PretrainConfig` is the one place each setting, its type, its default and its help text live: the
Python API validates against it and ``clearbench pretrain`` derives its options from it
(:mod:`clearbench.cli.pretrain`). It is strict: an unknown setting or a value of the wrong type is refused
in one line naming the setting and the type expected, never silently defaulted or coerced.

Defaults follow the paper (section 4.3: AdamW, learning rate 1e-4, 10 warmup epochs, 100 epochs, "all
other parameters as in the official MoCo-v3 repository") and, where the paper is silent, MoCo v3's recipe
for its AdamW-trained ViTs (CONFIG.md): temperature 0.2, weight decay 0.1, momentum 0.99 on a cosine
schedule to 1, a 256-d projection with 4096-d hidden layers, crops of 8-100 % of the slice. ``lr`` is the
rate per 256 images: the optimizer uses ``lr * batch_size / 256`` (MoCo v3 and CLEAR both scale this way).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from clearbench.errors import ClearbenchError
from clearbench.scans.windows import get_window
from clearbench.settings import Settings, describe_validation_error

SOURCE = "pretraining settings"

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


def _as_tuple(value: Any) -> Any:
    """TOML, JSON and the command line give lists where the settings keep (immutable, hashable) tuples."""
    return tuple(value) if isinstance(value, list) else value


def _as_text(value: Any) -> Any:
    """Folders may be given as paths; the settings keep them as text (as saved in checkpoints)."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _default_workers(value: Any) -> Any:
    """None: one data loader worker per CPU core, at most 4."""
    return min(4, os.cpu_count() or 1) if value is None else value


Range = Annotated[tuple[float, float], BeforeValidator(_as_tuple)]
Names = Annotated[tuple[str, ...], BeforeValidator(_as_tuple)]
Folder = Annotated[str | None, BeforeValidator(_as_text)]


class PretrainConfig(Settings):
    """One pretraining run. ``batch_size`` is global (all ranks together), as in MoCo v3.

    ``PretrainConfig("mambaout", epochs=2)``: the architecture may be given first, by position. A
    :class:`ClearbenchError` names a bad setting; the ``--`` option names in messages are the CLI's.
    """

    # Not frozen: the after-validator completes the variant (the family's default) and empty splits in place.
    model_config = ConfigDict(frozen=False)

    arch: str = Field(
        description="Backbone: mambaout, vmamba, vit-convb, or any encoder family that declares pretraining "
        "variants (plugins too); an unknown name lists them."
    )
    method: Literal["moco", "lecl"] = Field(
        "moco", description="moco (MoCo v3) or lecl (lesion-enhanced, paper Eq. 4)."
    )
    dataset: str = Field("deeplesion", description="Dataset to train on; LECL needs one with lesion boxes.")
    lam: float = Field(
        0.0, ge=0.0, description="LECL's lambda: weight of the lesion-slice keys in the denominator (0 = LECL-0)."
    )
    root: Folder = Field(None, description="Dataset folder (default: the root in CLEARBENCH_HOME/config.toml).")
    variant: str | None = Field(
        None,
        description="Backbone size, one the family declares: mambaout femto|kobe|tiny|small|base|nano, vmamba clear, "
        "vit-convb small|base; micro for smoke tests. Default: CLEAR's (768-d).",
    )
    epochs: int = Field(100, ge=1, description="Epochs (the paper: 100).")
    batch_size: int = Field(256, ge=1, description="Global batch over all processes (the paper: 2048; 1024 for ViT).")
    lr: float = Field(
        1e-4, description="Learning rate per 256 images; AdamW runs at lr x batch-size / 256 (the paper: 1e-4)."
    )
    warmup_epochs: float = Field(
        None,
        ge=0.0,
        validate_default=True,
        description="Linear warmup, then cosine decay (default: a tenth of --epochs, at most 10; the paper: 10 of 100).",
    )
    weight_decay: float = Field(0.1, ge=0.0, description="AdamW weight decay (MoCo v3's ViT recipe).")
    tau: float = Field(0.2, description="InfoNCE temperature (MoCo v3's ViT recipe).")
    momentum: float = Field(0.99, description="Initial EMA momentum of the key encoder; rises to 1 on a half cosine.")
    proj_dim: int = Field(256, ge=1, description="Output dim of projector and predictor.")
    mlp_dim: int = Field(4096, ge=1, description="Hidden dim of projector and predictor.")
    image_size: int = Field(
        224, ge=8, description="Side of the training views in pixels; the card embeds at this size."
    )
    crop_scale: Range = Field(
        (0.08, 1.0), description="Smallest and largest random crop, as fractions of the slice area."
    )
    lesion_scale: Range = Field(
        (0.08, 1.0), description="Smallest and largest lesion-centred crop (LECL), as fractions of the slice area."
    )
    windows: Names = Field(
        ("abdomen", "lung"),
        description="HU windows drawn at random per slice; repeat the option; name or name:lo:hi.",
    )
    splits: Names | None = Field(
        None,
        description="Use only scans of these splits (repeatable); e.g. keep a downstream test split out.",
    )
    exclude_test_of: Names = Field(
        (),
        description="Leave out the test patients of this task's stored split, the one every clearbench run of it "
        "uses (repeatable; drawn and stored when absent), as the paper did for task1.",
    )
    store: Folder = Field(
        None,
        description="The store holding the tasks' stored splits, for --exclude-test-of (default: CLEARBENCH_HOME/store).",
    )
    paper_name: str | None = Field(
        None,
        description="Paper row name for the card (default: none; a backbone trained here is not the paper's).",
    )
    tag: str | None = Field(
        None, description="Last part of the card name <arch>-<method>-<tag> (default: the dataset)."
    )
    out: Folder = Field(None, description="Run folder (default: CLEARBENCH_HOME/pretrain/<card name>).")
    seed: int = Field(0, description="Seed of the initial weights, data order and augmentations.")
    workers: Annotated[int, BeforeValidator(_default_workers)] = Field(
        None,
        ge=0,
        validate_default=True,
        description="Data loader worker processes per GPU/process (default: one per CPU core, at most 4).",
    )
    device: str = Field("auto", description="auto (the GPU of this rank when there is one), cpu, cuda or cuda:N.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto (bf16 autocast on GPUs, fp32 on CPUs), fp32, bf16 or fp16."
    )
    cache: Literal["auto", "memory", "stream"] = Field(
        "auto",
        description="memory (decode all scans once, keep HU in RAM), stream (decode each scan once per epoch) or auto.",
    )
    cache_gb: float = Field(
        16.0, ge=0.0, description="With --cache auto: stream once the cohort's HU would exceed this many GiB."
    )
    buffer_size: int = Field(4096, gt=0, description="Slices a streamed cohort shuffles among, per loader worker.")
    checkpoint_every: int = Field(
        0, ge=0, description="Also checkpoint every N steps (0: at the end of each epoch only)."
    )
    stop_after: int | None = Field(
        None, ge=1, description="Stop after this many steps in all, with a checkpoint; run again to continue."
    )
    strict: bool = Field(False, description="Stop at the first unreadable scan.")
    progress: bool = Field(True, description="Show a progress bar.")

    def __init__(self, arch: str | None = None, /, **settings: Any) -> None:
        if arch is not None:
            settings["arch"] = arch
        try:
            super().__init__(**settings)
        except ValidationError as exc:
            raise ClearbenchError(f"{SOURCE}: {describe_validation_error(exc, PretrainConfig)}") from None

    @field_validator("warmup_epochs", mode="before")
    @classmethod
    def _default_warmup(cls, value: Any, info: ValidationInfo) -> Any:
        """None: a tenth of the epochs, at most 10 (MoCo v3 and the paper: 10 of 100)."""
        if value is not None:
            return value
        epochs = info.data.get("epochs")  # absent when refused: then that error stands alone
        return min(10.0, epochs / 10) if epochs is not None else 0.0

    @model_validator(mode="after")
    def _complete_and_check(self) -> PretrainConfig:
        """Check what one field alone cannot; the variant's default is the family's."""
        self.splits = self.splits or None
        if self.lam > 0 and self.method != "lecl":
            raise ClearbenchError("--lam applies to --method lecl only")
        from clearbench.pretraining.backbones import variant_params  # imports torch: not for the CLI's --help

        self.variant, _ = variant_params(self.arch, self.variant, self.image_size)
        for name in ("lr", "tau"):
            if not getattr(self, name) > 0:
                raise ClearbenchError(f"--{name} must be positive, got {getattr(self, name)}")
        if not self.warmup_epochs <= self.epochs:
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
        if self.tag is not None and (not self.tag or any(c.isspace() or c == "/" for c in self.tag)):
            raise ClearbenchError(f"--tag {self.tag!r} must be non-empty, without spaces or '/'")
        return self

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
        return self.model_dump()

    def differences(self, saved: dict[str, Any]) -> list[str]:
        """The settings that differ from a saved run's and would change what is trained."""
        out = []
        for name in type(self).model_fields:
            if name in RESUMABLE_CHANGES or name not in saved:
                continue
            mine, theirs = getattr(self, name), saved[name]
            if isinstance(mine, tuple):
                theirs = tuple(theirs) if theirs is not None else None
            if mine != theirs:
                out.append(f"{name}: {theirs!r} in the checkpoint, {mine!r} now")
        return out
