"""The registry: built-in, plugin and user cards; families; provenance; errors that say what to do."""

from __future__ import annotations

import pytest
import torch

from clearbench.config import user_card_dir
from clearbench.encoders import family as family_mod
from clearbench.encoders.card import parse_card, read_card, write_card
from clearbench.encoders.registry import (
    builtin_card_dir,
    encoder_status,
    get_card,
    get_family,
    list_cards,
    load_encoder,
)
from clearbench.errors import ClearbenchError, InputError, MissingExtraError
from clearbench.problems import ProblemLog

PAPER_ROWS = {
    "biomedclip": "BiomedCLIP",
    "sam2": "SAM2",
    "ctclip": "CT-CLIP",
    "merlin": "Merlin",
    "mambaout-moco": "MambaOut-MoCo",
    "mambaout-lecl0": "MambaOut-LECL-0",
    "mambaout-lecl1": "MambaOut-LECL-1",
    "vmamba-moco": "VMamba-MoCo",
    "vmamba-lecl0": "VMamba-LECL-0",
    "vmamba-lecl1": "VMamba-LECL-1",
    "vit-convb": "ViT-ConvB",
    "vit-lecl0": "ViT-LECL-0",
    "vit-lecl1": "ViT-LECL-1",
}


def test_builtin_cards_cover_the_paper_and_say_where_weights_go():
    log = ProblemLog()
    cards = {c.name: c for c in list_cards(log) if c.source == "builtin"}
    assert log.problems == []
    examples = {"rad-dino": "microsoft/rad-dino", "dinov2-base": "facebook/dinov2-base"}  # hf cards, not paper rows
    assert set(PAPER_ROWS) | {"hu-hist", "mambaout-femto-random"} | set(examples) == set(cards)
    for name, repo in examples.items():
        card = cards[name]
        assert card.paper_name is None and card.license and card.citation and card.weights.hf_repo == repo
        assert card.weights.env in card.weights.note and f"hf download {repo}" in card.weights.note
    for name, row in PAPER_ROWS.items():
        card = cards[name]
        assert card.paper_name == row and card.license and card.citation
        assert card.weights.env and card.weights.path and card.weights.env in card.weights.note
    assert cards["mambaout-femto-random"].weights.random and cards["hu-hist"].weights.none
    assert (builtin_card_dir() / "hu-hist.toml").is_file()


def test_cards_usable_without_weights_load():
    femto = load_encoder("mambaout-femto-random")
    assert femto.dim == 288 and femto.kind == "slice"
    prov = femto.provenance
    assert prov["weights"] == "random:0" and prov["weights_sha256"] is None
    assert prov["encoder"] == "mambaout-femto-random" and prov["family"] == "mambaout"
    assert prov["card"]["weights"] == "random:0" and prov["card"]["source"] == "builtin"
    assert len(prov["preprocessing_hash"]) == 16 and prov["clearbench_version"]


def test_user_card_is_found_and_overrides_a_builtin():
    write_card({"name": "mine", "family": "hu-hist", "weights": "none", "params": {"bins": 8}})
    write_card({"name": "hu-hist", "family": "hu-hist", "weights": "none", "params": {"bins": 16}})
    assert get_card("mine").source == "user"
    override = get_card("hu-hist")
    assert override.source == "user" and override.overrides.startswith("builtin card ")
    assert load_encoder("hu-hist").dim == 16 + 8
    assert load_encoder("mine").encode(torch.rand(2, 16, 16)).shape == (2, 16)


def test_a_bad_card_costs_one_line_and_the_others_still_load():
    folder = user_card_dir("encoders")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.toml").write_text('name = "broken"\nfamily = \n')
    (folder / "typo.toml").write_text('name = "typo"\nfamily = "hu-hist"\nweights = "none"\nparmas = {}\n')
    log = ProblemLog()
    names = {c.name for c in list_cards(log)}
    assert {"hu-hist", "mambaout-femto-random"} <= names and not {"broken", "typo"} & names
    reasons = {p.path.rsplit("/", 1)[-1]: p.reason for p in log.problems}
    assert reasons["broken.toml"].startswith("not valid TOML")
    assert reasons["typo.toml"] == (
        "field 'parmas': unknown key; allowed keys are citation, description, dim, family, license, name, "
        "paper_name, params, preprocessing, weights"
    )
    with pytest.raises(InputError, match=r"broken\.toml: not valid TOML"):
        get_card("broken")


def test_plugin_entry_point_adds_a_family_and_cards():
    cards = {c.name: c for c in list_cards()}
    assert cards["example-tinyconv"].source == "plugin:example"
    assert cards["example-tinyconv-wide"].params == {"width": 24}
    enc = load_encoder("example-tinyconv-wide")
    assert get_family("example-tinyconv").kind == "slice"
    out = enc.encode(torch.rand(3, 70, 70))
    assert out.shape == (3, 24) and out.dtype == torch.float32
    assert enc.provenance["weights"] == "random:1"


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setattr(family_mod, "find_spec", lambda name: None)
    status = encoder_status(get_card("sam2"))
    assert status.missing_extra == "sam2" and status.install == "pip install 'clearbench[sam2]'"
    with pytest.raises(MissingExtraError, match=r"pip install 'clearbench\[sam2\]'"):
        load_encoder("sam2")


def test_unknown_names_and_parameters_are_explained():
    with pytest.raises(ClearbenchError, match="did you mean hu-hist"):
        get_card("hu-hst")
    write_card({"name": "bad-param", "family": "hu-hist", "weights": "none", "params": {"bin": 3}})
    with pytest.raises(
        InputError, match=r"bad-param\.toml: field 'params\.bin': unknown key; allowed keys are bins, max_side$"
    ):
        load_encoder("bad-param")
    write_card({"name": "no-family", "family": "nope", "weights": "random"})
    with pytest.raises(ClearbenchError, match="unknown encoder family 'nope'"):
        load_encoder("no-family")
    assert encoder_status(get_card("no-family")).problem.startswith("unknown encoder family 'nope'")


def test_card_dim_and_weights_kind_are_checked():
    write_card({"name": "dim-wrong", "family": "hu-hist", "weights": "none", "dim": 99})
    with pytest.raises(InputError, match="the card says dim = 99 but the model gives 40-d"):
        load_encoder("dim-wrong")
    write_card({"name": "hist-random", "family": "hu-hist", "weights": "random"})
    with pytest.raises(InputError, match='needs weights = "none"'):
        load_encoder("hist-random")
    write_card({"name": "femto-none", "family": "mambaout", "weights": "none", "params": {"variant": "femto"}})
    with pytest.raises(InputError, match="needs a weights file or"):
        load_encoder("femto-none")


def test_random_weights_are_seeded():
    for seed in (0, 0, 1):
        write_card(
            {
                "name": f"tiny-{seed}",
                "family": "mambaout",
                "weights": f"random:{seed}",
                "params": {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]},
            },
            overwrite=True,
        )
    x = torch.rand(2, 64, 64)
    a, b = load_encoder("tiny-0").encode(x), load_encoder("tiny-0").encode(x)
    c = load_encoder("tiny-1").encode(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    state = torch.get_rng_state()
    load_encoder("tiny-1")
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched


def test_write_card_round_trips_and_refuses_to_clobber(tmp_path):
    table = {
        "name": "rt",
        "family": "mambaout",
        "paper_name": "RT",
        "dim": 768,
        "citation": "c",
        "weights": {"path": "weights/rt.pth", "env": "RT_W", "sha256": "a" * 64, "note": "n"},
        "params": {"depths": [1, 2], "dims": [3, 4]},
        "preprocessing": {"interpolation": "bicubic"},
    }
    path = write_card(table, tmp_path)
    card = read_card(path, "user")
    assert card.to_toml() == parse_card(table).to_toml() == table
    with pytest.raises(ClearbenchError, match="already exists"):
        write_card(table, tmp_path)
    with pytest.raises(ClearbenchError, match="sha256 must be 64 hex digits"):
        parse_card({**table, "weights": {"path": "x", "sha256": "abc"}})
    assert parse_card({**table, "weights": "random:7"}).weights.seed == 7
    with pytest.raises(ClearbenchError, match="leave out None values"):
        write_card({**table, "name": "with-none", "params": {"variant": None}}, tmp_path)
