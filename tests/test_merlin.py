"""Merlin: a tiny I3ResNet through the real ``merlin-vlm`` package, the published layout, and MONAI-equal preprocessing."""

from __future__ import annotations

import importlib.util
import sys
import warnings

import numpy as np
import pytest
import torch

from clearbench.config import home
from clearbench.encoders.card import write_card
from clearbench.encoders.merlin import (
    MERLIN_PREPROCESSING,
    build_merlin_image_encoder,
    merlin_contrastive_embedding,
    merlin_preprocess,
)
from clearbench.encoders.registry import encoder_status, get_card, get_family, load_encoder
from clearbench.errors import MissingExtraError
from clearbench.scans.scan import Scan

TINY = {"layers": [1, 1, 1, 1], "class_nb": 8}
TINY_PREP = {"shape": [32, 32, 16]}


def _card(name: str, weights, params=None, preprocessing=None) -> None:
    write_card(
        {
            "name": name,
            "family": "merlin",
            "weights": weights,
            "params": params or {},
            "preprocessing": preprocessing or {},
        }
    )


def _tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_merlin_image_encoder(**TINY).eval()
    for m in net.modules():  # non-trivial BatchNorm statistics, so eval-mode normalisation matters
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return net


def _scan(shape=(20, 40, 36), spacing=(3.0, 1.2, 1.0), seed: int = 0) -> Scan:
    hu = np.random.default_rng(seed).integers(-1200, 1500, size=shape).astype(np.int16)
    return Scan(scan_id="s1", patient_id="p1", hu=hu, spacing=spacing)


def test_tiny_i3resnet_gives_the_upstream_contrastive_embedding():
    net = _tiny_model()
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # upstream's activation checkpointing warns about use_reentrant
        upstream, phenotype = net(x)
        ours = merlin_contrastive_embedding(net, x)
    assert ours.shape == (1, 512) and ours.dtype == torch.float32 and phenotype.shape == (1, 8)
    assert torch.allclose(ours, upstream, atol=1e-6)


def test_published_checkpoint_layout_loads_strictly_and_embeds_identically():
    reference = _tiny_model(seed=2)
    ckpt = {f"encode_image.i3_resnet.{k}": v for k, v in reference.state_dict().items()}
    ckpt["encode_text.linear_layer.weight"] = torch.randn(512, 768)
    ckpt["encode_text.text_encoder.embeddings.word_embeddings.weight"] = torch.randn(10, 768)
    path = home() / "weights" / "merlin_tiny.pt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    _card("merlin-file", str(path), preprocessing=TINY_PREP)  # layers and class_nb are read from the file
    enc = load_encoder("merlin-file")
    assert enc.kind == "volume" and enc.dim == 512
    assert enc.provenance["params"] == TINY
    batch = enc.preprocess(_scan())
    assert batch.shape == (1, 1, 32, 32, 16)
    out = enc.embed(batch)
    assert out.shape == (1, 512) and out.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(out, merlin_contrastive_embedding(reference, batch))


def test_random_card_runs_end_to_end_on_a_scan():
    _card("merlin-tiny", "random:0", TINY, TINY_PREP)
    enc = load_encoder("merlin-tiny")
    out = enc.encode(_scan())
    assert out.shape == (1, 512) and torch.isfinite(out).all()


def test_default_preprocessing_gives_224x224x160_in_unit_range():
    out = merlin_preprocess(_scan().hu, (3.0, 1.2, 1.0))
    assert out.shape == (224, 224, 160) and out.dtype == torch.float32
    assert out.min() == 0.0 and out.max() == 1.0  # clipped HU range, and padding with 0 (= -1000 HU)
    assert torch.all(out[:, :, 0] == 0.0)  # 20 slices at 3 mm stay 20: 70 padded slices each side


def test_preprocessing_equals_merlins_monai_pipeline():
    from monai.data import MetaTensor
    from monai.transforms import CenterSpatialCropd, Compose, Orientationd, ScaleIntensityRanged, Spacingd, SpatialPadd

    scan = _scan(shape=(37, 50, 45), spacing=(2.5, 0.8, 0.7), seed=1)
    shape = [40, 24, 30]  # pads X, crops Y and Z
    # The same volume as a NIfTI written from DICOM holds it: voxel axes (X, Y, Z) running to L, P, S.
    z, y, x = scan.spacing
    affine = np.diag([-x, -y, z, 1.0])
    affine[:3, 3] = [10.0, 20.0, -30.0]
    image = MetaTensor(
        torch.from_numpy(scan.hu.transpose(2, 1, 0).astype(np.float32))[None], affine=torch.tensor(affine)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        pipeline = Compose(
            [
                Orientationd(keys=["image"], axcodes="RAS"),
                Spacingd(keys=["image"], pixdim=(1.5, 1.5, 3), mode="bilinear"),
                ScaleIntensityRanged(keys=["image"], a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True),
                SpatialPadd(keys=["image"], spatial_size=shape),
                CenterSpatialCropd(keys=["image"], roi_size=shape),
            ]
        )
        expected = pipeline({"image": image})["image"][0].as_tensor()
    ours = merlin_preprocess(scan.hu, scan.spacing, {**MERLIN_PREPROCESSING, "shape": shape})
    assert ours.shape == expected.shape == (40, 24, 30)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        "clearbench.encoders.family.find_spec", lambda name, *a: None if name == "merlin" else real_find_spec(name, *a)
    )
    assert get_family("merlin").missing_extra() == "merlin"
    assert encoder_status(get_card("merlin")).install == "pip install 'clearbench[merlin]'"
    with pytest.raises(MissingExtraError, match=r"pip install 'clearbench\[merlin\]'"):
        load_encoder("merlin")


def test_builder_without_the_package_raises_missing_extra(monkeypatch: pytest.MonkeyPatch):
    for name in [m for m in sys.modules if m == "merlin" or m.startswith("merlin.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "merlin", None)  # what `import merlin` sees when it is not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'clearbench\[merlin\]'"):
        build_merlin_image_encoder(**TINY)
