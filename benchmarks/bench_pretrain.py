"""Pretraining step time against a bare forward and backward pass of both encoders (target: a ratio of at most 1.2).

For each architecture, on the same batch of two views ``B x 3 x S x S`` (one process, this device):

- **bare**: the online network (backbone + projector + predictor) forward on view 1 and on view 2 (one call,
  as DDP sees it), the momentum encoder (backbone + projector) forward on both views under ``no_grad``,
  ``backward()`` of ``q1.sum() + q2.sum()``, and clearing the gradients. Nothing else: no normalisation,
  no momentum update, no contrastive loss, no optimizer step, no schedule, no logging.
- **step**: :func:`clearbench.pretraining.run.training_step` on the same views as a loader batch
  (``B x 1 x S x S`` grey): normalisation and channel replication on the device, learning-rate update,
  EMA of the momentum encoder, keys, the symmetric LECL loss (λ = 1, 10 % lesion slices), backward, the
  fused AdamW step, and the loss read back for logging.

Both are timed interleaved (bare, step, bare, step ...) so that load on a shared machine hits both alike;
the medians are compared. ``--loop`` also runs a short real ``clearbench pretrain`` on a synthetic DeepLesion
cohort (loader workers, augmentations, progress, checkpoints) and compares its median images/s with the
bare pass's; on a CPU the loader's workers compete with the model for the same cores, so that figure only
means something on a GPU machine.

    .venv/bin/python benchmarks/bench_pretrain.py                       # micro configs, 64 px, CPU
    .venv/bin/python benchmarks/bench_pretrain.py --variant femto --arch mambaout --image-size 224 --batch 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from clearbench.pretraining.backbones import build_backbone
from clearbench.pretraining.moco import MoCo
from clearbench.pretraining.run import normalisation, training_step
from clearbench.runtime import DistContext


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(arch: str, variant: str, size: int, batch: int, repeats: int, device: torch.device) -> tuple[float, float]:
    torch.manual_seed(0)
    backbone = build_backbone(arch, variant, size)
    moco = MoCo(backbone.module, backbone.dim, proj_dim=256, mlp_dim=1024).to(device).train()
    optimizer = torch.optim.AdamW(
        [p for p in moco.online.parameters() if p.requires_grad],
        lr=1e-4,
        weight_decay=0.1,
        fused=device.type in ("cpu", "cuda"),
    )
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    ctx = DistContext(0, 1, 0, device)
    mean, std = normalisation(backbone, device)
    grey = torch.rand(2, batch, 1, size, size, device=device)
    lesion = torch.arange(batch, device=device) % 10 == 0
    loader_batch = {"view1": grey[0], "view2": grey[1], "lesion": lesion}
    x1 = ((grey[0].expand(-1, 3, -1, -1) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)).contiguous()
    x2 = ((grey[1].expand(-1, 3, -1, -1) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)).contiguous()

    def bare() -> None:
        q1, q2 = moco.online(x1, x2)
        with torch.no_grad():
            moco.momentum(x1), moco.momentum(x2)
        (q1.sum() + q2.sum()).backward()
        moco.online.zero_grad(set_to_none=True)

    def step() -> None:
        training_step(
            moco,
            moco.online,
            optimizer,
            scaler,
            loader_batch,
            lr=1e-4,
            momentum=0.99,
            lam=1.0,
            dtype=None,
            mean=mean,
            std=std,
            ctx=ctx,
        )

    times: dict[str, list[float]] = {"bare": [], "step": []}
    for i in range(repeats + 3):
        for name, fn in (("bare", bare), ("step", step)):
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            if i >= 3:  # warm-up
                times[name].append(time.perf_counter() - t)
    return statistics.median(times["bare"]), statistics.median(times["step"])


def loop_images_per_s(arch: str, variant: str, size: int, batch: int, workers: int) -> float:
    """Median images/s of a real short run (after its first 3 steps), from its metrics file."""
    from clearbench.pretraining.run import pretrain
    from clearbench.scans.synth.deeplesion import write_cohort

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CLEARBENCH_HOME"] = str(Path(tmp) / "home")
        root = write_cohort(Path(tmp) / "dl", 8, seed=0, size=max(size, 32))
        result = pretrain(
            arch,
            "lecl",
            "deeplesion",
            root=root,
            variant=variant,
            image_size=size,
            batch_size=batch,
            epochs=1,
            warmup_epochs=0,
            lam=1.0,
            proj_dim=256,
            mlp_dim=1024,
            workers=workers,
            progress=False,
        )
        lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
        times = [json.loads(line)["images_per_s"] for line in lines][3:]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["mambaout", "vmamba", "vit-convb"])
    parser.add_argument("--variant", default="micro")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--loop", action="store_true", help="also time a real short run with its data loader")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, variant {args.variant}, "
        f"{args.image_size} px, batch {args.batch} (two views each), median of {args.repeats}"
    )
    print(f"{'arch':<10} {'bare ms':>9} {'step ms':>9} {'step/bare':>10}" + ("  loop/bare" if args.loop else ""))
    for arch in args.arch:
        bare, step = measure(arch, args.variant, args.image_size, args.batch, args.repeats, device)
        line = f"{arch:<10} {bare * 1e3:>9.1f} {step * 1e3:>9.1f} {step / bare:>10.3f}"
        if args.loop:
            ips = loop_images_per_s(arch, args.variant, args.image_size, args.batch, args.workers)
            line += f"  {(args.batch / bare) / ips:>9.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
