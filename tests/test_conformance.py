"""The encoder contract (``clearbench encoders check``) on every built-in card, the plugin's, and broken families.

Full-size built-in models would take minutes on a CPU, so each card is checked as a tiny variant of itself:
same family, same code path, random weights and small parameters (``TINY``). A built-in card of a family
without an entry here fails the coverage test, so a new family cannot skip the sweep.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from clearbench.cli import app
from clearbench.encoders import family as family_module
from clearbench.encoders.card import WeightsSpec, parse_card, read_card, write_card
from clearbench.encoders.conformance import check_card, check_encoder, no_network
from clearbench.encoders.image import ImageSliceFamily
from clearbench.encoders.registry import builtin_card_dir, get_family, load_encoder

PREP_64 = {"size": 64, "crop": 64}
# family -> (params, preprocessing) of a tiny variant; None keeps the card's own (it is small already).
TINY: dict[str, tuple[dict[str, Any], dict[str, Any]] | None] = {
    "hu-hist": None,
    "mambaout": ({"variant": None, "depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]}, PREP_64),
    "biomedclip": ({"model_name": "test_vit", "embed_dim": 16}, {"size": 160, "crop": 160}),
    "vit-convb": ({"img_size": 64, "embed_dim": 64, "depth": 1, "num_heads": 2}, PREP_64),
    "vmamba": ({"depths": [1, 1, 1, 1], "dims": [16, 32, 64, 128], "ssm_d_state": 4}, PREP_64),
    "sam2": (
        {
            "embed_dim": 16,
            "num_heads": 1,
            "stages": [1, 1, 2, 1],
            "global_att_blocks": [3],
            "window_pos_embed_bkg_spatial_size": [7, 7],
            "window_spec": [8, 4, 4, 2],
            "d_model": 32,
        },
        PREP_64,
    ),
    "ctclip": (
        {
            "dim": 32,
            "codebook_size": 16,
            "image_size": 32,
            "patch_size": 8,
            "temporal_patch_size": 4,
            "spatial_depth": 1,
            "temporal_depth": 1,
            "dim_head": 8,
            "heads": 2,
            "dim_latent": 8,
        },
        {"shape": [8, 32, 32]},
    ),
    "merlin": ({"layers": [1, 1, 1, 1], "class_nb": 8}, {"shape": [32, 32, 16]}),
    "hf": (
        {
            "pooling": "cls",
            "config": {
                "model_type": "dinov2",
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "image_size": 28,
                "patch_size": 14,
            },
        },
        {},
    ),
}
BUILTIN = sorted(p.stem for p in builtin_card_dir().glob("*.toml"))


def _tiny_variant(name: str):
    card = read_card(builtin_card_dir() / f"{name}.toml")
    tiny = TINY[card.family]
    if tiny is None:
        return card
    params, preprocessing = tiny
    return replace(
        card,
        dim=None,
        weights=WeightsSpec(random=True, seed=0),
        params={**card.params, **params},
        preprocessing={**card.preprocessing, **preprocessing},
    )


def test_every_builtin_family_has_a_tiny_variant():
    families = {read_card(builtin_card_dir() / f"{name}.toml").family for name in BUILTIN}
    assert {"hf", "mambaout", "ctclip"} <= families
    assert families <= set(TINY), f"add a tiny variant for {sorted(families - set(TINY))}"


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_card_conforms(name: str):
    card = _tiny_variant(name)
    extra = get_family(card.family).missing_extra()
    if extra:
        pytest.skip(f"needs the {extra} extra")
    report = check_card(card)
    assert report.passed, [(c.name, c.detail) for c in report.failures]
    names = [c.name for c in report.checks]
    assert names == [
        "load",
        "eval mode",
        "shape and dtype",
        "finite",
        "batch = items",
        "repeatable",
        "input untouched",
        "provenance",
        "no network",
    ]
    assert report.weights == ("none" if card.weights.none else "random:0")


def test_the_plugin_encoder_conforms_through_the_cli():
    result = CliRunner().invoke(app, ["encoders", "check", "example-tinyconv", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["passed"] and report["dim"] == 16 and report["weights"] == "random:0"
    assert {c["name"] for c in report["checks"] if c["passed"]} >= {"batch = items", "no network", "provenance"}


# -- broken families --------------------------------------------------------------------------------
class _Pool(nn.Module):
    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.proj = nn.Linear(3, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3)))


class _NanPool(_Pool):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        out[:, 0] = float("nan")
        return out


class _BatchNormalised(_Pool):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # statistics over the batch: items differ from the batch
        out = super().forward(x)
        return out - out.mean(dim=0, keepdim=True)


class _Phoning(_Pool):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with contextlib.suppress(OSError):  # a library that falls back when offline
            socket.create_connection(("example.org", 443), timeout=0.1)
        return super().forward(x)


class _TrainingMode(_Pool):
    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(super().forward(x))


def _family(name: str, module: type[nn.Module], *, train: bool = False) -> type[ImageSliceFamily]:
    class Broken(ImageSliceFamily):
        default_params: ClassVar[Mapping[str, Any]] = {"dim": 8}
        default_preprocessing: ClassVar[Mapping[str, Any]] = {**ImageSliceFamily.default_preprocessing, **PREP_64}

        def build(self, params: Mapping[str, Any]) -> nn.Module:
            return module()

        def wrap(self, model: nn.Module, spec):
            encoder = super().wrap(model, spec)
            if train:
                encoder.model.train()
            return encoder

    Broken.name = name
    return Broken


@pytest.mark.parametrize(
    ("module", "train", "failing", "reason"),
    [
        (_NanPool, False, {"finite"}, "NaN or infinite"),
        (_BatchNormalised, False, {"batch = items"}, "max |batch - items|"),
        (_Phoning, False, {"no network"}, "example.org"),
        (_TrainingMode, True, {"eval mode", "batch = items", "repeatable"}, "training mode"),
    ],
)
def test_a_broken_family_fails_with_the_reason(monkeypatch, module, train, failing, reason):
    monkeypatch.setitem(family_module.BUILTIN_FAMILIES, "broken", _family("broken", module, train=train))
    write_card({"name": "broken-enc", "family": "broken", "weights": "random:0"})
    report = check_encoder("broken-enc")
    assert not report.passed
    assert {c.name for c in report.failures} == failing
    assert any(reason in c.detail for c in report.failures)
    result = CliRunner().invoke(app, ["encoders", "check", "broken-enc"])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "check(s) failed" in result.output


def test_a_family_that_cannot_load_reports_why_and_exits_nonzero():
    write_card({"name": "femto-file", "family": "mambaout", "weights": "/nowhere/femto.pth"})
    report = check_encoder("femto-file")  # no variant in the card, so no random build, and no file either
    assert [c.name for c in report.failures] == ["load"]
    assert "random init needs a variant" in report.failures[0].detail and "not present" in report.failures[0].detail
    result = CliRunner().invoke(app, ["encoders", "check", "femto-file", "--weights", "given"])
    assert result.exit_code == 1 and "not found" in result.output


def test_given_weights_are_checked_when_there_is_no_random_variant(tmp_path):
    from clearbench.encoders.mambaout import build_mambaout

    torch.manual_seed(0)
    path = tmp_path / "femto.pth"
    torch.save(build_mambaout((1, 1, 1, 1), (8, 16, 24, 32)).state_dict(), path)
    write_card({"name": "femto-given", "family": "mambaout", "weights": str(path), "preprocessing": PREP_64})
    report = check_encoder("femto-given")
    assert report.passed and report.weights == str(path)
    assert "no random variant" in report.note
    given = check_encoder("femto-given", weights="given")
    assert given.passed and given.note is None


def test_no_network_blocks_and_records_then_restores():
    connect = socket.socket.connect
    with no_network() as attempts:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", 9), timeout=0.1)
        with pytest.raises(OSError):
            socket.getaddrinfo("example.org", 80)
    assert len(attempts) == 2 and "example.org" in attempts[1]
    assert socket.socket.connect is connect


def test_random_variant_keeps_none_and_random_cards():
    from clearbench.encoders.conformance import random_variant

    card = parse_card({"name": "x", "family": "mambaout", "weights": "/w.pth", "params": {"variant": "femto"}})
    assert random_variant(card).weights.random and random_variant(card).params == {"variant": "femto"}
    none = parse_card({"name": "h", "family": "hu-hist", "weights": "none"})
    assert random_variant(none) is none


class _Jitter(_Pool):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # batches come out 0.5 % larger: bf16-sized noise
        return super().forward(x) * (1.005 if x.shape[0] > 1 else 1.0)


def test_tolerance_follows_the_precision_the_encoder_runs_in(monkeypatch):
    """CUDA runs under bfloat16 autocast, so batch = items allows 1e-2 of the scale there, 1e-4 in float32."""
    from clearbench.encoders.conformance import BF16_RELATIVE_TOLERANCE, behaviour_checks

    monkeypatch.setitem(family_module.BUILTIN_FAMILIES, "jitter", _family("jitter", _Jitter))
    write_card({"name": "jitter-enc", "family": "jitter", "weights": "random:0"})
    assert [c.name for c in check_encoder("jitter-enc").failures] == ["batch = items"]  # on the CPU
    checks = {c.name: c for c in behaviour_checks(load_encoder("jitter-enc"), BF16_RELATIVE_TOLERANCE)}
    assert all(c.passed for c in checks.values()) and "batch = items" in checks
