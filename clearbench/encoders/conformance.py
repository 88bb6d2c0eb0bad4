"""The contract every encoder family is held to, checked on one card: ``clearbench encoders check NAME``.

A family added by a plugin is otherwise only tested by its author. Like timm's sweep over every registered
model, this runs the same checks on any card, built-in or plugin, and says which one failed and why:

- ``load``: the card loads (random weights by default, so no file is needed; the given weights on request);
- ``eval mode``: no module is left in training mode (dropout or batch statistics would make vectors noisy);
- ``shape and dtype``: ``(n, dim)`` float32, with ``dim`` the card's;
- ``finite``: no NaN or infinity;
- ``batch = items``: a batch gives what its items give one by one (no batch statistics, no padding leaks);
- ``repeatable``: the same input twice gives the same vectors;
- ``input untouched``: the caller's slices (or scan) are not modified in place;
- ``no network``: nothing opens a connection or resolves a host name while loading and embedding;
- ``provenance``: every key the store records is there, consistent with the encoder, and JSON-ready.

Inputs are synthetic and fixed: windowed slices in [0, 1] for slice encoders, small HU volumes for volume
encoders. Tolerances are relative to the size of the vectors: ``1e-4`` of their largest magnitude in float32
(CPU), ``1e-2`` under the bfloat16 autocast encoders use on CUDA.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from unittest import mock

import numpy as np
import torch

from clearbench.encoders.base import Encoder, SliceEncoder, VolumeEncoder
from clearbench.encoders.card import EncoderCard, WeightsSpec
from clearbench.errors import ClearbenchError
from clearbench.scans.scan import Scan

REQUIRED_PROVENANCE = (
    "encoder",
    "family",
    "kind",
    "dim",
    "card",
    "params",
    "preprocessing",
    "preprocessing_hash",
    "weights",
    "weights_sha256",
    "clearbench_version",
)
RELATIVE_TOLERANCE = 1e-4
# On CUDA the encoder runs under bfloat16 autocast (8-bit mantissa): kernels chosen per batch size round
# differently. Measured on an H200 (random weights, 4 slices): ViT-ConvB 3.4e-3 and VMamba 1.1e-3 of the largest
# value between batch and items; DINOv2-B (hf), timm ViT-B/16, MambaOut and CT-CLIP 0.
BF16_RELATIVE_TOLERANCE = 1e-2
WeightsChoice = Literal["random", "given"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CheckResult:
    """One check: its name, whether it passed, and what was seen."""

    name: str
    passed: bool
    detail: str = ""


@dataclass
class ConformanceReport:
    """All checks run on one card. ``passed`` only when every check ran and passed."""

    encoder: str
    family: str
    weights: str = ""  # what was loaded: random:<seed>, none, or the weights path ("" when nothing loaded)
    kind: str | None = None
    dim: int | None = None
    note: str | None = None  # e.g. why the given weights were checked instead of a random variant
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder,
            "family": self.family,
            "weights": self.weights,
            "kind": self.kind,
            "dim": self.dim,
            "note": self.note,
            "passed": self.passed,
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks],
        }


# -- the network guard -----------------------------------------------------------------------------------
class NetworkAttempt(OSError):
    """Raised in place of a connection or a name lookup while a check runs."""


@contextlib.contextmanager
def no_network() -> Iterator[list[str]]:
    """Make every socket connect and host lookup fail, recording what was attempted (yielded list).

    Libraries that try the network and fall back on failure still get an OSError, so the check sees what they
    would do offline, and the attempt is reported rather than hidden.
    """
    attempts: list[str] = []
    saved = (socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo)

    def refuse(what: str) -> NetworkAttempt:
        attempts.append(what)
        return NetworkAttempt(f"network access during an encoder check: {what}")

    def connect(self: socket.socket, address: Any) -> None:
        if self.family == getattr(socket, "AF_UNIX", None):
            return saved[0](self, address)
        raise refuse(f"connect {address!r}")

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family == getattr(socket, "AF_UNIX", None):
            return saved[1](self, address)
        raise refuse(f"connect {address!r}")

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        raise refuse(f"resolve {host!r}")

    with (
        mock.patch.object(socket.socket, "connect", connect),
        mock.patch.object(socket.socket, "connect_ex", connect_ex),
        mock.patch.object(socket, "getaddrinfo", getaddrinfo),
    ):
        yield attempts


# -- inputs ---------------------------------------------------------------------------------------------
def sample_slices(n: int = 4, height: int = 48, width: int = 40, seed: int = 0) -> torch.Tensor:
    """Windowed slices ``[n, H, W]`` in [0, 1]: a smooth body-like blob, an edge and noise, different per slice."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    out = []
    for i in range(n):
        blob = torch.exp(-((xx - 0.2 * i / n) ** 2 + yy**2) / (0.3 + 0.1 * i))
        edge = (xx > 0.5 - 0.2 * i / n).float() * 0.3
        out.append((0.6 * blob + edge + 0.15 * torch.rand(height, width, generator=gen)).clamp(0, 1))
    return torch.stack(out)


def sample_scans(n: int = 2, seed: int = 0) -> list[Scan]:
    """Small HU volumes (air, a soft-tissue body, a bright spot), 2.5 x 1 x 1 mm, different per scan."""
    rng = np.random.default_rng(seed)
    scans = []
    for i in range(n):
        z, y, x = np.meshgrid(np.arange(12), np.arange(40), np.arange(40), indexing="ij")
        hu = np.full((12, 40, 40), -1000.0)
        hu[(y - 20) ** 2 + (x - 20 - i) ** 2 < 15**2] = 40.0
        hu[(z - 6) ** 2 + (y - 18) ** 2 + (x - 22) ** 2 < (3 + i) ** 2] = 300.0
        hu += rng.normal(0, 10, hu.shape)
        scans.append(Scan(f"check-{i}", f"patient-{i}", hu.astype(np.int16), (2.5, 1.0, 1.0)))
    return scans


# -- the checks -----------------------------------------------------------------------------------------
def check_encoder(
    name: str, weights: WeightsChoice = "random", device: str = "cpu", trust_checkpoint: bool = False
) -> ConformanceReport:
    """Run the contract on the registered card ``name`` (see :func:`check_card`)."""
    from clearbench.encoders.registry import get_card

    return check_card(get_card(name), weights, device, trust_checkpoint)


def random_variant(card: EncoderCard, seed: int = 0) -> EncoderCard:
    """The card with ``random:<seed>`` weights: same family, params and preprocessing, no file needed."""
    if card.weights.random or card.weights.none:
        return card
    return replace(card, weights=WeightsSpec(random=True, seed=seed))


def check_card(
    card: EncoderCard, weights: WeightsChoice = "random", device: str = "cpu", trust_checkpoint: bool = False
) -> ConformanceReport:
    """Load the card (its random variant, or its given weights) and run every check; never raises for a
    failing encoder: the report says which check failed and why. A card whose ``[params]`` or
    ``[preprocessing]`` its family refuses is not an encoder to check: that is its one-line InputError."""
    from clearbench.encoders.registry import check_card_settings, encoder_status, load_card

    if weights not in ("random", "given"):
        raise ClearbenchError(f"weights must be 'random' or 'given', not {weights!r}")
    check_card_settings(card)
    report = ConformanceReport(card.name, card.family)
    with no_network() as attempts:
        encoder: Encoder | None = None
        try:
            encoder = load_card(random_variant(card) if weights == "random" else card, device, trust_checkpoint)
        except (ClearbenchError, ImportError) as exc:
            if weights == "random" and not card.weights.random and encoder_status(card).weights.found:
                report.note = f"no random variant ({exc}); checked the given weights instead"
                try:
                    encoder = load_card(card, device, trust_checkpoint)
                except (ClearbenchError, ImportError) as exc2:
                    report.checks.append(CheckResult("load", False, _one_line(exc2)))
            elif weights == "random" and not (card.weights.random or card.weights.none):
                report.checks.append(
                    CheckResult(
                        "load",
                        False,
                        f"{_one_line(exc)}; the card has no random variant "
                        "and its weights are not present (clearbench encoders show NAME)",
                    )
                )
            else:
                report.checks.append(CheckResult("load", False, _one_line(exc)))
        except Exception as exc:  # noqa: BLE001 - a plugin family may raise anything; that is the finding
            report.checks.append(CheckResult("load", False, f"{type(exc).__name__}: {_one_line(exc)}"))
        if encoder is not None:
            report.weights = str(encoder.provenance.get("weights", ""))
            report.kind, report.dim = encoder.kind, encoder.dim
            report.checks.append(
                CheckResult("load", True, f"{encoder.kind} encoder, dim {encoder.dim}, weights {report.weights}")
            )
            relative = BF16_RELATIVE_TOLERANCE if encoder.device.type == "cuda" else RELATIVE_TOLERANCE
            report.checks.extend(behaviour_checks(encoder, relative))
            report.checks.append(_provenance_check(encoder, card))
    report.checks.append(
        CheckResult(
            "no network",
            not attempts,
            "no connection or lookup attempted"
            if not attempts
            else f"{len(attempts)} attempt(s): {'; '.join(attempts[:3])}",
        )
    )
    return report


def behaviour_checks(encoder: Encoder, relative: float = RELATIVE_TOLERANCE) -> list[CheckResult]:
    """Eval mode, shape and dtype, finite, batch = items, repeatable, input untouched; ``relative`` is the
    tolerance as a fraction of the largest output magnitude."""
    eval_check = _eval_mode_check(encoder)
    probe = _probe(encoder)
    n = len(probe.items)
    try:
        first = probe.batch()
    except Exception as exc:  # noqa: BLE001 - whatever the family raises is the finding
        return [eval_check, CheckResult("shape and dtype", False, f"{type(exc).__name__}: {_one_line(exc)}")]
    checks = [eval_check]
    shape_ok = tuple(first.shape) == (n, encoder.dim) and first.dtype == torch.float32
    checks.append(
        CheckResult(
            "shape and dtype",
            shape_ok,
            f"{tuple(first.shape)} {str(first.dtype).replace('torch.', '')}"
            + ("" if shape_ok else f"; expected ({n}, {encoder.dim}) float32"),
        )
    )
    finite = torch.isfinite(first)
    checks.append(
        CheckResult(
            "finite",
            bool(finite.all()),
            "all values finite"
            if finite.all()
            else f"{int((~finite).sum())} of {finite.numel()} values are NaN or infinite",
        )
    )
    scale = float(first[finite].abs().max()) if finite.any() else 0.0
    tolerance = relative * max(scale, 1e-3)
    try:
        one_by_one = torch.cat(probe.each())
        diff = _max_diff(first, one_by_one)
        checks.append(
            CheckResult(
                "batch = items", diff <= tolerance, f"max |batch - items| = {diff:.3g} (tolerance {tolerance:.3g})"
            )
        )
        second = probe.batch()
        diff = _max_diff(first, second)
        checks.append(
            CheckResult(
                "repeatable", diff <= tolerance, f"max |first - second| = {diff:.3g} (tolerance {tolerance:.3g})"
            )
        )
    except Exception as exc:  # noqa: BLE001 - whatever the encoder raises is the finding
        checks.append(CheckResult("batch = items", False, f"{type(exc).__name__}: {_one_line(exc)}"))
    untouched = probe.untouched()
    checks.append(
        CheckResult(
            "input untouched",
            untouched,
            "inputs unchanged" if untouched else "the encoder modified the caller's input in place",
        )
    )
    return checks


def _probe(encoder: Encoder) -> _SliceProbe | _VolumeProbe:
    if isinstance(encoder, SliceEncoder):
        return _SliceProbe(encoder)
    if isinstance(encoder, VolumeEncoder):
        return _VolumeProbe(encoder)
    raise TypeError(f"{type(encoder).__name__} is neither a SliceEncoder nor a VolumeEncoder")


class _SliceProbe:
    """Slice encoders: the fixed slices as one batch, and one by one through ``encode``."""

    def __init__(self, encoder: SliceEncoder) -> None:
        self.encoder, self.inputs = encoder, sample_slices()
        self.snapshot = self.inputs.clone()
        self.items = [self.inputs[i : i + 1] for i in range(self.inputs.shape[0])]

    def batch(self) -> torch.Tensor:
        return self.encoder.encode(self.inputs)

    def each(self) -> list[torch.Tensor]:
        return [self.encoder.encode(item) for item in self.items]

    def untouched(self) -> bool:
        return torch.equal(self.inputs, self.snapshot)


class _VolumeProbe:
    """Volume encoders: the preprocessed scans embedded as one batch, and each scan through ``encode``."""

    def __init__(self, encoder: VolumeEncoder) -> None:
        self.encoder, self.items = encoder, sample_scans()
        self.snapshot = [s.hu.copy() for s in self.items]

    def batch(self) -> torch.Tensor:
        return self.encoder.embed(torch.cat([self.encoder.preprocess(s) for s in self.items]))

    def each(self) -> list[torch.Tensor]:
        return [self.encoder.encode(scan) for scan in self.items]

    def untouched(self) -> bool:
        return all(np.array_equal(s.hu, h) for s, h in zip(self.items, self.snapshot, strict=True))


def _eval_mode_check(encoder: Encoder) -> CheckResult:
    training = [name or "(root)" for name, module in encoder.model.named_modules() if module.training]
    return CheckResult(
        "eval mode",
        not training,
        "every module in eval mode"
        if not training
        else f"{len(training)} module(s) in training mode: {', '.join(training[:3])}",
    )


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    diff = (a.double() - b.double()).abs()
    both_nan = torch.isnan(a) & torch.isnan(b)
    diff = diff.masked_fill(both_nan, 0.0)
    return float("inf") if torch.isnan(diff).any() else float(diff.max()) if diff.numel() else 0.0


def _provenance_check(encoder: Encoder, card: EncoderCard) -> CheckResult:
    prov = encoder.provenance
    problems = [f"missing {key}" for key in REQUIRED_PROVENANCE if key not in prov]
    if prov.get("encoder", card.name) != card.name:
        problems.append(f"encoder {prov.get('encoder')!r} is not the card's {card.name!r}")
    if "dim" in prov and prov["dim"] != encoder.dim:
        problems.append(f"dim {prov['dim']} is not the encoder's {encoder.dim}")
    if "kind" in prov and prov["kind"] != encoder.kind:
        problems.append(f"kind {prov['kind']!r} is not the encoder's {encoder.kind!r}")
    source, digest = str(prov.get("weights", "")), prov.get("weights_sha256")
    weights_read = bool(source) and not (source == "none" or source.startswith("random:"))
    if weights_read and not (isinstance(digest, str) and _SHA256.match(digest)):
        problems.append(f"weights {source} were read but weights_sha256 is {digest!r}")
    try:
        json.dumps(prov)
    except (TypeError, ValueError) as exc:
        problems.append(f"not JSON-ready ({exc})")
    return CheckResult(
        "provenance",
        not problems,
        "; ".join(problems) if problems else f"{len(REQUIRED_PROVENANCE)} required keys present and consistent",
    )


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
