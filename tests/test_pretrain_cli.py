"""`clearbench pretrain` end to end on a synthetic DeepLesion cohort: every architecture and method, the
card round trip into the encoder registry, and resuming from a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from clearbench.cli import app
from clearbench.config import home
from clearbench.encoders.registry import get_card, load_encoder
from clearbench.encoders.weights import file_sha256
from clearbench.errors import ClearbenchError
from clearbench.pretraining.backbones import build_backbone
from clearbench.pretraining.checkpoint import CHECKPOINT
from clearbench.pretraining.config import PretrainConfig
from clearbench.pretraining.export import PROVENANCE
from clearbench.pretraining.run import SLICES
from clearbench.protocols.test_patients import task_test_patients
from clearbench.scans.registry import open_dataset
from clearbench.scans.synth.deeplesion import write_cohort
from clearbench.scans.windows import WINDOWS, apply_window
from clearbench.store import EmbeddingStore

runner = CliRunner()
# Micro backbones at 64 px with small heads, so a run takes seconds on a CPU.
MICRO = [
    "--variant",
    "micro",
    "--image-size",
    "64",
    "--proj-dim",
    "32",
    "--mlp-dim",
    "64",
    "--workers",
    "0",
    "--warmup-epochs",
    "0",
    "--lr",
    "0.5",
    "--no-progress",
]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four DeepLesion series, 80 slices, one lesion key slice each."""
    return write_cohort(tmp_path_factory.mktemp("deeplesion"), 4, seed=0, size=64)


def pretrain(*args: str, exit_code: int = 0) -> dict:
    result = runner.invoke(app, ["pretrain", *args, *MICRO, "--json"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == exit_code, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mambaout", "vmamba", "vit-convb"])
@pytest.mark.parametrize("method", ["moco", "lecl"])
def test_every_architecture_pretrains_with_both_methods(cohort: Path, arch: str, method: str) -> None:
    lam = ["--lam", "1"] if method == "lecl" else []
    out = pretrain(
        "--arch", arch, "--method", method, *lam, "--root", str(cohort), "--epochs", "1", "--batch-size", "32"
    )
    name = f"{arch}-{'lecl1' if method == 'lecl' else 'moco'}-deeplesion"
    assert out["finished"] and out["steps"] == 2 and out["card"] == name
    assert all(np.isfinite(m["loss"]) for m in metrics(Path(out["run_dir"])))
    lesions = sum(m["lesion_slices"] for m in metrics(Path(out["run_dir"])))
    assert (lesions > 0) == (method == "lecl")  # only LECL gives lesion slices their lesion-centred crop
    encoder = load_encoder(name)
    slices = torch.rand(3, 64, 64)
    vectors = encoder.encode(slices)
    assert vectors.shape == (3, encoder.dim) and torch.isfinite(vectors).all()
    assert encoder.provenance["weights_sha256"] == file_sha256(Path(out["weights"]))


def test_checkpoint_card_embed_round_trip(cohort: Path) -> None:
    out = pretrain(
        "--arch",
        "vit-convb",
        "--method",
        "lecl",
        "--root",
        str(cohort),
        "--epochs",
        "1",
        "--batch-size",
        "40",
        "--tag",
        "roundtrip",
        "--cache",
        "stream",
    )
    card = get_card("vit-convb-lecl0-roundtrip")
    assert card.source == "user" and card.path == home() / "encoders" / "vit-convb-lecl0-roundtrip.toml"
    assert card.weights.sha256 == file_sha256(Path(out["weights"])) and card.dim == 64
    # a backbone trained here follows the paper's ViT-LECL-0 recipe but is not the paper's row
    assert card.preprocessing["size"] == 64 and card.paper_name is None and "ViT-LECL-0" in card.description
    assert "lambda=0" in card.description and "seed 0" in card.description
    provenance = json.loads((Path(out["run_dir"]) / "pretrain.json").read_text())
    assert provenance["method"] == "lecl" and provenance["lambda"] == 0 and provenance["dataset"] == "deeplesion"
    assert len(provenance["epoch_losses"]) == 1 and (Path(out["run_dir"]) / "slices.json").is_file()  # streamed

    # The trained backbone, straight from the training checkpoint (conv-stem BN statistics included).
    ckpt = torch.load(Path(out["run_dir"]) / CHECKPOINT, weights_only=True)
    prefix = "encoder.backbone."
    trained = build_backbone("vit-convb", "micro", 64).module
    trained.load_state_dict({k[len(prefix) :]: v for k, v in ckpt["online"].items() if k.startswith(prefix)})
    trained.eval()
    scan = next(open_dataset("deeplesion", cohort).scans())
    slices = torch.from_numpy(apply_window(scan.hu[scan.key_slices[:1]], WINDOWS["abdomen"]))
    encoder = load_encoder("vit-convb-lecl0-roundtrip")
    with torch.no_grad():
        expected = trained(encoder.preprocess(slices))
    assert torch.equal(encoder.encode(slices), expected)

    # `clearbench embed` takes the new card at once; the stored vector (float16) is the trained backbone's.
    embedded = runner.invoke(
        app,
        [
            "embed",
            "--encoder",
            "vit-convb-lecl0-roundtrip",
            "--dataset",
            "deeplesion",
            "--root",
            str(cohort),
            "--limit",
            "1",
            "--json",
        ],
    )
    assert embedded.exit_code == 0, embedded.output
    bags = EmbeddingStore().bags("deeplesion", "vit-convb-lecl0-roundtrip")
    assert bags.scan_ids == [scan.scan_id] and bags.dim == 64
    row = bags.rows(scan.scan_id).start + int(
        np.flatnonzero(
            (bags.window[bags.rows(scan.scan_id)] == bags.window_names.index("abdomen"))
            & (bags.slice_idx[bags.rows(scan.scan_id)] == scan.key_slices[0])
        )[0]
    )
    np.testing.assert_allclose(bags.vectors[row], expected[0].numpy(), rtol=2e-3, atol=2e-3)


def test_resumed_run_continues_from_its_step_and_matches_an_uninterrupted_run(cohort: Path, tmp_path: Path) -> None:
    args = [
        "--arch",
        "mambaout",
        "--method",
        "lecl",
        "--lam",
        "1",
        "--root",
        str(cohort),
        "--epochs",
        "2",
        "--batch-size",
        "16",
    ]
    first = pretrain(*args, "--tag", "resumed", "--stop-after", "3", "--checkpoint-every", "2")  # mid epoch 0
    assert not first["finished"] and first["steps"] == 3 and first["card_path"] is None
    assert not get_card_exists("mambaout-lecl1-resumed")
    second = pretrain(*args, "--tag", "resumed")
    assert second["finished"] and second["steps"] == 10
    steps = [m["step"] for m in metrics(Path(second["run_dir"]))]
    assert steps == list(range(1, 11))  # no step twice, none missing
    straight = pretrain(*args, "--tag", "straight")
    resumed_w = torch.load(second["weights"], weights_only=True)
    straight_w = torch.load(straight["weights"], weights_only=True)
    assert resumed_w.keys() == straight_w.keys()
    assert all(torch.equal(resumed_w[k], straight_w[k]) for k in resumed_w)
    losses = [m["loss"] for m in metrics(Path(second["run_dir"]))]
    assert losses == [m["loss"] for m in metrics(Path(straight["run_dir"]))]


def get_card_exists(name: str) -> bool:
    try:
        get_card(name)
    except ClearbenchError:
        return False
    return True


def test_bad_settings_are_one_line_errors(cohort: Path) -> None:
    import clearbench
    import clearbench.pretraining.run

    with pytest.raises(ClearbenchError, match="choose one of mambaout, vmamba, vit-convb"):
        clearbench.pretrain("resnet", root=cohort)
    result = runner.invoke(
        app, ["pretrain", "--arch", "mambaout", "--method", "moco", "--lam", "1", "--root", str(cohort)]
    )
    assert isinstance(result.exception, ClearbenchError) and "--lam applies to --method lecl" in str(result.exception)
    result = runner.invoke(app, ["pretrain", "--arch", "resnet", "--root", str(cohort)])
    assert isinstance(result.exception, ClearbenchError) and "mambaout, vmamba, vit-convb" in str(result.exception)
    result = runner.invoke(
        app, ["pretrain", "--arch", "mambaout", "--root", str(cohort), "--batch-size", "4096", *MICRO]
    )
    assert isinstance(result.exception, ClearbenchError) and "fewer than one batch" in str(result.exception)


def test_streamed_run_reports_an_unreadable_slice_once(cohort: Path, tmp_path: Path) -> None:
    # Streaming decodes every scan again in each pass over the cohort; the index pass has reported the bad
    # slice already, so the stream must not report it again.
    import shutil

    root = tmp_path / "dl"
    shutil.copytree(cohort, root)
    png = sorted((root / "Images_png").glob("*/*.png"))[3]
    png.write_bytes(png.read_bytes()[:100])
    out = pretrain(
        "--arch",
        "vit-convb",
        "--method",
        "moco",
        "--root",
        str(root),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--cache",
        "stream",
        "--tag",
        "badslice",
        exit_code=3,
    )
    assert out["finished"] and out["skipped_scans"] == 1


def test_exclude_test_of_leaves_the_task_test_patients_out_of_pretraining(tmp_path: Path) -> None:
    """Exactly the test patients of task 1's stored split are left out: the split every run of task 1 reads."""
    root = write_cohort(tmp_path / "dl", 16, seed=1, size=32)
    reader = open_dataset("deeplesion", root)
    store = tmp_path / "store"
    shown = runner.invoke(app, ["splits", "task1", "--root", str(root), "--store", str(store), "--json"])
    assert shown.exit_code == 0, shown.output
    split = json.loads(shown.stdout)
    held_out = set(split["test_patients"])
    assert held_out == task_test_patients("task1", reader.records(), reader.label_names, store=store)
    assert held_out and len(held_out) < len({r.patient_id for r in reader.records()})
    kept = [r for r in reader.records() if r.patient_id not in held_out]
    out = pretrain(
        "--arch",
        "mambaout",
        "--root",
        str(root),
        "--exclude-test-of",
        "task1",
        "--store",
        str(store),
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--cache",
        "stream",
        "--out",
        str(tmp_path / "run"),
        "--paper-name",
        "My-LECL-0",
    )
    assert out["finished"]
    record = json.loads((tmp_path / "run" / PROVENANCE).read_text())
    assert record["excluded_test_patients"] == {"task1": len(held_out)}
    assert record["excluded_test_splits"] == {"task1": split["split_id"]}
    assert record["scans"] == len(kept) < len(reader.records())
    used = json.loads((tmp_path / "run" / SLICES).read_text())["scan_ids"]
    assert sorted(used) == sorted(r.scan_id for r in kept)
    assert get_card(out["card"]).paper_name == "My-LECL-0"  # the user's explicit choice only


def test_exclude_test_of_refuses_a_task_of_another_dataset(cohort: Path) -> None:
    result = runner.invoke(
        app, ["pretrain", "--arch", "mambaout", "--root", str(cohort), "--exclude-test-of", "task2", *MICRO]
    )
    assert isinstance(result.exception, ClearbenchError)
    assert "task task2 is on dataset 'radchest', not 'deeplesion'" in str(result.exception)


def test_default_warmup_is_a_tenth_of_the_epochs_at_most_ten() -> None:
    assert PretrainConfig("mambaout", epochs=2).warmup_epochs == pytest.approx(0.2)
    assert PretrainConfig("mambaout", epochs=100).warmup_epochs == 10.0
    assert PretrainConfig("mambaout", epochs=300).warmup_epochs == 10.0
    with pytest.raises(ClearbenchError, match="does not fit"):
        PretrainConfig("mambaout", epochs=2, warmup_epochs=5)
