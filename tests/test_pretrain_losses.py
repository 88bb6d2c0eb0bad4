"""InfoNCE and the LECL loss against hand computations; the EMA update; schedules; the MoCo v3 heads."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clearbench.pretraining.lecl import lecl_info_nce
from clearbench.pretraining.losses import gather_no_grad, info_nce
from clearbench.pretraining.moco import MoCo, ema_update_, lr_at, mlp_head, momentum_at

E = math.exp


def nll(pos: float, denominator: float) -> float:
    return -math.log(E(pos) / denominator)


# Unit vectors with easy cosines: q0 = (1, 0), q1 = (0, 1); keys k0 = (1, 0), k1 = (0.6, 0.8), k2 = (0, -1).
Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
K = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]])
TAU = 0.5
# cos / tau:      k0    k1    k2
#   q0          2.0   1.2   0.0
#   q1          0.0   1.6  -2.0


def test_info_nce_equals_hand_computation() -> None:
    # Two keys only (a world of one): the positive of q_i is k_i.
    row0 = nll(2.0, E(2.0) + E(1.2))
    row1 = nll(1.6, E(0.0) + E(1.6))
    expected = (row0 + row1) / 2 * (2 * TAU)  # MoCo v3 scales the cross-entropy by 2 tau
    assert info_nce(Q, K[:2], TAU).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_is_scale_invariant_and_uses_the_rank_offset() -> None:
    # Rank 1 of a world of 3 with one query each: the positive of its q is key 1 (offset = rank * N).
    q = torch.tensor([[0.0, 5.0]])  # unnormalised on purpose: the loss normalises
    expected = nll(1.6, E(0.0) + E(1.6) + E(-2.0)) * (2 * TAU)
    assert info_nce(q, K * 3.0, TAU, offset=1).item() == pytest.approx(expected, rel=1e-6)


def test_lecl_with_lambda_adds_lesion_keys_except_the_own_positive() -> None:
    lam = 2.0
    lesion = torch.tensor([True, False, True])  # keys 0 and 2 are of lesion slices
    # q0's positive is k0, itself a lesion key: Eq. 4's sum runs over the other lesion key (k2) only.
    row0 = nll(2.0, E(2.0) + E(1.2) + E(0.0) + lam * E(0.0))
    # q1's positive k1 is not a lesion key: both lesion keys are added, weighted by lambda.
    row1 = nll(1.6, E(0.0) + E(1.6) + E(-2.0) + lam * (E(0.0) + E(-2.0)))
    expected = (row0 + row1) / 2 * (2 * TAU)
    assert lecl_info_nce(Q, K, TAU, lesion, lam).item() == pytest.approx(expected, rel=1e-6)


def test_lecl_with_offset_on_another_rank() -> None:
    lam = 1.0
    lesion = torch.tensor([True, True, False])
    q = torch.tensor([[0.0, 1.0]])  # rank 1 of 3: positive is k1 (a lesion key, excluded from the sum)
    expected = nll(1.6, E(0.0) + E(1.6) + E(-2.0) + lam * E(0.0)) * (2 * TAU)
    assert lecl_info_nce(q, K, TAU, lesion, lam, offset=1).item() == pytest.approx(expected, rel=1e-6)


def test_lecl_without_lesions_or_with_lambda_zero_is_infonce() -> None:
    plain = nll(2.0, E(2.0) + E(1.2) + E(0.0)) + nll(1.6, E(0.0) + E(1.6) + E(-2.0))
    plain = plain / 2 * (2 * TAU)
    no_lesion = torch.zeros(3, dtype=torch.bool)
    assert lecl_info_nce(Q, K, TAU, no_lesion, 3.0).item() == pytest.approx(plain, rel=1e-6)
    assert lecl_info_nce(Q, K, TAU, torch.tensor([True, True, True]), 0.0).item() == pytest.approx(plain, rel=1e-6)
    with pytest.raises(ValueError):
        lecl_info_nce(Q, K, TAU, no_lesion, -1.0)


def test_symmetric_moco_loss_and_gradients_flow_to_queries_only() -> None:
    torch.manual_seed(0)
    moco = MoCo(nn.Linear(6, 4), feat_dim=4, proj_dim=3, mlp_dim=8, tau=TAU)
    q1, q2 = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    k1, k2 = torch.randn(5, 3), torch.randn(5, 3)
    lesion = torch.tensor([True, False, False, True, False])
    loss = moco.loss(q1, q2, k1, k2, lesion, lam=1.0)
    mask = lesion.clone()
    expected = lecl_info_nce(q1, k2, TAU, mask, 1.0) + lecl_info_nce(q2, k1, TAU, mask, 1.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert moco.loss(q1, q2, k1, k2).item() == pytest.approx(
        (info_nce(q1, k2, TAU) + info_nce(q2, k1, TAU)).item(), rel=1e-6
    )
    loss.backward()
    assert q1.grad is not None and q1.grad.abs().sum() > 0
    assert not gather_no_grad(q1).requires_grad  # a world of one: the gathered keys are detached


def test_ema_update_matches_the_formula_and_leaves_buffers() -> None:
    torch.manual_seed(1)
    source = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    target = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    target[1].running_mean.fill_(7.0)
    before = [p.detach().clone() for p in target.parameters()]
    ema_update_(target, source, 0.9)
    for old, new, src in zip(before, target.parameters(), source.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * src, rtol=0, atol=1e-6)
    assert torch.all(target[1].running_mean == 7.0)


def test_moco_momentum_update_and_initial_copy() -> None:
    torch.manual_seed(2)
    moco = MoCo(nn.Linear(6, 4), feat_dim=4, proj_dim=3, mlp_dim=8)
    for p_m, p_o in zip(moco.momentum.parameters(), moco.online.encoder.parameters(), strict=True):
        assert torch.equal(p_m, p_o) and not p_m.requires_grad
    with torch.no_grad():
        for p in moco.online.encoder.parameters():
            p.add_(1.0)
    moco.update_momentum(0.75)
    for p_m, p_o in zip(moco.momentum.parameters(), moco.online.encoder.parameters(), strict=True):
        torch.testing.assert_close(p_m, p_o - 0.75, rtol=0, atol=1e-6)  # 0.75 p + 0.25 (p + 1)


def test_schedules() -> None:
    assert momentum_at(0, 100) == pytest.approx(0.99)
    assert momentum_at(50, 100) == pytest.approx(0.995)
    assert momentum_at(100, 100) == pytest.approx(1.0)
    assert lr_at(0, 100, 1.0, 10) == 0.0
    assert lr_at(5, 100, 1.0, 10) == pytest.approx(0.5)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 10) == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.0, abs=1e-12)


def test_mlp_heads_follow_moco_v3() -> None:
    head = mlp_head(3, 16, 32, 8)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert all(m.bias is None for m in head if isinstance(m, nn.Linear))
    assert head[-1].weight is None and head[1].weight is not None  # last BN without affine
    moco = MoCo(nn.Linear(6, 4), feat_dim=4, proj_dim=3, mlp_dim=8)
    assert len([m for m in moco.online.predictor if isinstance(m, nn.Linear)]) == 2
    assert not any(p.requires_grad for p in moco.momentum.parameters())
