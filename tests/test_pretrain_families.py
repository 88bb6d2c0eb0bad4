"""Pretraining is open to every encoder family that declares it: the example plugin's family pretrains through
the real CLI, exports in its own key layout and embeds with the card it wrote; an unknown architecture lists
the pretrainable families, plugins included; MambaOut's sizes are one table for cards and pretraining."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from clearbench.cli import app
from clearbench.encoders.mambaout import VARIANTS, MambaOutFamily
from clearbench.encoders.registry import get_card, get_family, load_encoder
from clearbench.errors import ClearbenchError
from clearbench.pretraining.backbones import build_backbone, pretrainable_families
from clearbench.scans.registry import open_dataset
from clearbench.scans.synth.deeplesion import write_cohort
from clearbench.scans.windows import WINDOWS, apply_window
from clearbench.store import EmbeddingStore

runner = CliRunner()
PLUGIN_FAMILY = "example-tinyconv"


def test_a_plugin_family_pretrains_exports_and_embeds(tmp_path: Path) -> None:
    from clearbench_example_plugin.encoders import build_tinyconv

    root = write_cohort(tmp_path / "dl", 4, seed=0, size=64)  # 80 slices: 5 steps of 16
    args = ["pretrain", "--arch", PLUGIN_FAMILY, "--variant", "micro", "--root", str(root), "--epochs", "1"]
    args += ["--batch-size", "16", "--image-size", "64", "--proj-dim", "32", "--mlp-dim", "64", "--workers", "0"]
    result = runner.invoke(app, [*args, "--warmup-epochs", "0", "--lr", "0.5", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["finished"] and out["steps"] == 5 and out["card"] == "example-tinyconv-moco-deeplesion"

    card = get_card(out["card"])
    assert card.family == PLUGIN_FAMILY and card.params == {"width": 8} and card.dim == 8
    assert card.preprocessing["size"] == 64 and "TinyConv-MoCo" in card.description and card.paper_name is None
    weights = torch.load(out["weights"], weights_only=True)
    assert set(weights) == {"conv.weight", "conv.bias"}  # the family's own layout, no projector or predictor
    torch.manual_seed(0)  # the run's seed: what the backbone started from
    initial = build_tinyconv(8).state_dict()
    assert not torch.equal(weights["conv.weight"], initial["conv.weight"])  # training moved the weights

    trained = build_tinyconv(8)
    trained.load_state_dict(weights)
    trained.eval()
    scan = next(open_dataset("deeplesion", root).scans())
    slices = torch.from_numpy(apply_window(scan.hu[scan.key_slices[:1]], WINDOWS["abdomen"]))
    encoder = load_encoder(out["card"])
    with torch.no_grad():
        expected = trained(encoder.preprocess(slices))
    assert torch.equal(encoder.encode(slices), expected)

    embed = ["embed", "--encoder", out["card"], "--dataset", "deeplesion", "--root", str(root), "--limit", "1"]
    embedded = runner.invoke(app, [*embed, "--json"])
    assert embedded.exit_code == 0, embedded.output
    bags = EmbeddingStore().bags("deeplesion", out["card"])
    rows = bags.rows(scan.scan_id)
    assert bags.scan_ids == [scan.scan_id] and bags.dim == 8
    abdomen = bags.window[rows] == bags.window_names.index("abdomen")
    row = rows.start + int(np.flatnonzero(abdomen & (bags.slice_idx[rows] == scan.key_slices[0]))[0])
    np.testing.assert_allclose(bags.vectors[row], expected[0].numpy(), rtol=2e-3, atol=2e-3)


def test_an_unknown_architecture_lists_every_pretrainable_family_plugins_included(tmp_path: Path) -> None:
    assert pretrainable_families() == ["mambaout", "vmamba", "vit-convb", PLUGIN_FAMILY]
    result = runner.invoke(app, ["pretrain", "--arch", "resnet", "--root", str(tmp_path)])
    assert isinstance(result.exception, ClearbenchError) and result.exit_code == 1
    message = str(result.exception)
    assert "\n" not in message and "'resnet'" in message
    assert "choose one of mambaout, vmamba, vit-convb, example-tinyconv" in message
    # A family that can embed but declares no pretraining (hu-hist learns nothing) is refused the same way.
    with pytest.raises(ClearbenchError, match="unknown architecture 'hu-hist' for pretraining"):
        build_backbone("hu-hist", None, 64)


def test_an_unknown_variant_lists_the_family_sizes() -> None:
    with pytest.raises(ClearbenchError, match="unknown example-tinyconv variant 'huge'; choose one of micro, base"):
        build_backbone(PLUGIN_FAMILY, "huge", 64)
    with pytest.raises(ClearbenchError, match="multiple of 16, got 72"):
        build_backbone("vit-convb", "micro", 72)
    assert build_backbone("vit-convb", "micro", 64).params["img_size"] == 64  # the position embedding's size


def test_mambaout_sizes_are_one_table_for_cards_and_pretraining() -> None:
    family = get_family("mambaout")
    assert isinstance(family, MambaOutFamily)
    assert list(family.pretrain_variants) == list(VARIANTS)
    for name, (depths, dims) in VARIANTS.items():
        backbone = build_backbone("mambaout", name, 64) if name in ("micro", "nano") else None
        assert family.pretrain_params(name, 224) == (name, {"depths": list(depths), "dims": list(dims)})
        if backbone is not None:  # a card naming the variant builds what pretraining trained
            card_module = family.build(family.resolve_params({"variant": name}))
            assert card_module.state_dict().keys() == backbone.module.state_dict().keys()
            assert backbone.dim == dims[-1] == family.output_dim({"variant": name})
    assert family.pretrain_params(None, 224)[0] == "base"  # CLEAR's 768-d MambaOut
