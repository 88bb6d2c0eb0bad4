"""The training loop: it learns MIL problems, early-stops on validation, restores the best weights,
starts every fold fresh, and gives identical numbers for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from synthetic_mil import key_instance_bags

import clearbench.mil.train as train_mod
import clearbench.protocols.cv as cv_mod
from clearbench.mil.data import bucketed_batches, make_batch
from clearbench.mil.heads import build_head
from clearbench.mil.train import TrainConfig, fit, predict, seed_everything
from clearbench.protocols.cv import fold_seed, run_fold
from clearbench.protocols.splits import make_folds
from clearbench.tasks.card import HEAD_PARAMS, HeadSpec
from clearbench.tasks.spec import ProtocolSpec

ABMIL_SPEC = HeadSpec("abmil", dict(HEAD_PARAMS["abmil"], hidden=64, attention_dim=64))
FAST = TrainConfig(loss="bce", lr=1e-3, batch_size=32, max_epochs=25, patience=8)


def _folds(bags, kind="holdout+kfold", folds=3):
    return make_folds(ProtocolSpec(kind=kind, folds=folds, seed=0), bags.patient_ids, bags.targets.numpy())


def test_key_instance_problem_is_learned_and_attention_finds_the_key() -> None:
    bags, key = key_instance_bags(n_bags=240, seed=0)
    fold = _folds(bags)[0]
    result = run_fold(bags, fold, ABMIL_SPEC, FAST, ["label"], seed=0)
    test = result.test
    assert roc_auc_score(test.y_true[:, 0], test.prob[:, 0]) >= 0.95
    positives = [i for i, s in enumerate(fold.test) if key[s, 0] >= 0]
    hits = [int(np.argmax(test.attention_of(i))) == key[fold.test[i], 0] for i in positives]
    assert len(positives) >= 10 and np.mean(hits) >= 0.9


def test_binary_task_trains_two_logits_with_cross_entropy() -> None:
    bags, _ = key_instance_bags(n_bags=160, seed=3)
    fold = _folds(bags, "nested-kfold")[0]
    cfg = TrainConfig(loss="ce", lr=1e-3, batch_size=32, max_epochs=20)
    result = run_fold(bags, fold, ABMIL_SPEC, cfg, ["stage_high"], seed=0)
    assert result.train.model.classifier[-1].out_features == 2
    assert result.test.prob.shape == (len(fold.test), 1)
    assert result.test_scores.values["auc"]["stage_high"] >= 0.9


def test_early_stopping_listens_to_validation_loss_and_restores_the_best_weights(monkeypatch) -> None:
    bags, _ = key_instance_bags(n_bags=40, seed=1)
    train, val = bags.subset(range(30)), bags.subset(range(30, 40))
    scripted = iter([5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 9.0, 9.0, 9.0])
    monkeypatch.setattr(train_mod, "evaluate_loss", lambda model, bags, cfg: next(scripted))
    snapshots = {}
    holder = {}

    def make_model():
        holder["model"] = build_head("abmil", bags.dim, 1, hidden=16, attention_dim=16)
        return holder["model"]

    def on_epoch(info):
        snapshots[info.epoch] = {k: v.clone() for k, v in holder["model"].state_dict().items()}

    cfg = TrainConfig(lr=1e-2, batch_size=8, max_epochs=30, patience=3)
    result = fit(make_model, train, val, cfg, seed=0, on_epoch=on_epoch)
    # best at epoch 2 (loss 3.0); epochs 3, 4, 5 do not improve, so training stops after epoch 5
    assert result.best_epoch == 2 and result.epochs_run == 6
    final = result.model.state_dict()
    assert all(torch.equal(final[k], snapshots[2][k]) for k in final)
    assert not all(torch.equal(final[k], snapshots[5][k]) for k in final)


def test_every_fold_starts_from_fresh_parameters_and_a_fresh_optimizer(monkeypatch) -> None:
    bags, _ = key_instance_bags(n_bags=90, seed=2)
    folds = _folds(bags)
    built, optimizers = [], []
    real_build, real_adamw = cv_mod.build_head, torch.optim.AdamW

    def spy_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        built.append((model, {k: v.clone() for k, v in model.state_dict().items()}))
        return model

    def spy_adamw(params, **kwargs):
        opt = real_adamw(params, **kwargs)
        optimizers.append(opt)
        return opt

    monkeypatch.setattr(cv_mod, "build_head", spy_build)
    monkeypatch.setattr(train_mod.torch.optim, "AdamW", spy_adamw)
    cfg = TrainConfig(lr=1e-3, batch_size=16, max_epochs=3)
    results = [run_fold(bags, f, ABMIL_SPEC, cfg, ["label"], seed=0) for f in folds[:2]]
    assert len(built) == 2 and len(optimizers) == 2
    (m0, _), (m1, init1) = built
    assert m0 is not m1 and optimizers[0] is not optimizers[1]
    trained0 = results[0].train.model.state_dict()
    # fold 1 did not start where fold 0 ended ...
    assert not all(torch.equal(init1[k], trained0[k]) for k in init1)
    # ... but from a fresh initialisation with its own seed
    seed_everything(fold_seed(0, 1))
    fresh = build_head("abmil", bags.dim, 1, **ABMIL_SPEC.params).state_dict()
    assert all(torch.equal(init1[k], fresh[k]) for k in init1)
    # and its optimizer holds only fold 1's parameters
    ids = {id(p) for group in optimizers[1].param_groups for p in group["params"]}
    assert ids == {id(p) for p in m1.parameters()}


def test_test_data_never_reaches_early_stopping_or_threshold_choice(monkeypatch) -> None:
    bags, _ = key_instance_bags(n_bags=120, n_labels=2, seed=4)
    seen_loss, seen_thresholds, seen_fit = [], [], []
    real_eval, real_choose, real_fit = train_mod.evaluate_loss, cv_mod.choose_thresholds, cv_mod.fit

    def spy_eval(model, b, cfg):
        seen_loss.append(set(b.scan_ids))
        return real_eval(model, b, cfg)

    def spy_choose(preds):
        seen_thresholds.append(set(preds.scan_ids))
        return real_choose(preds)

    def spy_fit(make_model, train, val, cfg, seed, on_epoch=None):
        seen_fit.append((set(train.scan_ids), set(val.scan_ids)))
        return real_fit(make_model, train, val, cfg, seed, on_epoch)

    monkeypatch.setattr(train_mod, "evaluate_loss", spy_eval)
    monkeypatch.setattr(cv_mod, "choose_thresholds", spy_choose)
    monkeypatch.setattr(cv_mod, "fit", spy_fit)
    cfg = TrainConfig(lr=1e-3, batch_size=16, max_epochs=3)
    for kind in ("holdout+kfold", "nested-kfold"):
        for fold in _folds(bags, kind)[:2]:
            seen_loss.clear(), seen_thresholds.clear(), seen_fit.clear()
            run_fold(bags, fold, ABMIL_SPEC, cfg, ["a", "b"], seed=0)
            ids = np.asarray(bags.scan_ids)
            val, test = set(ids[fold.val]), set(ids[fold.test])
            assert seen_loss and all(s == val for s in seen_loss)
            assert seen_thresholds == [val]
            assert seen_fit == [(set(ids[fold.train]), val)]
            assert not any(s & test for s in seen_loss + seen_thresholds)


def test_same_seed_gives_identical_metrics_and_another_seed_does_not() -> None:
    bags, _ = key_instance_bags(n_bags=100, n_labels=2, seed=5)
    fold = _folds(bags)[1]
    cfg = TrainConfig(lr=1e-3, batch_size=16, max_epochs=4)
    a = run_fold(bags, fold, ABMIL_SPEC, cfg, ["a", "b"], seed=7)
    b = run_fold(bags, fold, ABMIL_SPEC, cfg, ["a", "b"], seed=7)
    c = run_fold(bags, fold, ABMIL_SPEC, cfg, ["a", "b"], seed=8)
    assert np.array_equal(a.test.prob, b.test.prob)
    assert np.array_equal(a.test.attention, b.test.attention)
    assert a.test_scores.values == b.test_scores.values
    assert a.train.val_loss == b.train.val_loss
    assert not np.array_equal(a.test.prob, c.test.prob)


def test_bucketed_batches_cover_every_bag_once_with_similar_lengths() -> None:
    bags, _ = key_instance_bags(n_bags=300, min_len=1, max_len=200, seed=6)
    batches = bucketed_batches(bags.lengths, 16, torch.Generator().manual_seed(0))
    order = torch.cat(batches)
    assert sorted(order.tolist()) == list(range(300))
    # padding is small: each batch's lengths are sorted within a chunk of 8 batches
    padded = sum(int(bags.lengths[b].max()) * len(b) for b in batches)
    assert padded < 1.25 * int(bags.lengths.sum())
    again = bucketed_batches(bags.lengths, 16, torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip(batches, again, strict=True))


def test_subset_and_batch_gather_the_right_instances() -> None:
    bags, _ = key_instance_bags(n_bags=12, seed=7)
    sub = bags.subset([5, 2, 9])
    assert sub.scan_ids == [bags.scan_ids[i] for i in (5, 2, 9)]
    for j, i in enumerate((5, 2, 9)):
        torch.testing.assert_close(
            sub.features[sub.offsets[j] : sub.offsets[j + 1]], bags.features[bags.offsets[i] : bags.offsets[i + 1]]
        )
    batch = make_batch(sub, torch.tensor([1, 0]), padded=True)
    n = int(sub.lengths[1])
    torch.testing.assert_close(batch.x[0, :n], bags.features[bags.offsets[2] : bags.offsets[3]])


def test_predict_aligns_attention_with_instance_rows() -> None:
    bags, _ = key_instance_bags(n_bags=20, seed=8)
    seed_everything(0)
    model = build_head("abmil", bags.dim, 1, hidden=16, attention_dim=16)
    preds = predict(model, bags, TrainConfig(batch_size=7))
    for i in range(len(bags)):
        alone_logits, alone_att = model.eval()(bags.features[bags.offsets[i] : bags.offsets[i + 1]].unsqueeze(0))
        torch.testing.assert_close(torch.from_numpy(preds.attention_of(i)), alone_att[0], rtol=1e-5, atol=1e-6)
        assert preds.prob[i, 0] == pytest.approx(torch.sigmoid(alone_logits[0, 0]).item(), abs=1e-6)


@pytest.mark.parametrize("loss, n_labels", [("bce", 8), ("ce", 1)])
def test_train_and_validation_losses_are_on_one_scale(loss: str, n_labels: int) -> None:
    """The stored curves compare train with validation loss; both are the mean over bags and labels.

    With lr 0 and no dropout the model never changes, so the first epoch's training loss on the same bags
    is the validation loss (a per-bag sum over 8 labels would read 8 times larger, like overfitting).
    """
    bags, _ = key_instance_bags(n_bags=40, n_labels=n_labels, seed=9)
    cfg = TrainConfig(loss=loss, lr=0.0, weight_decay=0.0, batch_size=8, max_epochs=1)  # type: ignore[arg-type]
    n_out = cfg.n_out(n_labels)
    result = fit(
        lambda: build_head("abmil", bags.dim, n_out, hidden=16, attention_dim=16, dropout=0.0), bags, bags, cfg, seed=0
    )
    assert result.val_loss[0] == pytest.approx(result.train_loss[0], rel=1e-5)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device: `clearbench run --device auto` picks it"
)
def test_a_fold_trains_and_predicts_on_cuda_from_bags_in_host_memory() -> None:
    """run_fold keeps the bags on the CPU and fit moves its copies to the GPU; predict must move its own."""
    bags, _ = key_instance_bags(n_bags=60, seed=10)
    fold = _folds(bags)[0]
    cfg = TrainConfig(lr=1e-3, batch_size=16, max_epochs=2, device="cuda")
    result = run_fold(bags, fold, ABMIL_SPEC, cfg, ["label"], seed=0)
    assert result.test.prob.shape == (len(fold.test), 1) and np.isfinite(result.test.prob).all()
    assert result.test.attention is not None and len(result.test.attention) == int(bags.lengths[fold.test].sum())
