"""ABMIL and MLP heads: the paper's layers, and padding that never changes a bag's output."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clearbench.mil.data import BagSet, make_batch
from clearbench.mil.heads import ABMIL, MLPHead, build_head


@pytest.mark.parametrize("gated", [False, True])
def test_masked_abmil_same_output_with_and_without_padding(gated: bool) -> None:
    torch.manual_seed(0)
    head = ABMIL(in_dim=12, n_out=3, gated=gated).eval()
    bags = [torch.randn(k, 12) for k in (1, 5, 17)]
    k_max = 40
    x = torch.full((len(bags), k_max, 12), 1e4)  # padding with large garbage, not zeros
    mask = torch.zeros(len(bags), k_max, dtype=torch.bool)
    for i, b in enumerate(bags):
        x[i, : len(b)] = b
        mask[i, : len(b)] = True
    logits, att = head(x, mask)
    for i, b in enumerate(bags):
        alone, alone_att = head(b.unsqueeze(0))
        torch.testing.assert_close(logits[i], alone[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(att[i, : len(b)], alone_att[0], rtol=1e-5, atol=1e-6)
        assert torch.all(att[i, len(b) :] == 0)
        assert att[i].sum().item() == pytest.approx(1.0, abs=1e-6)


def test_unmasked_padding_would_change_the_output() -> None:
    """The control: without the mask, padded rows do take attention (the flaw of STAMP and TRIDENT)."""
    torch.manual_seed(0)
    head = ABMIL(in_dim=8, n_out=2).eval()
    bag = torch.randn(4, 8)
    padded = torch.cat([bag, torch.zeros(6, 8)]).unsqueeze(0)
    assert not torch.allclose(head(padded)[0], head(bag.unsqueeze(0))[0])


def test_all_padding_row_is_finite_and_gets_no_attention() -> None:
    head = ABMIL(in_dim=6, n_out=2).eval()
    x = torch.randn(2, 5, 6)
    mask = torch.tensor([[True, True, False, False, False], [False] * 5])
    logits, att = head(x, mask)
    assert torch.isfinite(logits).all()
    assert torch.all(att[1] == 0)
    loss = logits.sum()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


def test_padded_and_packed_batches_match_each_bag_alone() -> None:
    """The same invariance through the batch builder used in training, in both layouts."""
    torch.manual_seed(1)
    lengths = [3, 9, 1, 6]
    feats = torch.randn(sum(lengths), 10)
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    bags = BagSet([f"s{i}" for i in range(4)], [f"p{i}" for i in range(4)], feats, offsets, torch.zeros(4, 2))
    batch = make_batch(bags, torch.tensor([2, 0, 3, 1]), padded=True)
    packed = make_batch(bags, torch.tensor([2, 0, 3, 1]))
    assert batch.x.shape == (4, 9, 10) and packed.x.shape == (19, 10)
    assert batch.mask.sum(1).tolist() == [1, 3, 6, 9] and torch.equal(packed.mask, batch.mask)
    assert torch.all(batch.x[~batch.mask] == 0)
    torch.testing.assert_close(packed.x, batch.x[batch.mask])
    for head in (ABMIL(10, 2, gated=True).eval(), MLPHead(10, 2).eval()):
        logits, _ = head(batch.x, batch.mask)
        logits_packed, _ = head(packed.x, packed.mask)
        torch.testing.assert_close(logits_packed, logits, rtol=1e-5, atol=1e-6)
        for row, i in enumerate([2, 0, 3, 1]):
            alone, _ = head(feats[offsets[i] : offsets[i + 1]].unsqueeze(0))
            torch.testing.assert_close(logits[row], alone[0], rtol=1e-5, atol=1e-6)


def test_abmil_layers_follow_the_design() -> None:
    head = ABMIL(in_dim=768, n_out=8)
    enc = list(head.encoder)
    assert isinstance(enc[0], nn.Linear) and (enc[0].in_features, enc[0].out_features) == (768, 256)
    assert isinstance(enc[1], nn.ReLU)
    cls = list(head.classifier)
    assert [type(m) for m in cls] == [nn.LayerNorm, nn.Linear, nn.Dropout, nn.SiLU, nn.Linear]
    assert (cls[1].in_features, cls[1].out_features) == (256, 256)
    assert cls[4].out_features == 8
    assert head.attention.score.out_features == 1
    assert ABMIL(16, 2, gated=True).attention.proj.out_features == 2 * 256


def test_mlp_head_layers_and_shapes() -> None:
    head = MLPHead(in_dim=512, n_out=2)
    assert [type(m) for m in head.classifier] == [nn.LayerNorm, nn.Linear, nn.Dropout, nn.SiLU, nn.Linear]
    logits, att = head(torch.randn(5, 1, 512))
    assert logits.shape == (5, 2) and att is None


def test_build_head_by_name() -> None:
    assert isinstance(build_head("abmil", 4, 2, gated=True), ABMIL)
    assert isinstance(build_head("mlp", 4, 2), MLPHead)
    with pytest.raises(ValueError, match="unknown head"):
        build_head("transmil", 4, 2)  # type: ignore[arg-type]
