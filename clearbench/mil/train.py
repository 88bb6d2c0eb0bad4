"""Training one head on one fold: AdamW, early stopping on validation loss, best weights restored.

:func:`fit` builds the model itself (from a factory, after seeding) and its own optimizer, so no fold can
ever start from another fold's weights or optimizer state: the flaw of the paper's code, which builds
the model once and keeps training it across folds. Only the validation bags reach
:func:`evaluate_loss`, the one function early stopping listens to.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clearbench.mil.data import BagSet, bucketed_batches, make_batch, sorted_batches

LossKind = Literal["bce", "ce"]


@dataclass(frozen=True)
class TrainConfig:
    """The paper's downstream recipe (section 4.3): AdamW, lr 1e-4, batch 128, 32 epochs, patience 8.

    ``loss`` is ``bce`` for multi-label tasks (one logit per label) and ``ce`` for a binary task
    trained as two-class cross-entropy (two logits; the positive class is index 1). ``standardize``
    z-scores every feature with the training bags' statistics (see :class:`Standardized`); the paper
    feeds raw features, so its recipe leaves it off.
    """

    loss: LossKind = "bce"
    lr: float = 1e-4
    weight_decay: float = 1e-2
    batch_size: int = 128
    max_epochs: int = 32
    patience: int = 8
    standardize: bool = False
    min_steps: int = 0
    device: str = "cpu"

    def n_out(self, n_labels: int) -> int:
        return 2 if self.loss == "ce" else n_labels

    def batch_size_for(self, n_train: int) -> int:
        """The batch a fold of ``n_train`` training bags trains with.

        ``batch_size``, unless ``max_epochs`` epochs of it would give fewer than ``min_steps`` optimizer
        steps: then the largest batch that gives ``ceil(min_steps / max_epochs)`` steps per epoch. The
        paper's batch of 128 gives a cohort of 96 training bags one step per epoch, 32 in all, too few
        for the head to learn; a large cohort keeps the paper's batch.
        """
        if self.min_steps <= 0 or n_train <= 0 or self.planned_steps(n_train, self.batch_size) >= self.min_steps:
            return self.batch_size
        per_epoch = math.ceil(self.min_steps / self.max_epochs)
        return max(1, min(self.batch_size, n_train // per_epoch))

    def planned_steps(self, n_train: int, batch_size: int | None = None) -> int:
        """Optimizer steps of a fold that trains every epoch (early stopping may stop it sooner)."""
        b = self.batch_size_for(n_train) if batch_size is None else batch_size
        return math.ceil(n_train / b) * self.max_epochs if n_train else 0


@dataclass
class EpochInfo:
    epoch: int
    max_epochs: int
    train_loss: float
    val_loss: float
    best_epoch: int


@dataclass
class TrainResult:
    """The model with its best-validation weights loaded, and the loss curves that chose them."""

    model: nn.Module
    best_epoch: int
    best_val_loss: float
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    batch_size: int = 0
    steps: int = 0

    @property
    def epochs_run(self) -> int:
        return len(self.train_loss)


@dataclass
class Predictions:
    """Per-scan outputs of a model on one set of bags.

    ``prob`` ``(n, n_labels)`` holds positive-class probabilities. ``attention`` ``(N,)`` is aligned
    with the instance rows of the bags (``offsets``), or None for heads without attention.
    """

    scan_ids: list[str]
    y_true: np.ndarray
    prob: np.ndarray
    attention: np.ndarray | None
    offsets: np.ndarray

    def attention_of(self, i: int) -> np.ndarray | None:
        if self.attention is None:
            return None
        return self.attention[self.offsets[i] : self.offsets[i + 1]]


def feature_stats(bags: BagSet) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation over every instance of ``bags``.

    :func:`fit` calls this on the training bags only, so validation and test data never shape the scaling.
    A constant feature gets std 1 (it becomes 0 rather than NaN).
    """
    x = bags.features.double()
    mean = x.mean(dim=0)
    std = x.std(dim=0, correction=0) if len(x) > 1 else torch.ones_like(mean)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return mean.float(), std.float()


class Standardized(nn.Module):
    """A head behind a fixed z-score of its input features: ``(x - mean) / std``, padding left at zero.

    Encoders give features whose spread differs by orders of magnitude (hu-hist's histogram counts and
    moments by about 4,000x); a head with one learning rate for all of them learns the wide ones only.
    ``mean`` and ``std`` are buffers, so they are part of the state dict a fold's predictions come from.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, head: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.head = head
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = (x - self.mean) / self.std
        if x.dim() == 3 and mask is not None:
            z = z.masked_fill(~mask.unsqueeze(-1), 0.0)
        return self.head(z, mask)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch: model init and dropout draw from torch's global generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def loss_fn(logits: torch.Tensor, y: torch.Tensor, kind: LossKind, reduction: str = "mean") -> torch.Tensor:
    if kind == "ce":
        return F.cross_entropy(logits, y[:, 0].long(), reduction=reduction)
    return F.binary_cross_entropy_with_logits(logits, y, reduction=reduction)


def probabilities(logits: torch.Tensor, kind: LossKind) -> torch.Tensor:
    if kind == "ce":
        return torch.softmax(logits, dim=-1)[:, 1:]
    return torch.sigmoid(logits)


@torch.no_grad()
def evaluate_loss(model: nn.Module, bags: BagSet, cfg: TrainConfig) -> float:
    """Loss on ``bags`` in eval mode, reduced like the training loss (the mean over bags, and over labels
    for BCE) so that the two curves compare; early stopping reads only this, on validation bags."""
    model.eval()
    total = 0.0
    for index in sorted_batches(bags.lengths, cfg.batch_size):
        batch = make_batch(bags, index)
        logits, _ = model(batch.x, batch.mask)
        total += float(loss_fn(logits, batch.y, cfg.loss, reduction="sum"))
    per_bag = 1 if cfg.loss == "ce" else bags.targets.shape[1]
    return total / max(len(bags) * per_bag, 1)


@torch.no_grad()
def predict(model: nn.Module, bags: BagSet, cfg: TrainConfig) -> Predictions:
    """Probabilities and attention weights for every bag, in the order of ``bags``.

    The bags are moved to ``cfg.device``, where :func:`fit` left the model; the outputs come back on the CPU.
    """
    model.eval()
    bags = bags.to(cfg.device)
    n = len(bags)
    n_labels = bags.targets.shape[1]
    prob = torch.empty((n, n_labels), dtype=torch.float32)
    attention = torch.zeros(int(bags.offsets[-1]) if n else 0, dtype=torch.float32)
    has_attention = False
    offsets = bags.offsets.cpu()
    for index in sorted_batches(bags.lengths, cfg.batch_size):
        batch = make_batch(bags, index)
        logits, weights = model(batch.x, batch.mask)
        cpu_index = index.cpu()
        prob[cpu_index] = probabilities(logits, cfg.loss).float().cpu()
        if weights is not None:
            has_attention = True
            mask = batch.mask.cpu()
            rows = offsets[cpu_index].unsqueeze(1) + torch.arange(mask.shape[1]).unsqueeze(0)
            attention[rows[mask]] = weights.float().cpu()[mask]
    return Predictions(
        scan_ids=list(bags.scan_ids),
        y_true=bags.targets.cpu().numpy(),
        prob=prob.numpy(),
        attention=attention.numpy() if has_attention else None,
        offsets=offsets.numpy(),
    )


class EarlyStopping:
    """Stop after ``patience`` epochs without a lower validation loss; remember the best weights."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_loss = float("inf")
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def step(self, epoch: int, val_loss: float, model: nn.Module) -> bool:
        """Record this epoch's validation loss; True when training should stop."""
        if val_loss < self.best_loss:
            self.best_loss = val_loss
            self.best_epoch = epoch
            self.best_state = copy.deepcopy(model.state_dict())
        return epoch - self.best_epoch >= self.patience


def fit(
    make_model: Callable[[], nn.Module],
    train: BagSet,
    val: BagSet,
    cfg: TrainConfig,
    seed: int,
    on_epoch: Callable[[EpochInfo], None] | None = None,
) -> TrainResult:
    """Train a fresh model on ``train``, early-stopped on ``val``; returns it with its best weights.

    The model and the optimizer are created here, after seeding, for every call: the same seed gives
    the same weights, and nothing carries over between folds.
    """
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"fit needs non-empty train and validation sets, got {len(train)} and {len(val)} bags")
    seed_everything(seed)
    device = torch.device(cfg.device)
    model = make_model()
    if cfg.standardize:
        model = Standardized(model, *feature_stats(train))
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train, val = train.to(device), val.to(device)
    generator = torch.Generator().manual_seed(seed)
    lengths = train.lengths.cpu()
    stopper = EarlyStopping(cfg.patience)
    result = TrainResult(
        model=model, best_epoch=-1, best_val_loss=float("inf"), batch_size=cfg.batch_size_for(len(train))
    )
    for epoch in range(cfg.max_epochs):
        model.train()
        total = torch.zeros((), device=device)
        for index in bucketed_batches(lengths, result.batch_size, generator):
            batch = make_batch(train, index.to(device))
            logits, _ = model(batch.x, batch.mask)
            loss = loss_fn(logits, batch.y, cfg.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            result.steps += 1
            total += loss.detach() * len(index)
        result.train_loss.append(float(total) / len(train))
        val_loss = evaluate_loss(model, val, cfg)
        result.val_loss.append(val_loss)
        stop = stopper.step(epoch, val_loss, model)
        if on_epoch is not None:
            on_epoch(EpochInfo(epoch, cfg.max_epochs, result.train_loss[-1], val_loss, stopper.best_epoch))
        if stop:
            break
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    result.best_epoch = stopper.best_epoch
    result.best_val_loss = stopper.best_loss
    return result
