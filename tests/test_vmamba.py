"""The vmamba family: VSSM architecture, the four-direction scan, and VMamba's published key layouts."""

from __future__ import annotations

import pytest
import torch

import clearbench.encoders.vmamba as vm
from clearbench.config import home
from clearbench.encoders.card import write_card
from clearbench.encoders.image import IMAGENET_224, ImageTransform
from clearbench.encoders.registry import load_encoder
from clearbench.encoders.selective_scan import selective_scan_reference
from clearbench.encoders.vmamba import build_vmamba, cross_merge, cross_scan
from clearbench.errors import ClearbenchError

TINY = {"depths": [1, 1, 1, 1], "dims": [16, 32, 64, 128], "ssm_d_state": 4}
PREP_64 = {"size": 64, "crop": 64}


def _card(name: str, weights, params=None, preprocessing=PREP_64) -> None:
    card = {"name": name, "family": "vmamba", "weights": weights, "preprocessing": preprocessing}
    if params:
        card["params"] = params
    write_card(card)


def _slices(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 80, 72, generator=torch.Generator().manual_seed(seed))


def _tiny_model(seed: int = 1) -> vm.VSSM:
    torch.manual_seed(seed)
    model = build_vmamba(**TINY).eval()
    with torch.no_grad():  # move every parameter off its init so that a mis-routed key would show
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def test_tiny_config_runs_on_cpu():
    _card("vm-tiny", "random:3", TINY)
    enc = load_encoder("vm-tiny")
    out = enc.encode(_slices())
    assert enc.kind == "slice" and enc.dim == 128
    assert out.shape == (3, 128) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert sum(p.numel() for p in enc.model.parameters()) == 405_952  # counted from the module itself, tiny config
    assert enc.provenance["weights"] == "random:3"
    assert torch.equal(load_encoder("vm-tiny").encode(_slices()), out)  # seeded: reproducible


def test_default_preprocessing_is_the_papers_224_imagenet_transform():
    _card("vm-prep", "random:0", TINY, preprocessing={})
    enc = load_encoder("vm-prep")
    slices = torch.rand(2, 512, 512, generator=torch.Generator().manual_seed(0))
    batch = enc.preprocess(slices)
    assert batch.shape == (2, 3, 224, 224)
    assert torch.equal(batch, ImageTransform.from_settings(IMAGENET_224)(slices))


def test_default_config_has_vmamba_parameter_names_and_count():
    model = build_vmamba()
    state = model.state_dict()
    assert len(state) == 303  # VSSM() without its classifier head
    assert sum(p.numel() for p in model.parameters()) == 42_953_376  # 43,722,376 minus the 1000-class head
    op = "layers.2.blocks.8.op."
    assert state[op + "x_proj_weight"].shape == (4, 24 + 2 * 16, 768)  # dt_rank = ceil(384 / 16)
    assert state[op + "dt_projs_weight"].shape == (4, 768, 24)
    assert state[op + "A_logs"].shape == (4 * 768, 16) and state[op + "Ds"].shape == (4 * 768,)
    assert {
        "patch_embed.0.weight",
        "patch_embed.2.weight",
        "layers.0.downsample.1.weight",
        "layers.0.downsample.3.weight",
        "classifier.norm.weight",
    } <= set(state)
    assert not any(k.startswith("classifier.head") for k in state)


def test_cross_scan_reads_four_directions_and_merge_is_its_adjoint():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    xs = cross_scan(x)
    assert xs.shape == (2, 4, 3, 20)
    assert torch.equal(xs[:, 0], x.flatten(2))  # rows
    assert torch.equal(xs[:, 1], x.transpose(2, 3).flatten(2))  # columns
    assert torch.equal(xs[:, 2], x.flatten(2).flip(-1)) and torch.equal(xs[:, 3], xs[:, 1].flip(-1))
    assert torch.equal(cross_merge(xs, 4, 5), 4 * x.flatten(2))
    ys = torch.randn(2, 4, 3, 20)
    assert torch.allclose((cross_scan(x) * ys).sum(), (x.flatten(2) * cross_merge(ys, 4, 5)).sum(), rtol=1e-5)


def test_model_with_the_chunked_scan_equals_the_model_with_the_recurrence(monkeypatch):
    model = _tiny_model()
    x = torch.randn(2, 3, 32, 48)  # not square: rows and columns differ
    with torch.no_grad():
        chunked = model(x)
        monkeypatch.setattr(vm, "selective_scan", selective_scan_reference)
        reference = model(x)
    assert (chunked - reference).abs().max() < 1e-4


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = build_vmamba(**TINY, drop_path_rate=0.0).train()  # stochastic depth could drop a whole branch
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()  # the last stage needs > 1 token to use A
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def _legacy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Older VMamba releases: patch_embed.proj/norm, ln_1, self_attention, top-level norm and head."""
    out = {}
    for key, v in state.items():
        k = key.replace("patch_embed.0.", "patch_embed.proj.").replace("patch_embed.2.", "patch_embed.norm.")
        k = k.replace(".norm.", ".ln_1.") if ".blocks." in k and ".norm." in k and ".op." not in k else k
        k = k.replace(".op.", ".self_attention.").replace("classifier.norm.", "norm.")
        out[k] = v
    return out


@pytest.mark.parametrize("layout", ["release", "legacy", "clear-moco"])
def test_published_key_layouts_load_strictly(layout):
    source = _tiny_model()
    state = source.state_dict()
    if layout == "release":  # vssm_*_ckpt_epoch_*.pth: {"model": ...} with a 1000-class head
        obj = {
            "model": {**state, "classifier.head.weight": torch.randn(10, 128), "classifier.head.bias": torch.randn(10)},
            "epoch": 300,
        }
    elif layout == "legacy":
        obj = {"model": {**_legacy(state), "head.weight": torch.randn(10, 128), "head.bias": torch.randn(10)}}
        assert "layers.0.blocks.0.ln_1.weight" in obj["model"] and "norm.weight" in obj["model"]
    else:  # a CLEAR MoCo training file: the 3-layer projection MLP still sits in classifier.head
        mlp = {
            "classifier.head.0.weight": torch.randn(64, 128),
            "classifier.head.1.weight": torch.randn(64),
            "classifier.head.1.running_mean": torch.zeros(64),
            "classifier.head.3.weight": torch.randn(32, 64),
        }
        base = {**state, **mlp}
        obj = {
            "epoch": 100,
            "arch": "vmamba",
            "state_dict": {
                **{f"module.base_encoder.{k}": v for k, v in base.items()},
                **{f"module.momentum_encoder.{k}": v + 1 for k, v in base.items()},
                "module.predictor.0.weight": torch.randn(8, 8),
            },
        }
    path = home() / "weights" / f"vmamba-{layout}.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    _card("vm-ckpt", {"path": str(path)})  # no [params]: the architecture is read from the checkpoint
    enc = load_encoder("vm-ckpt")
    assert enc.dim == 128
    assert {k: enc.provenance["params"][k] for k in TINY} == TINY
    x = ImageTransform.from_settings({**IMAGENET_224, **PREP_64})(_slices())
    with torch.no_grad():
        expected = source(x)
    assert torch.equal(enc.embed(x), expected)


def test_a_checkpoint_of_another_architecture_is_explained():
    path = home() / "weights" / "not-vmamba.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"stem.0.weight": torch.randn(8, 3, 4, 4)}, path)
    _card("vm-wrong", {"path": str(path)})
    with pytest.raises(ClearbenchError, match="is it a VMamba checkpoint"):
        load_encoder("vm-wrong")
