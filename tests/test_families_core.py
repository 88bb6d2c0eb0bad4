"""hu-hist, mambaout, biomedclip and vit-convb: tiny configs run, and published key layouts load strictly.

Key compatibility is proved the same way for each family: build a random model, save its weights in the
layout the published checkpoints use (prefixes, heads, containers included), load the file through the real
loader (a card in CLEARBENCH_HOME + ``load_encoder``) and require bit-identical embeddings.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from clearbench.config import home
from clearbench.encoders.biomedclip import build_biomedclip_visual
from clearbench.encoders.card import write_card
from clearbench.encoders.image import IMAGENET_224, ImageTransform
from clearbench.encoders.mambaout import build_mambaout
from clearbench.encoders.registry import load_encoder
from clearbench.encoders.vit_convb import build_vit_convb
from clearbench.errors import ClearbenchError

TINY_MAMBAOUT = {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]}
TINY_VIT = {"img_size": 64, "embed_dim": 64, "depth": 1, "num_heads": 2}
PREP_64 = {"size": 64, "crop": 64}


def _card(name: str, family: str, weights, params=None, preprocessing=None) -> None:
    card = {"name": name, "family": family, "weights": weights}
    if params:
        card["params"] = params
    if preprocessing:
        card["preprocessing"] = preprocessing
    write_card(card)


def _save(obj, name: str) -> str:
    path = home() / "weights" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return str(path)


def _slices(n: int = 3, h: int = 80, w: int = 72, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, h, w, generator=torch.Generator().manual_seed(seed))


def _seeded(build, seed: int = 1):
    torch.manual_seed(seed)
    return build().eval()


# -- hu-hist ------------------------------------------------------------------------------------------
def test_hu_hist_features_are_histogram_and_moments():
    enc = load_encoder("hu-hist")
    assert enc.kind == "slice" and enc.dim == 40
    x = torch.zeros(3, 20, 20)
    x[1] = 1.0
    x[2, :, :10] = 0.25  # half at 0, half at 0.25
    out = enc.encode(x)
    assert out.shape == (3, 40) and out.dtype == torch.float32
    hist, (mean, std, skew, kurt, low, high, in_mean, in_std) = out[:, :32], out[:, 32:].T
    assert torch.allclose(hist.sum(1), torch.ones(3))
    assert hist[0, 0] == 1 and hist[1, 31] == 1 and hist[2, 0] == 0.5 and hist[2, 8] == 0.5
    assert torch.allclose(mean, torch.tensor([0.0, 1.0, 0.125]))
    assert torch.allclose(std, torch.tensor([0.0, 0.0, 0.125]))
    assert skew[0] == 0 and kurt[0] == 0 and abs(skew[2]) < 1e-5 and abs(kurt[2] + 2.0) < 1e-4
    assert torch.equal(low, torch.tensor([1.0, 0.0, 0.5])) and torch.equal(high, torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(in_mean, torch.tensor([0.0, 0.0, 0.25])) and torch.allclose(in_std, torch.zeros(3))
    assert enc.provenance["weights"] == "none" and enc.provenance["weights_sha256"] is None


def test_hu_hist_is_per_slice_and_size_independent():
    enc = load_encoder("hu-hist")
    x = _slices(4, 32, 32)
    batch = enc.encode(x)
    assert torch.allclose(batch[2:3], enc.encode(x[2:3]), atol=1e-6)
    # Repeating every pixel 2x2 changes the size, not the distribution.
    bigger = x.repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert torch.allclose(enc.encode(bigger), batch, atol=1e-5)


def test_hu_hist_reads_large_slices_on_a_regular_grid():
    from clearbench.encoders.hu_hist import build_hu_hist

    x = _slices(2, 512, 300)
    sampled = build_hu_hist(max_side=256)(x)
    assert torch.equal(sampled, build_hu_hist(max_side=0)(x[:, ::2, ::2]))
    # the same distribution: equal up to sampling error (the kurtosis of 38k uniform draws has s.e. ~0.02)
    assert torch.allclose(sampled, build_hu_hist(max_side=0)(x), atol=0.05)


# -- 2D preprocessing ---------------------------------------------------------------------------------
def test_image_transform_matches_torchvision_resize_and_centre_crop():
    from torchvision.transforms.v2 import functional as TF

    x = _slices(2, 300, 256)
    ours = ImageTransform.from_settings(IMAGENET_224)(x)
    ref = TF.center_crop(TF.resize(x[:, None], 224, antialias=True), [224, 224]).expand(-1, 3, -1, -1)
    ref = TF.normalize(ref, list(IMAGENET_224["mean"]), list(IMAGENET_224["std"]))
    assert ours.shape == (2, 3, 224, 224)
    assert torch.allclose(ours, ref, atol=1e-5)


# -- mambaout -----------------------------------------------------------------------------------------
def _to_original_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's MambaOut keys -> the original repository's (the inverse of timm's checkpoint_filter_fn)."""
    rules = [
        (r"^stem\.", "downsample_layers.0."),
        (r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1."),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2."),
        (r"^head\.norm\.", "norm."),
    ]
    out = {}
    for key, value in state.items():
        name = key
        for pattern, repl in rules:
            name = re.sub(pattern, repl, name)
        out[name] = value
    return out


def test_mambaout_tiny_forward():
    _card("mo-tiny", "mambaout", "random:3", TINY_MAMBAOUT, PREP_64)
    enc = load_encoder("mo-tiny")
    out = enc.encode(_slices())
    assert out.shape == (3, 32) and out.dtype == torch.float32
    assert enc.provenance["weights"] == "random:3"
    assert torch.equal(load_encoder("mo-tiny").encode(_slices()), out)  # seeded: reproducible


@pytest.mark.parametrize("layout", ["original", "original-moco", "timm-with-head"])
def test_mambaout_checkpoint_layouts_load_strictly(layout):
    from timm.models.mambaout import MambaOut

    full = _seeded(lambda: MambaOut(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=10))
    x = ImageTransform.from_settings({**IMAGENET_224, **PREP_64})(_slices())
    with torch.no_grad():  # CLEAR's embedding: LayerNorm of the spatial mean of the last stage
        expected = full.head.norm(full.forward_features(x).mean((1, 2)))
    state = full.state_dict()
    if layout == "timm-with-head":
        obj = state
    else:
        original = {k: v for k, v in _to_original_layout(state).items() if not k.startswith("head.")}
        original |= {
            "head.fc1.weight": torch.randn(128, 32),
            "head.norm.weight": torch.randn(128),
            "head.fc2.weight": torch.randn(10, 128),
        }
        if layout == "original":
            obj = original
        else:  # a raw MoCo v3 training checkpoint
            obj = {
                "epoch": 100,
                "arch": "mambaout",
                "state_dict": {
                    **{f"module.base_encoder.{k}": v for k, v in original.items()},
                    **{f"module.momentum_encoder.{k}": v + 1 for k, v in original.items()},
                    "module.predictor.0.weight": torch.randn(4, 4),
                },
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
            }
    path = _save(obj, f"mambaout-{layout}.pth")
    _card("mo-ckpt", "mambaout", {"path": path}, preprocessing=PREP_64)  # dims from the checkpoint
    enc = load_encoder("mo-ckpt")
    assert enc.dim == 32 and enc.provenance["params"]["depths"] == [1, 1, 1, 1]
    assert enc.provenance["params"]["dims"] == [8, 16, 24, 32]
    assert torch.equal(enc.embed(x), expected)


def test_mambaout_card_dims_that_contradict_the_checkpoint_are_refused():
    state = _seeded(lambda: build_mambaout(**TINY_MAMBAOUT)).state_dict()
    _card("mo-wrong", "mambaout", {"path": _save(state, "mo.pth")}, {"variant": "femto"}, PREP_64)
    with pytest.raises(ClearbenchError, match=r"checkpoint has depths \(1, 1, 1, 1\) dims \(8, 16, 24, 32\)"):
        load_encoder("mo-wrong")


def test_mambaout_random_init_without_architecture_is_refused():
    _card("mo-none", "mambaout", "random")
    with pytest.raises(ClearbenchError, match="variant or depths and dims"):
        load_encoder("mo-none")


# -- vit-convb ----------------------------------------------------------------------------------------
def test_vit_convb_tiny_forward_and_stem_keys():
    _card("vit-tiny", "vit-convb", "random:0", TINY_VIT, PREP_64)
    enc = load_encoder("vit-tiny")
    out = enc.encode(_slices())
    assert out.shape == (3, 64) and out.dtype == torch.float32
    stem = {k.split(".")[2] for k in enc.model.state_dict() if k.startswith("patch_embed.proj.")}
    assert stem == {"0", "1", "3", "4", "6", "7", "9", "10", "12"}
    assert sum(p.numel() for p in enc.model.parameters()) == 80_072  # counted from the module itself, tiny config


def test_vit_convb_position_embedding_is_fixed_sincos():
    model = build_vit_convb(**TINY_VIT)
    pos = model.pos_embed
    assert not pos.requires_grad and pos.shape == (1, 1 + 16, 64)
    assert torch.equal(pos[0, 0], torch.zeros(64))
    for r in range(4):
        for c in range(4):
            p = 1 + r * 4 + c  # raster order; frequency 0 is 1, so the first entries are sin(row), sin(col)
            assert math.isclose(pos[0, p, 0].item(), math.sin(r), abs_tol=1e-6)
            assert math.isclose(pos[0, p, 16].item(), math.cos(r), abs_tol=1e-6)
            assert math.isclose(pos[0, p, 32].item(), math.sin(c), abs_tol=1e-6)


@pytest.mark.parametrize("layout", ["flat", "moco"])
def test_vit_convb_checkpoint_layouts_load_strictly(layout):
    source = _seeded(lambda: build_vit_convb(**TINY_VIT))
    state = source.state_dict()
    state["pos_embed"] = state["pos_embed"] * 0.5  # the stored position embedding is the one used
    source.load_state_dict(state)
    if layout == "flat":
        obj = state
    else:
        base = {**state, "head.0.weight": torch.randn(32, 64), "head.1.running_mean": torch.zeros(32)}
        obj = {
            "state_dict": {
                **{f"module.base_encoder.{k}": v for k, v in base.items()},
                **{f"module.momentum_encoder.{k}": v for k, v in base.items()},
                "module.predictor.0.weight": torch.randn(8, 8),
            }
        }
    _card("vit-ckpt", "vit-convb", {"path": _save(obj, f"vit-{layout}.pth")}, {"num_heads": 2}, PREP_64)
    enc = load_encoder("vit-ckpt")
    assert enc.provenance["params"]["embed_dim"] == 64 and enc.provenance["params"]["depth"] == 1
    x = ImageTransform.from_settings({**IMAGENET_224, **PREP_64})(_slices())
    with torch.no_grad():
        expected = source(x)
    assert torch.equal(enc.embed(x), expected)


# -- biomedclip ---------------------------------------------------------------------------------------
def test_biomedclip_open_clip_layout_loads_visual_tower_only():
    source = _seeded(lambda: build_biomedclip_visual("test_vit"))  # timm's 160 px test ViT, same classes
    full = {f"visual.{k}": v for k, v in source.state_dict().items()}
    full |= {
        "text.transformer.embeddings.word_embeddings.weight": torch.randn(10, 8),
        "text.proj.0.weight": torch.randn(4, 8),
        "logit_scale": torch.tensor(4.6),
    }
    path = _save(full, "open_clip_pytorch_model.bin")
    _card("bmc-tiny", "biomedclip", {"path": path}, {"model_name": "test_vit"}, {"size": 160, "crop": 160})
    enc = load_encoder("bmc-tiny")
    x = _slices(2, 256, 240)
    out = enc.encode(x)
    assert out.shape == (2, 512) and out.dtype == torch.float32
    prep = enc.preprocess(x)
    assert prep.shape == (2, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(enc.embed(prep), source(prep))
    assert enc.provenance["preprocessing"]["interpolation"] == "bicubic"
    assert enc.provenance["preprocessing"]["mean"][0] == pytest.approx(0.48145466)


@pytest.mark.slow
def test_full_size_models_match_the_published_parameter_counts():
    """The full architectures, as counted from the published code (heads removed); see each family module."""
    from clearbench.encoders.mambaout import VARIANTS

    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert count(build_mambaout(*VARIANTS["femto"])) == 5_816_304
    assert count(build_mambaout(*VARIANTS["base"])) == 79_371_580
    assert count(build_vit_convb()) == 82_199_904
    visual = build_biomedclip_visual()
    assert count(visual) == 86_191_872 and len(visual.state_dict()) == 151
    assert visual.head.proj.weight.shape == (512, 768) and visual.head.proj.bias is None
