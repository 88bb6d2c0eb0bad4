"""The ``hf`` family: tiny transformers models saved with save_pretrained load through a card alone.

Each test builds a small random model from a config, saves it as a model folder (config.json, safetensors,
preprocessor_config.json), loads it through a card and the real registry, and compares with transformers'
own forward on the same pixels. Repo ids are resolved from a fake local cache; nothing touches the network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from clearbench.cli import app
from clearbench.encoders.card import write_card
from clearbench.encoders.conformance import no_network
from clearbench.encoders.hf import processor_settings
from clearbench.encoders.image import ImageTransform
from clearbench.encoders.registry import encoder_status, get_card, load_encoder
from clearbench.encoders.weights import file_sha256
from clearbench.errors import ClearbenchError, InputError

transformers = pytest.importorskip("transformers")

DINO = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 28,
    "patch_size": 14,
}
VIT = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
}
BIT_PROCESSOR = {
    "do_resize": True,
    "size": {"shortest_edge": 32},
    "do_center_crop": True,
    "crop_size": {"height": 28, "width": 28},
    "resample": 3,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.53, 0.53, 0.53],
    "image_std": [0.26, 0.26, 0.26],
    "image_processor_type": "BitImageProcessor",
}
VIT_PROCESSOR = {
    "do_resize": True,
    "size": {"height": 32, "width": 32},
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "image_processor_type": "ViTImageProcessor",
}


def _save(folder: Path, model_type: str, fields: dict, processor: dict | None, seed: int = 0, **init):
    config = transformers.AutoConfig.for_model(model_type, **fields)
    torch.manual_seed(seed)
    model = transformers.AutoModel.from_config(config, **init).eval()
    model.save_pretrained(folder)
    if processor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return model


def _slices(n: int = 3, h: int = 40, w: int = 36) -> torch.Tensor:
    return torch.rand(n, h, w, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("model_type", "fields", "processor", "pooling"),
    [
        ("dinov2", DINO, BIT_PROCESSOR, "cls"),
        ("dinov2", DINO, BIT_PROCESSOR, "mean"),
        ("vit", VIT, VIT_PROCESSOR, "pooler"),
        ("vit", VIT, VIT_PROCESSOR, "mean"),
    ],
)
def test_embedding_equals_the_transformers_model_on_the_same_pixels(tmp_path, model_type, fields, processor, pooling):
    model = _save(tmp_path / "model", model_type, fields, processor)
    write_card({"name": "tiny", "family": "hf", "weights": str(tmp_path / "model"), "params": {"pooling": pooling}})
    with no_network() as attempts:
        enc = load_encoder("tiny")
        pixels = enc.preprocess(_slices())
        got = enc.embed(pixels)
    assert not attempts
    side = fields["image_size"]
    assert pixels.shape == (3, 3, side, side)
    with torch.no_grad():
        out = model(pixel_values=pixels)
    expected = {
        "cls": out.last_hidden_state[:, 0],
        "mean": out.last_hidden_state[:, 1:].mean(1),
        "pooler": out.pooler_output,
    }[pooling]
    assert enc.dim == 32 and got.shape == (3, 32) and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-5)
    prov = enc.provenance
    assert prov["weights"] == str(tmp_path / "model")
    assert prov["weights_sha256"] == file_sha256(tmp_path / "model" / "model.safetensors")
    assert prov["params"]["model_type"] == model_type and prov["params"]["pooling"] == pooling


def test_preprocessing_follows_the_processor_config_like_transformers(tmp_path):
    """No resize needed (32 px short side): crop and normalisation equal the BitImageProcessor's output."""
    _save(tmp_path / "model", "dinov2", DINO, BIT_PROCESSOR)
    write_card({"name": "tiny", "family": "hf", "weights": str(tmp_path / "model")})
    enc = load_encoder("tiny")
    prep = enc.provenance["preprocessing"]
    assert prep["size"] == 32 and prep["crop"] == 28 and prep["interpolation"] == "bicubic"
    slices = _slices(2, 32, 40)
    processor = transformers.AutoImageProcessor.from_pretrained(str(tmp_path / "model"), local_files_only=True)
    rgb = np.repeat(slices.numpy()[..., None], 3, axis=-1) * 255.0  # the 8-bit image the slices stand for
    theirs = processor(images=list(rgb), return_tensors="pt", do_resize=False)["pixel_values"]
    assert torch.allclose(enc.preprocess(slices), theirs, atol=1e-5)


def test_processor_settings_fold_rescale_into_mean_and_std():
    no_rescale = processor_settings(
        {"do_rescale": False, "image_mean": [127.5], "image_std": [127.5], "size": {"height": 16, "width": 16}}
    )
    x = torch.rand(2, 16, 16)
    out = ImageTransform.from_settings(no_rescale)(x)
    assert out.shape == (2, 1, 16, 16)
    assert torch.allclose(out[:, 0], (x * 255.0 - 127.5) / 127.5, atol=1e-5)  # the model sees 0..255 pixels
    assert processor_settings({"do_normalize": False, "size": 8})["mean"] == [0.0, 0.0, 0.0]
    with pytest.raises(ClearbenchError, match="resample"):
        processor_settings({"resample": 1})


def test_card_preprocessing_overrides_the_processor(tmp_path):
    _save(tmp_path / "model", "dinov2", DINO, BIT_PROCESSOR)
    write_card(
        {
            "name": "tiny",
            "family": "hf",
            "weights": str(tmp_path / "model"),
            "preprocessing": {"size": 56, "crop": 0, "mean": [0.5, 0.5, 0.5]},
        }
    )
    enc = load_encoder("tiny")
    prep = enc.provenance["preprocessing"]
    assert prep["size"] == 56 and prep["crop"] is None and prep["mean"] == [0.5, 0.5, 0.5]
    assert prep["std"] == pytest.approx([0.26] * 3)  # not overridden: the processor's
    assert enc.preprocess(_slices(1, 40, 40)).shape == (1, 3, 56, 56)


def test_folder_without_processor_config_resizes_to_the_model_size(tmp_path):
    _save(tmp_path / "model", "vit", VIT, None)
    write_card({"name": "tiny", "family": "hf", "weights": str(tmp_path / "model"), "params": {"pooling": "mean"}})
    enc = load_encoder("tiny")
    assert enc.provenance["preprocessing"]["size"] == [32, 32]
    assert enc.encode(_slices()).shape == (3, 32)


def test_siglip_vision_tower_of_a_composite_checkpoint(tmp_path):
    sub = {**VIT}
    sub.pop("image_size")
    config = {
        "vision_config": {**sub, "image_size": 32},
        "text_config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    }
    _save(tmp_path / "siglip", "siglip", config, VIT_PROCESSOR)
    write_card({"name": "sig", "family": "hf", "weights": str(tmp_path / "siglip"), "params": {"pooling": "mean"}})
    enc = load_encoder("sig")
    reference = transformers.SiglipVisionModel.from_pretrained(str(tmp_path / "siglip"), local_files_only=True).eval()
    pixels = enc.preprocess(_slices())
    with torch.no_grad():
        expected = reference(pixel_values=pixels).last_hidden_state.mean(1)  # SigLIP has no CLS token
    assert torch.allclose(enc.embed(pixels), expected, atol=1e-5)
    write_card({"name": "sig-cls", "family": "hf", "weights": str(tmp_path / "siglip")})
    with pytest.raises(ClearbenchError, match="no CLS token"):
        load_encoder("sig-cls").encode(_slices())


def _fake_cache(root: Path, repo: str, make) -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    make(snapshot)
    return snapshot


@pytest.mark.parametrize("weights", [{"hf_repo": "org/tiny-dino"}, "org/tiny-dino"])
def test_repo_id_is_read_from_the_local_cache(tmp_path, monkeypatch, weights):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = _fake_cache(tmp_path / "hub", "org/tiny-dino", lambda d: _save(d, "dinov2", DINO, BIT_PROCESSOR))
    write_card({"name": "cached", "family": "hf", "weights": weights})
    status = encoder_status(get_card("cached"), check_sha256=True)
    assert status.weights.path == snapshot and status.sha256 == file_sha256(snapshot / "model.safetensors")
    with no_network() as attempts:
        enc = load_encoder("cached")
    assert not attempts and enc.provenance["weights"] == str(snapshot) and enc.dim == 32


def test_repo_not_in_the_cache_names_the_cache_and_the_download_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    write_card({"name": "absent", "family": "hf", "weights": {"hf_repo": "org/absent"}})
    with pytest.raises(ClearbenchError) as info:
        load_encoder("absent")
    message = str(info.value)
    assert str(tmp_path / "hub") in message and "hf download org/absent" in message
    assert "huggingface-cli download org/absent" in message and "\n" not in message


def test_builtin_example_cards_point_at_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    for name, repo in (("rad-dino", "microsoft/rad-dino"), ("dinov2-base", "facebook/dinov2-base")):
        card = get_card(name)
        assert card.family == "hf" and card.weights.hf_repo == repo and card.dim == 768
        status = encoder_status(card)
        assert status.problem is None and not status.weights.found
        with pytest.raises(ClearbenchError, match=f"hf download {repo}"):
            load_encoder(name)


def test_folder_without_config_json_is_one_clear_line(tmp_path):
    folder = tmp_path / "weights-only"
    _save(folder, "dinov2", DINO, None)
    (folder / "config.json").unlink()
    write_card({"name": "noconf", "family": "hf", "weights": str(folder)})
    with pytest.raises(InputError) as info:
        load_encoder("noconf")
    assert info.value.path == str(folder) and "no config.json" in info.value.reason


def test_unknown_architecture_names_the_folder_and_the_type(tmp_path):
    folder = tmp_path / "custom"
    _save(folder, "dinov2", DINO, None)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(
        json.dumps({**config, "model_type": "brand_new_vit", "auto_map": {"AutoModel": "modeling.BrandNew"}})
    )
    write_card({"name": "custom", "family": "hf", "weights": str(folder)})
    with pytest.raises(InputError) as info:
        load_encoder("custom")
    assert info.value.path == str(folder)
    assert "does not know the architecture 'brand_new_vit'" in info.value.reason and "never runs" in info.value.reason


def test_missing_backbone_keys_are_an_error_but_an_unused_pooler_is_not(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "model"
    _save(folder, "vit", VIT, VIT_PROCESSOR)
    state = load_file(str(folder / "model.safetensors"))
    save_file(
        {k: v for k, v in state.items() if not k.startswith("pooler.")},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )
    write_card({"name": "no-pooler", "family": "hf", "weights": str(folder), "params": {"pooling": "cls"}})
    assert load_encoder("no-pooler").encode(_slices()).shape == (3, 32)  # a *ForImageClassification file
    write_card({"name": "with-pooler", "family": "hf", "weights": str(folder), "params": {"pooling": "pooler"}})
    with pytest.raises(InputError, match=r"missing key.*pooler\.dense"):
        load_encoder("with-pooler")
    save_file(
        {k: v for k, v in state.items() if "layernorm" not in k},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )
    with pytest.raises(InputError, match="missing key"):
        load_encoder("no-pooler")


def test_pickled_weights_are_not_read(tmp_path):
    folder = tmp_path / "model"
    model = _save(folder, "dinov2", DINO, None)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    write_card({"name": "pickled", "family": "hf", "weights": str(folder)})
    with pytest.raises(InputError, match=re.escape("pytorch_model.bin: pickled weights are not read")):
        load_encoder("pickled")


def test_sha256_pinned_in_the_card_is_verified(tmp_path):
    _save(tmp_path / "model", "dinov2", DINO, None)
    write_card({"name": "pinned", "family": "hf", "weights": {"path": str(tmp_path / "model"), "sha256": "0" * 64}})
    with pytest.raises(InputError, match="does not match the card"):
        load_encoder("pinned")


def test_random_init_from_a_config_in_the_card_is_seeded():
    params = {"pooling": "mean", "config": {"model_type": "dinov2", **DINO}}
    write_card({"name": "r0", "family": "hf", "weights": "random:0", "params": params})
    write_card({"name": "r1", "family": "hf", "weights": "random:1", "params": params})
    x = _slices()
    a, b, c = (load_encoder(n).encode(x) for n in ("r0", "r0", "r1"))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    write_card({"name": "nocfg", "family": "hf", "weights": "random"})
    with pytest.raises(ClearbenchError, match="model_type"):
        load_encoder("nocfg")
    write_card({"name": "badpool", "family": "hf", "weights": "random", "params": {"pooling": "max"}})
    with pytest.raises(ClearbenchError, match="pooling 'max'"):
        load_encoder("badpool")


def test_check_command_on_an_hf_folder(tmp_path):
    _save(tmp_path / "model", "dinov2", DINO, BIT_PROCESSOR)
    write_card({"name": "tiny", "family": "hf", "weights": str(tmp_path / "model")})
    result = CliRunner().invoke(app, ["encoders", "check", "tiny", "--weights", "given", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["passed"] and report["weights"] == str(tmp_path / "model")


def test_a_file_family_still_needs_hf_file_with_hf_repo():
    write_card({"name": "femto-hub", "family": "mambaout", "weights": {"hf_repo": "org/femto"}})
    with pytest.raises(ClearbenchError, match="hf_repo needs hf_file"):
        load_encoder("femto-hub")
    assert "hf_repo needs hf_file" in encoder_status(get_card("femto-hub")).problem


def test_weights_of_another_shape_are_listed(tmp_path):
    folder = tmp_path / "model"
    _save(folder, "dinov2", DINO, None)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "mlp_ratio": 2}))  # the saved MLP is 4x wide
    write_card({"name": "reshaped", "family": "hf", "weights": str(folder)})
    with pytest.raises(InputError) as info:
        load_encoder("reshaped")
    assert (
        "wrongly shaped" in info.value.reason
        and "encoder.layer.0.mlp.fc1.weight (128, 32) vs model (64, 32)" in info.value.reason
    )


def test_embed_a_synthetic_cohort_with_an_hf_card(tmp_path):
    from clearbench.scans.synth.deeplesion import write_cohort
    from clearbench.store import EmbeddingStore

    cohort = write_cohort(tmp_path / "dl", n_scans=2, seed=3, size=32)
    _save(tmp_path / "model", "dinov2", DINO, BIT_PROCESSOR)
    write_card({"name": "tiny-dino", "family": "hf", "weights": str(tmp_path / "model")})
    result = CliRunner().invoke(
        app,
        ["embed", "--encoder", "tiny-dino", "--dataset", "deeplesion", "--root", str(cohort), "--json"],
        terminal_width=200,
    )
    assert result.exit_code == 0, (result.output, result.exception)
    store = EmbeddingStore()
    bags = store.bags("deeplesion", "tiny-dino")
    assert len(bags) == 2 and bags.dim == 32 and np.isfinite(bags.vectors).all()
    prov = store.provenance("deeplesion__tiny-dino")
    assert prov["family"] == "hf" and prov["weights_sha256"] == file_sha256(tmp_path / "model" / "model.safetensors")
    assert prov["preprocessing"]["crop"] == 28
