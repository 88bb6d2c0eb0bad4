"""The ``timm`` family: any timm architecture by name, headless, from a saved state dict, through a card alone."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config
from typer.testing import CliRunner

from clearbench.cli import app
from clearbench.encoders.card import write_card
from clearbench.encoders.conformance import no_network
from clearbench.encoders.registry import encoder_status, get_card, load_encoder
from clearbench.encoders.timm_family import eval_settings
from clearbench.encoders.weights import file_sha256
from clearbench.errors import ClearbenchError, InputError

TINY_VIT = {"img_size": 32, "depth": 1, "embed_dim": 32, "num_heads": 2}
TINY_CONVNEXT = {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]}


def _slices(n: int = 3, h: int = 40, w: int = 36) -> torch.Tensor:
    return torch.rand(n, h, w, generator=torch.Generator().manual_seed(2))


def _model(name: str, kwargs: dict, num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs).eval()


@pytest.mark.parametrize(
    ("name", "kwargs", "fmt"),
    [
        ("vit_small_patch16_224", TINY_VIT, "safetensors"),
        ("vit_small_patch16_224", TINY_VIT, "pth"),
        ("convnext_atto", TINY_CONVNEXT, "pth-container"),
    ],
)
def test_embedding_equals_the_timm_model_on_the_same_pixels(tmp_path, name, kwargs, fmt):
    model = _model(name, kwargs)  # saved with its 10-class head: the family drops the classifier keys
    state = model.state_dict()
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pth")
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "epoch": 3} if fmt == "pth-container" else state, path)
    write_card(
        {"name": "tiny", "family": "timm", "weights": str(path), "params": {"model_name": name, "kwargs": kwargs}}
    )
    with no_network() as attempts:
        enc = load_encoder("tiny")
        pixels = enc.preprocess(_slices())
        got = enc.embed(pixels)
    assert not attempts
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(pixels), pre_logits=True)
    assert got.shape == (3, enc.dim) and enc.dim == expected.shape[1]
    assert torch.allclose(got, expected, atol=1e-5)
    assert enc.provenance["weights_sha256"] == file_sha256(path)


def test_preprocessing_is_timms_eval_transform_from_pretrained_cfg():
    write_card(
        {
            "name": "vit",
            "family": "timm",
            "weights": "random:0",
            "params": {"model_name": "vit_small_patch16_224", "kwargs": TINY_VIT},
        }
    )
    enc = load_encoder("vit")
    prep = enc.provenance["preprocessing"]
    # vit_small_patch16_224: crop_pct 0.9, bicubic, mean/std 0.5; img_size 32 from kwargs -> resize 35, crop 32
    assert prep == {
        "size": 35,
        "crop": 32,
        "interpolation": "bicubic",
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "channels": 3,
    }
    assert enc.preprocess(_slices()).shape == (3, 3, 32, 32)
    for name in ("resnet18", "convnext_atto", "deit_tiny_patch16_224"):  # the same numbers as timm's transform
        model = timm.create_model(name, pretrained=False)
        resize, crop, _, normalize = create_transform(**resolve_data_config({}, model=model)).transforms
        ours = eval_settings(model.pretrained_cfg)
        assert ours["size"] == resize.size and (ours["crop"], ours["crop"]) == tuple(crop.size)
        assert ours["interpolation"] == resize.interpolation.value
        assert ours["mean"] == pytest.approx(normalize.mean.tolist()) and ours["std"] == pytest.approx(
            normalize.std.tolist()
        )
    squash = eval_settings({"input_size": (3, 224, 224), "crop_pct": 1.0, "crop_mode": "squash"})
    assert squash["size"] == [224, 224] and squash["crop"] == 224


def test_card_preprocessing_overrides_pretrained_cfg():
    write_card(
        {
            "name": "vit",
            "family": "timm",
            "weights": "random:0",
            "params": {"model_name": "vit_small_patch16_224", "kwargs": TINY_VIT},
            "preprocessing": {"size": [32, 32], "crop": 0, "interpolation": "bilinear"},
        }
    )
    prep = load_encoder("vit").provenance["preprocessing"]
    assert prep["size"] == [32, 32] and prep["crop"] is None and prep["interpolation"] == "bilinear"
    assert prep["mean"] == [0.5] * 3


def test_unknown_model_name_suggests_the_closest():
    write_card(
        {"name": "typo", "family": "timm", "weights": "random", "params": {"model_name": "vit_smal_patch16_224"}}
    )
    with pytest.raises(ClearbenchError) as info:
        load_encoder("typo")
    assert "no model 'vit_smal_patch16_224'" in str(info.value) and "vit_small_patch16_224" in str(info.value)
    assert encoder_status(get_card("typo")).problem is not None  # the listing says so without loading
    write_card({"name": "noname", "family": "timm", "weights": "random"})
    with pytest.raises(ClearbenchError, match="needs \\[params\\] model_name"):
        load_encoder("noname")


def test_wrong_checkpoint_lists_missing_and_unexpected_keys(tmp_path):
    state = _model("vit_small_patch16_224", TINY_VIT).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["norm.weight"]
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    write_card(
        {
            "name": "bad",
            "family": "timm",
            "weights": str(path),
            "params": {"model_name": "vit_small_patch16_224", "kwargs": TINY_VIT},
        }
    )
    with pytest.raises(InputError) as info:
        load_encoder("bad")
    assert info.value.path == str(path)
    assert "missing" in info.value.reason and "norm.weight" in info.value.reason
    assert "unexpected" in info.value.reason and "extra.weight" in info.value.reason


def test_dim_is_known_without_building_and_kwargs_are_checked():
    write_card(
        {
            "name": "cn",
            "family": "timm",
            "weights": "random",
            "params": {"model_name": "convnext_atto", "kwargs": TINY_CONVNEXT},
        }
    )
    assert encoder_status(get_card("cn")).dim == 32
    write_card(
        {
            "name": "cls",
            "family": "timm",
            "weights": "random",
            "params": {"model_name": "convnext_atto", "kwargs": {"num_classes": 5}},
        }
    )
    with pytest.raises(ClearbenchError, match="num_classes"):
        load_encoder("cls")


def test_check_command_on_a_timm_card(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(_model("convnext_atto", TINY_CONVNEXT, num_classes=0).state_dict(), str(path))
    write_card(
        {
            "name": "cn",
            "family": "timm",
            "weights": str(path),
            "params": {"model_name": "convnext_atto", "kwargs": TINY_CONVNEXT},
        }
    )
    for weights in ("random", "given"):
        result = CliRunner().invoke(app, ["encoders", "check", "cn", "--weights", weights, "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["passed"] and report["weights"] == ("random:0" if weights == "random" else str(path))
