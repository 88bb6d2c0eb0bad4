"""Strict encoder cards: a typo anywhere in a card (a top-level key, ``[weights]``, a family's ``[params]``,
``[preprocessing]``) is one line naming the file, the key path and what was expected, from the Python API and
from the real CLI (exit code 1, no traceback); each family declares its ``[params]`` once, as a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from cli_run import one_line_error, run_cli
from pydantic import PositiveInt
from torch import nn

from clearbench.config import user_card_dir
from clearbench.encoders.card import parse_card, read_card
from clearbench.encoders.family import BUILTIN_FAMILIES
from clearbench.encoders.image import ImageSliceFamily
from clearbench.encoders.registry import builtin_card_dir, encoder_status, get_card, get_family, load_encoder
from clearbench.errors import ClearbenchError, InputError
from clearbench.settings import Settings

HU_HIST = 'name = "{name}"\nfamily = "hu-hist"\nweights = "none"\n'
MAMBAOUT = 'name = "{name}"\nfamily = "mambaout"\nweights = "random:0"\n'


def _user_card(name: str, text: str) -> Path:
    folder = user_card_dir("encoders")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text.format(name=name))
    return path


@pytest.mark.parametrize(
    "text, key, expected",
    [
        (HU_HIST + "[params]\nbin = 8\n", "params.bin", "unknown key; allowed keys are bins, max_side"),
        (HU_HIST + '[params]\nbins = "32"\n', "params.bins", "expected an integer, got '32'"),
        (HU_HIST + "[params]\nbins = 0\n", "params.bins", "expected a value > 0, got 0"),
        (MAMBAOUT + "[params]\ndims = 768\n", "params.dims", "expected a list, got 768"),
        (MAMBAOUT + '[params]\ndepths = [1, 1, 1, "1"]\n', "params.depths.3", "expected an integer, got '1'"),
        (MAMBAOUT + '[params]\nvariant = "femtoo"\n', "params.variant", "unknown variant 'femtoo'; known: femto, "),
        (
            MAMBAOUT + "[preprocessing]\nsise = 64\n",
            "preprocessing.sise",
            "unknown key; allowed keys are channels, crop, interpolation, mean, size, std",
        ),
    ],
)
def test_a_params_typo_is_one_line_naming_the_card_file(text: str, key: str, expected: str) -> None:
    path = _user_card("typo", text)
    with pytest.raises(InputError) as err:
        load_encoder("typo")
    assert str(err.value).startswith(f"{path}: field '{key}': {expected}")
    assert "\n" not in str(err.value)
    assert encoder_status(get_card("typo")).problem == str(err.value)  # the listing says the same


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            HU_HIST + "parmas = {{}}\n",
            "field 'parmas': unknown key; allowed keys are citation, description, dim, family, license, name, "
            "paper_name, params, preprocessing, weights",
        ),
        (
            'name = "{name}"\nfamily = "mambaout"\n[weights]\npath = "w.pth"\nsha256 = "abc"\n',
            "field 'weights.sha256': sha256 must be 64 hex digits, got 'abc'",
        ),
        (
            'name = "{name}"\nfamily = "mambaout"\n[weights]\npaht = "w.pth"\n',
            "field 'weights.paht': unknown key; allowed keys are env, hf_file, hf_repo, hf_revision, note, path, "
            "random, seed, sha256",
        ),
        (
            'name = "{name}"\nfamily = "mambaout"\n[weights]\nhf_file = "w.pth"\n',
            "field 'weights': hf_file needs hf_repo (the repository the file is in)",
        ),
        (
            'name = "{name}"\nfamily = "mambaout"\nweights = "random:x"\n',
            "field 'weights': the seed after 'random:' must be an integer, got 'random:x'",
        ),
        (
            'name = "{name}"\nfamily = "mambaout"\n',
            'field \'weights\': the card needs weights: a path, "random", "random:<seed>", "none" or a [weights] table',
        ),
        (HU_HIST + "dim = 0\n", "field 'dim': expected a value > 0, got 0"),
        (HU_HIST + 'dim = "40"\n', "field 'dim': expected an integer, got '40'"),
    ],
)
def test_a_card_file_typo_is_one_line_naming_the_file(text: str, expected: str) -> None:
    path = _user_card("typo", text)
    with pytest.raises(InputError) as err:
        read_card(path)
    assert str(err.value) == f"{path}: {expected}"
    with pytest.raises(InputError) as err:
        get_card("typo")  # the registry refuses the broken card rather than falling back to another
    assert str(err.value) == f"{path}: {expected}"


def test_a_card_table_without_a_file_gives_the_same_line_as_a_clearbench_error() -> None:
    table = {"name": "x", "family": "mambaout", "weights": {"path": "w.pth", "sha256": "abc"}}
    with pytest.raises(ClearbenchError) as err:
        parse_card(table)
    assert not isinstance(err.value, InputError)
    assert str(err.value) == "field 'weights.sha256': sha256 must be 64 hex digits, got 'abc'"
    card = parse_card({**table, "weights": {"path": "w.pth", "sha256": "AB" * 32}})
    assert card.weights.sha256 == "ab" * 32  # lower-cased, as clearbench computes digests


def test_the_cli_prints_a_params_typo_in_one_line(tmp_path: Path) -> None:
    path = _user_card("typo", HU_HIST + "[params]\nbin = 8\n")
    expected = f"error: {path}: field 'params.bin': unknown key; allowed keys are bins, max_side"
    assert one_line_error(run_cli("encoders", "show", "typo")) == expected
    assert one_line_error(run_cli("encoders", "check", "typo")) == expected
    assert one_line_error(
        run_cli("embed", "--encoder", "typo", "--dataset", "deeplesion", "--root", str(tmp_path))
    ) == (expected)


def test_the_cli_prints_a_weights_typo_in_one_line() -> None:
    path = _user_card("typo", 'name = "{name}"\nfamily = "mambaout"\n[weights]\npath = "w.pth"\nsha256 = "abc"\n')
    message = one_line_error(run_cli("encoders", "show", "typo"))
    assert message == f"error: {path}: field 'weights.sha256': sha256 must be 64 hex digits, got 'abc'"


@pytest.mark.parametrize("name", sorted(BUILTIN_FAMILIES))
def test_each_family_declares_its_params_once(name: str) -> None:
    family = get_family(name)
    assert issubclass(family.params_model, Settings) and family.params_model is not Settings
    assert dict(family.default_params) == family.params_model().model_dump()


@pytest.mark.parametrize("path", sorted(builtin_card_dir().glob("*.toml")), ids=lambda p: p.stem)
def test_every_builtin_card_validates(path: Path) -> None:
    card = read_card(path)
    family = get_family(card.family)
    params = family.resolve_params(card.params)
    assert params == {**family.default_params, **card.params}
    family.resolve_preprocessing(card.preprocessing)


def test_params_come_back_as_the_card_wrote_them() -> None:
    # A strict model reads an integer given for a number as a float; the params (and so the provenance and
    # its hashes) keep what the card says.
    params = get_family("vit-convb").resolve_params({"mlp_ratio": 4, "depth": 2})
    assert params["mlp_ratio"] == 4 and type(params["mlp_ratio"]) is int
    assert params == {"img_size": 224, "embed_dim": 768, "depth": 2, "num_heads": 12, "mlp_ratio": 4}
    assert get_family("vmamba").resolve_params({"ssm_dt_rank": 3})["ssm_dt_rank"] == 3
    with pytest.raises(ClearbenchError, match=r"^field 'params\.ssm_dt_rank': expected an integer or one of 'auto'"):
        get_family("vmamba").resolve_params({"ssm_dt_rank": "full"})


def test_a_family_with_only_default_params_has_its_keys_checked() -> None:
    class Legacy(ImageSliceFamily):
        name: ClassVar[str] = "legacy"
        default_params: ClassVar[dict[str, Any]] = {"dim": 8}

        def build(self, params: Any) -> nn.Module:
            return nn.Identity()

    assert set(Legacy.params_model.model_fields) == {"dim"}
    assert Legacy().resolve_params({"dim": "any type"}) == {"dim": "any type"}
    with pytest.raises(ClearbenchError, match=r"^field 'params\.dimm': unknown key; allowed keys are dim$"):
        Legacy().resolve_params({"dimm": 8})


def test_a_family_declares_the_model_not_both() -> None:
    class WidthParams(Settings):
        width: PositiveInt = 16

    with pytest.raises(TypeError, match="declare params_model only"):

        class Both(ImageSliceFamily):
            params_model: ClassVar[type[Settings]] = WidthParams
            default_params: ClassVar[dict[str, Any]] = {"width": 16}
