"""Two gloo processes under torchrun: the replicas stay identical and the loss falls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clearbench.pretraining.backbones import build_backbone
from clearbench.pretraining.checkpoint import CHECKPOINT
from clearbench.pretraining.distributed import fingerprint
from clearbench.pretraining.moco import MoCo
from clearbench.scans.synth.deeplesion import write_cohort


@pytest.mark.slow
def test_two_process_gloo_run_keeps_replicas_identical_and_loss_falls(tmp_path: Path) -> None:
    root = write_cohort(tmp_path / "dl", 4, seed=0, size=64)  # 80 slices
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "clearbench",
        "pretrain",
        "--arch",
        "vit-convb",
        "--variant",
        "micro",
        "--method",
        "moco",
        "--root",
        str(root),
        "--epochs",
        "4",
        "--batch-size",
        "16",
        "--image-size",
        "64",
        "--lr",
        "0.5",
        "--warmup-epochs",
        "0",
        "--crop-min",
        "0.5",
        "--proj-dim",
        "32",
        "--mlp-dim",
        "64",
        "--workers",
        "0",
        "--out",
        str(out),
        "--json",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])  # rank 0 alone prints
    assert result["finished"] and result["steps"] == 20  # 80 slices // 16 = 5 steps per epoch

    ckpt = torch.load(out / CHECKPOINT, weights_only=True)
    assert ckpt["world"] == 2 and len(ckpt["rng"]) == 2
    prints = ckpt["replica_fingerprints"]
    assert len(prints) == 2 and prints[0] == prints[1]
    # The fingerprint both ranks reported is that of the weights rank 0 saved.
    torch.manual_seed(0)
    moco = MoCo(build_backbone("vit-convb", "micro", 64).module, 64, 32, 64)
    moco.online.load_state_dict(ckpt["online"])
    moco.momentum.load_state_dict(ckpt["momentum"])
    assert fingerprint(moco.online, moco.momentum) == prints[0]

    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1
