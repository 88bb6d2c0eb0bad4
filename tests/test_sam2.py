"""SAM2: a tiny Hiera through the real ``sam2`` package, the published checkpoint layout, and the missing extra."""

from __future__ import annotations

import sys

import pytest
import torch

from clearbench.config import home
from clearbench.encoders import sam2 as sam2_family
from clearbench.encoders.card import write_card
from clearbench.encoders.image import IMAGENET_MEAN, IMAGENET_STD
from clearbench.encoders.registry import get_family, load_encoder
from clearbench.encoders.sam2 import HIERA_L_PARAMS, build_sam2_image_encoder
from clearbench.errors import MissingExtraError

TINY = {
    **HIERA_L_PARAMS,
    "embed_dim": 16,
    "num_heads": 1,
    "stages": [1, 1, 2, 1],
    "global_att_blocks": [3],
    "window_pos_embed_bkg_spatial_size": [7, 7],
    "window_spec": [8, 4, 4, 2],
    "d_model": 32,
}
PREP_64 = {"size": 64, "crop": 64}


def _card(name: str, weights, params=None, preprocessing=None) -> None:
    write_card(
        {
            "name": name,
            "family": "sam2",
            "weights": weights,
            "params": params or {},
            "preprocessing": preprocessing or {},
        }
    )


def _slices(n: int = 3, h: int = 80, w: int = 72) -> torch.Tensor:
    return torch.rand(n, h, w, generator=torch.Generator().manual_seed(0))


def test_tiny_hiera_embeds_mean_pooled_vision_features():
    _card("sam2-tiny", "random:3", TINY, PREP_64)
    enc = load_encoder("sam2-tiny")
    assert enc.kind == "slice" and enc.dim == 32
    batch = enc.preprocess(_slices())
    assert batch.shape == (3, 3, 64, 64)
    out = enc.embed(batch)
    assert out.shape == (3, 32) and out.dtype == torch.float32
    with torch.no_grad():
        vf = enc.model(batch)["vision_features"]
    assert vf.shape == (3, 32, 4, 4)  # stride 16
    assert torch.equal(out, vf.flatten(2).transpose(1, 2).mean(1))  # CLEAR's pooling, written its way


def test_default_preprocessing_is_the_papers_imagenet_224():
    _card("sam2-tiny-224", "random:0", TINY)
    enc = load_encoder("sam2-tiny-224")
    flat = torch.full((2, 100, 120), 0.5)
    batch = enc.preprocess(flat)
    assert batch.shape == (2, 3, 224, 224)
    expected = (0.5 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(batch[0, :, 100, 100], expected, atol=1e-6)


def test_published_checkpoint_layout_loads_strictly_and_embeds_identically():
    torch.manual_seed(1)
    reference = build_sam2_image_encoder(**TINY).eval()
    model_sd = {f"image_encoder.{k}": v for k, v in reference.state_dict().items()}
    model_sd["sam_mask_decoder.iou_prediction_head.layers.0.weight"] = torch.randn(4, 4)
    model_sd["memory_attention.layers.0.self_attn.q_proj.weight"] = torch.randn(4, 4)
    model_sd["maskmem_tpos_enc"] = torch.randn(7, 1, 1, 64)
    path = home() / "weights" / "sam2_hiera_tiny_test.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": model_sd}, path)
    # the card keeps Hiera-L's widths; embed_dim and d_model are read from the file
    params = {k: v for k, v in TINY.items() if k not in ("embed_dim", "d_model")}
    _card("sam2-file", str(path), params, PREP_64)
    enc = load_encoder("sam2-file")
    assert enc.dim == 32 and enc.provenance["weights_sha256"] is not None
    batch = enc.preprocess(_slices())
    with torch.no_grad():
        expected = reference(batch)["vision_features"].mean(dim=(-2, -1))
    assert torch.equal(enc.embed(batch), expected)


def test_full_hiera_l_card_defaults_match_published_size():
    encoder = build_sam2_image_encoder(**HIERA_L_PARAMS)  # Hiera cannot be built on the meta device
    assert sum(p.numel() for p in encoder.parameters()) == 212_703_280  # sam2_hiera_large image_encoder
    assert len(encoder.state_dict()) == 594
    assert get_family("sam2").output_dim(HIERA_L_PARAMS) == 256


def test_builder_without_the_package_raises_missing_extra(monkeypatch: pytest.MonkeyPatch):
    for name in [m for m in sys.modules if m == "sam2" or m.startswith("sam2.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sam2", None)  # what `import sam2` sees when it is not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'clearbench\[sam2\]'"):
        sam2_family.build_sam2_image_encoder(**TINY)
