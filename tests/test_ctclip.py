"""CT-CLIP: our CTViT matches upstream numbers, loads the published key layout strictly, and preprocesses like CT-CLIP.

The reference numbers in :data:`UPSTREAM_*` were produced once by running the upstream code
(ibrahimethemhamamci/CT-CLIP a2a155c, ``transformer_maskgit/ctvit.py`` + ``attention.py`` with
vector-quantize-pytorch 1.1.2, patched only so that its hard-coded ``cuda`` device reads ``cpu``) on the
deterministic weights and input built by :func:`_hash_fill` below. They pin the two upstream quirks
(the PEG's mixed-axis reshape and the un-normalised keys/values) and the codebook lookup.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clearbench.config import home
from clearbench.encoders.card import write_card
from clearbench.encoders.ctclip import (
    CTCLIP_PARAMS,
    CTCLIP_PREPROCESSING,
    CTCLIPFamily,
    CTViT,
    build_ctclip_image_encoder,
    ctclip_preprocess,
)
from clearbench.encoders.registry import load_encoder
from clearbench.errors import ClearbenchError, InputError
from clearbench.scans.scan import Scan

TINY = {
    **CTCLIP_PARAMS,
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
}
TINY_PREP = {"shape": [8, 32, 32]}

# Upstream on _hash_fill weights (dim_latent 8) and _hash_input(): see the module docstring.
UPSTREAM_PRE_VQ = [  # (tokens * linspace(-1, 1, 32)).sum(-1), flattened (b, t, h, w), before quantisation
    0.1233,
    -0.1187,
    -0.544,
    -2.107,
    -0.0863,
    -1.8424,
    -1.2849,
    -0.2349,
    -1.0946,
    -2.0607,
    -1.1794,
    -0.7041,
    -1.4319,
    -0.6444,
    -1.4242,
    -2.6615,
    0.6499,
    0.445,
    -0.1517,
    -1.5788,
    0.4452,
    -1.7095,
    -0.6107,
    -1.2452,
    -0.6617,
    -3.0478,
    -0.9015,
    -0.9726,
    -1.0723,
    -0.8707,
    -1.2699,
    -3.2675,
    -3.8515,
    -3.8533,
    -1.0388,
    -4.296,
    -2.8916,
    -4.3645,
    0.2581,
    -1.7051,
    -2.3534,
    -3.7692,
    -2.3953,
    -2.7807,
    -3.1429,
    -3.0282,
    -1.4997,
    -3.7484,
    -3.3144,
    -4.1701,
    -0.8553,
    -3.8058,
    -3.0908,
    -4.6789,
    -0.7996,
    -1.7875,
    -1.6609,
    -4.1026,
    -1.7662,
    -3.3112,
    -2.685,
    -3.5609,
    -1.4202,
    -3.8008,
]
UPSTREAM_CODES = [
    4,
    4,
    4,
    4,
    4,
    4,
    11,
    11,
    4,
    9,
    4,
    11,
    4,
    4,
    3,
    4,
    4,
    11,
    4,
    4,
    11,
    11,
    11,
    11,
    4,
    3,
    11,
    11,
    4,
    4,
    4,
    4,
    5,
    4,
    4,
    11,
    4,
    11,
    11,
    11,
    4,
    11,
    4,
    11,
    4,
    11,
    4,
    11,
    11,
    4,
    4,
    11,
    11,
    11,
    11,
    11,
    11,
    11,
    11,
    11,
    11,
    11,
    4,
    11,
]
UPSTREAM_EMBEDDING = [
    [0.354094, 0.347357, 0.354885, 0.368835, 0.327053, 0.336929, 0.374327, 0.362453],
    [0.32728, 0.384986, 0.313258, 0.387855, 0.298233, 0.375246, 0.324878, 0.401015],
]


def _published_layout(p: dict) -> dict[str, torch.Tensor]:
    """Every image key of a CTCLIP state dict for config ``p``, with upstream's shapes (zeros).

    That is our model's keys plus what upstream CTViT also stores: the ``to_pixels*`` decoder, the unused
    first-frame patch embedding, each attention's ``context_norm`` and its empty ``null_kv``.
    """
    model = build_ctclip_image_encoder(**p)
    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    vt, dim, pt, pp = "visual_transformer.", p["dim"], p["temporal_patch_size"], p["patch_size"] ** 2
    for name, n_out in (("to_pixels_first_frame", pp), ("to_pixels", pt * pp)):
        sd[f"{vt}{name}.0.weight"], sd[f"{vt}{name}.0.bias"] = torch.zeros(n_out, dim), torch.zeros(n_out)
    for idx, n in ((1, pp), (3, dim)):
        sd[f"{vt}to_patch_emb_first_frame.{idx}.weight"], sd[f"{vt}to_patch_emb_first_frame.{idx}.bias"] = (
            torch.zeros(n),
            torch.zeros(n),
        )
    sd[f"{vt}to_patch_emb_first_frame.2.weight"], sd[f"{vt}to_patch_emb_first_frame.2.bias"] = (
        torch.zeros(dim, pp),
        torch.zeros(dim),
    )
    for part, depth in (("spatial", p["spatial_depth"]), ("temporal", p["temporal_depth"])):
        for i in range(depth):
            att = f"{vt}enc_{part}_transformer.layers.{i}.1."
            sd[f"{att}context_norm.gamma"], sd[f"{att}context_norm.beta"] = torch.zeros(dim), torch.zeros(dim)
            sd[f"{att}null_kv"] = torch.zeros(p["heads"], 0, p["dim_head"])
    return sd


def _hash_fill(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Deterministic, RNG-free pseudo-random values (the classic sin-hash), keyed by sorted key order."""
    out = {}
    for i, key in enumerate(sorted(sd)):
        t = sd[key]
        k = torch.arange(t.numel(), dtype=torch.float64)
        vals = (torch.frac(torch.sin(k * 12.9898 + 78.233 * (i + 1)) * 43758.5453) - 0.5) * 0.6
        if key.endswith("bias"):
            vals = vals * 0.1
        if key.endswith(("gamma", "q_scale", "k_scale")):
            vals = vals + 1.0
        if key.endswith("initted"):
            vals = torch.ones(t.numel(), dtype=torch.float64)
        out[key] = vals.reshape(t.shape).to(t.dtype)
    return out


def _hash_input() -> torch.Tensor:
    k = torch.arange(2 * 8 * 32 * 32, dtype=torch.float64)
    return (torch.frac(torch.sin(k * 12.9898) * 43758.5453) * 2 - 1).reshape(2, 1, 8, 32, 32).float()


def _full_checkpoint(p: dict) -> dict[str, torch.Tensor]:
    """A flat CTCLIP state dict as published: image keys, the extra latent copy and text-tower keys."""
    sd = _hash_fill(_published_layout(p))
    sd["to_visual_latent_extra.weight"] = sd["to_visual_latent.weight"].clone()
    sd["text_transformer.embeddings.position_ids"] = torch.arange(12)
    sd["text_transformer.embeddings.word_embeddings.weight"] = torch.randn(30, 16)
    sd["to_text_latent.weight"] = torch.randn(p["dim_latent"], 16)
    sd["temperature"] = torch.tensor(1.0)
    return sd


def _card(name: str, weights, params=None, preprocessing=None) -> None:
    write_card(
        {
            "name": name,
            "family": "ctclip",
            "weights": weights,
            "params": params or {},
            "preprocessing": preprocessing or {},
        }
    )


def _scan(hu: np.ndarray, spacing=(1.5, 0.75, 0.75)) -> Scan:
    return Scan(scan_id="s1", patient_id="p1", hu=hu.astype(np.int16), spacing=spacing)


# -- architecture ---------------------------------------------------------------------------------------
def test_tiny_ctvit_gives_codebook_token_grid():
    torch.manual_seed(0)
    p = {k: TINY[k] for k in TINY if k != "dim_latent"}
    vit = CTViT(**p).eval()
    with torch.no_grad():
        tokens = vit(torch.randn(2, 1, 8, 32, 32))
    assert tokens.shape == (2, 2, 4, 4, 32) and tokens.dtype == torch.float32
    codebook = vit.vq._codebook.embed[0]
    is_entry = (tokens.reshape(-1, 1, 32) == codebook[None]).all(dim=-1)
    assert torch.all(is_entry.any(dim=1))  # every token is exactly a stored codebook entry


def test_matches_upstream_reference_numbers():
    model = build_ctclip_image_encoder(**TINY).eval()
    state = CTCLIPFamily().adapt_state_dict(_hash_fill(_published_layout(TINY)), TINY)
    model.load_state_dict(state, strict=True)
    x = _hash_input()
    with torch.no_grad():
        pre = model.visual_transformer.encode(x)
        _, codes = model.visual_transformer.vq(pre)
        emb = model(x)
    assert torch.allclose((pre * torch.linspace(-1, 1, 32)).sum(-1).flatten(), torch.tensor(UPSTREAM_PRE_VQ), atol=2e-3)
    assert codes.flatten().tolist() == UPSTREAM_CODES
    assert torch.allclose(emb, torch.tensor(UPSTREAM_EMBEDDING), atol=1e-5)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2))


def test_codebook_lookup_stays_float32_under_bfloat16_autocast():
    model = build_ctclip_image_encoder(**TINY).eval()
    model.load_state_dict(CTCLIPFamily().adapt_state_dict(_hash_fill(_published_layout(TINY)), TINY), strict=True)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        pre = model.visual_transformer.encode(_hash_input())
        quantized, _ = model.visual_transformer.vq(pre)
        emb = model(_hash_input())
    assert pre.dtype == torch.bfloat16 and quantized.dtype == torch.float32
    assert torch.allclose(emb.float(), torch.tensor(UPSTREAM_EMBEDDING), atol=0.05)


def test_full_config_matches_published_parameter_count():
    with torch.device("meta"):
        model = build_ctclip_image_encoder(**CTCLIP_PARAMS)
    vt = sum(p.numel() for p in model.visual_transformer.parameters())  # the codebook is buffers, not parameters
    latent = model.to_visual_latent.weight.numel()
    decoder_and_first_frame = (20 * 20 * 512 + 400) + (10 * 400 * 512 + 4000) + (2 * 400 + 400 * 512 + 512 + 2 * 512)
    context_norm_gains = 8 * 512
    assert vt + decoder_and_first_frame + context_norm_gains == 25_890_200  # upstream CTViT's parameter count
    assert latent == 150_994_944 and model.to_visual_latent.in_features == 24 * 24 * 512


# -- checkpoints ----------------------------------------------------------------------------------------
def test_published_checkpoint_loads_strictly_and_embeds_identically():
    ckpt = _full_checkpoint(TINY)
    path = home() / "weights" / "CT-CLIP_v2.pt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    _card("ctclip-tiny", str(path), {"image_size": 32, "patch_size": 8, "temporal_patch_size": 4}, TINY_PREP)
    enc = load_encoder("ctclip-tiny")
    assert enc.kind == "volume" and enc.dim == 8
    assert enc.provenance["params"]["dim"] == 32 and enc.provenance["params"]["heads"] == 2  # read from the file
    reference = build_ctclip_image_encoder(**TINY).eval()
    reference.load_state_dict({k: v for k, v in ckpt.items() if k in reference.state_dict()}, strict=True)
    scan = _scan(np.random.default_rng(0).integers(-1100, 1200, size=(8, 32, 32)))
    batch = enc.preprocess(scan)
    assert batch.shape == (1, 1, 8, 32, 32)
    out = enc.embed(batch)
    assert out.shape == (1, 8) and out.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(out, reference(batch))
    assert torch.equal(enc.encode(scan), out)


def test_checkpoint_with_null_key_values_is_refused():
    sd = _published_layout(TINY)
    sd["visual_transformer.enc_spatial_transformer.layers.0.1.null_kv"] = torch.zeros(2, 4, 8)
    with pytest.raises(ClearbenchError, match="null key/values"):
        CTCLIPFamily().adapt_state_dict(sd, TINY)


def test_checkpoint_missing_the_projection_names_the_key():
    sd = _full_checkpoint(TINY)
    del sd["to_visual_latent.weight"]
    path = home() / "weights" / "broken.pt"
    path.parent.mkdir(parents=True)
    torch.save(sd, path)
    _card("ctclip-broken", str(path), {"image_size": 32, "patch_size": 8, "temporal_patch_size": 4}, TINY_PREP)
    with pytest.raises(InputError, match=r"missing key\(s\): to_visual_latent.weight"):
        load_encoder("ctclip-broken")


def test_preprocessing_shape_must_fit_the_model():
    _card(
        "ctclip-misfit",
        "random:0",
        {"image_size": 32, "patch_size": 8, "temporal_patch_size": 4},
        {"shape": [10, 32, 32]},
    )
    with pytest.raises(ClearbenchError, match="does not fit CTViT"):
        load_encoder("ctclip-misfit")


# -- preprocessing ---------------------------------------------------------------------------------------
def test_preprocessing_default_output_is_240x480x480_padded_with_minus_one():
    hu = np.full((20, 30, 40), 500, dtype=np.int16)  # already at 1.5 / 0.75 mm: no resampling
    out = ctclip_preprocess(hu, (1.5, 0.75, 0.75))
    assert out.shape == (240, 480, 480) and out.dtype == torch.float32
    inside = out[110:130, 220:260, 225:255]  # depth 20 padded 110 + 110; X = 40 becomes H (220 before), Y = 30 W (225)
    assert torch.all(inside == 0.5)
    assert out.sum().item() == pytest.approx(0.5 * 20 * 30 * 40 - (out.numel() - 20 * 30 * 40), rel=1e-6)


def test_preprocessing_clips_resamples_and_crops():
    hu = np.zeros((6, 16, 20), dtype=np.int16)
    hu[:, :, :10] = -3000  # left half below the window, right half above
    hu[:, :, 10:] = 3000
    settings = {**CTCLIP_PREPROCESSING, "shape": [8, 32, 32]}
    out = ctclip_preprocess(hu, (3.0, 1.5, 1.5), settings)  # twice the target spacing: every axis doubles
    assert out.shape == (8, 32, 32)
    assert out.min() == -1.0 and out.max() == 1.0
    # depth 12 cropped to 8 (start 2); H (from X: 40) cropped to 32 (start 4); W (from Y: 32) kept. The X edge
    # between input columns 9 and 10 blends output rows 19 and 20 (align_corners=False), i.e. 15 and 16 after the crop.
    assert torch.all(out[:, :15, :] == -1.0) and torch.all(out[:, 17:, :] == 1.0)
    assert torch.all(out[:, 15:17, :] > -1.0) and torch.all(out[:, 15:17, :] < 1.0)


def test_in_plane_transpose_puts_scan_columns_on_height():
    hu = np.zeros((4, 8, 12), dtype=np.int16)
    hu[:, :, 0] = 1000  # first column (X = 0)
    settings = {**CTCLIP_PREPROCESSING, "shape": [4, 16, 16]}
    out = ctclip_preprocess(hu, (1.5, 0.75, 0.75), settings)
    assert torch.all(out[:, 2, 4:12] == 1.0)  # H = X: row 2 after padding 12 -> 16; W = Y: 8 -> 16, offset 4
    flat = ctclip_preprocess(hu, (1.5, 0.75, 0.75), {**settings, "transpose_in_plane": False})
    assert torch.all(flat[:, 4:12, 2] == 1.0)
