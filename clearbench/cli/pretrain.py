"""``clearbench pretrain``: train a backbone with MoCo v3 or LECL and register it as an encoder card."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from clearbench.cli.common import command_problems, print_json_line, say


def pretrain(
    arch: str = typer.Option(..., "--arch", "-a", help="Backbone: mambaout, vmamba or vit-convb."),
    method: str = typer.Option("moco", "--method", "-m", help="moco (MoCo v3) or lecl (lesion-enhanced, paper Eq. 4)."),
    dataset: str = typer.Option(
        "deeplesion", "--dataset", "-d", help="Dataset to train on; LECL needs one with lesion boxes."
    ),
    lam: float = typer.Option(
        0.0, "--lam", min=0.0, help="LECL's lambda: weight of the lesion-slice keys in the denominator (0 = LECL-0)."
    ),
    root: Path | None = typer.Option(
        None, "--root", help="Dataset folder (default: the root in CLEARBENCH_HOME/config.toml)."
    ),
    variant: str | None = typer.Option(
        None,
        "--variant",
        "--size",
        help="Backbone size: mambaout femto|kobe|tiny|small|base, vmamba clear, vit-convb small|base; micro for smoke tests. Default: CLEAR's (768-d).",
    ),
    epochs: int = typer.Option(100, "--epochs", min=1, help="Epochs (the paper: 100)."),
    batch_size: int = typer.Option(
        256, "--batch-size", "-b", min=1, help="Global batch over all processes (the paper: 2048; 1024 for ViT)."
    ),
    lr: float = typer.Option(
        1e-4, "--lr", help="Learning rate per 256 images; AdamW runs at lr x batch-size / 256 (the paper: 1e-4)."
    ),
    warmup_epochs: float | None = typer.Option(
        None,
        "--warmup-epochs",
        min=0.0,
        help="Linear warmup, then cosine decay (default: a tenth of --epochs, at most 10; the paper: 10 of 100).",
    ),
    weight_decay: float = typer.Option(
        0.1, "--weight-decay", min=0.0, help="AdamW weight decay (MoCo v3's ViT recipe)."
    ),
    tau: float = typer.Option(0.2, "--tau", help="InfoNCE temperature (MoCo v3's ViT recipe)."),
    momentum: float = typer.Option(
        0.99, "--momentum", help="Initial EMA momentum of the key encoder; rises to 1 on a half cosine."
    ),
    proj_dim: int = typer.Option(256, "--proj-dim", min=1, help="Output dim of projector and predictor."),
    mlp_dim: int = typer.Option(4096, "--mlp-dim", min=1, help="Hidden dim of projector and predictor."),
    image_size: int = typer.Option(
        224, "--image-size", min=8, help="Side of the training views in pixels; the card embeds at this size."
    ),
    crop_min: float = typer.Option(0.08, "--crop-min", help="Smallest random crop, as a fraction of the slice area."),
    crop_max: float = typer.Option(1.0, "--crop-max", help="Largest random crop, as a fraction of the slice area."),
    lesion_crop_min: float = typer.Option(
        0.08, "--lesion-crop-min", help="Smallest lesion-centred crop (LECL), fraction of the slice area."
    ),
    lesion_crop_max: float = typer.Option(
        1.0, "--lesion-crop-max", help="Largest lesion-centred crop (LECL), fraction of the slice area."
    ),
    windows: list[str] = typer.Option(
        ["abdomen", "lung"],
        "--window",
        "-w",
        help="HU windows drawn at random per slice; repeat the option; name or name:lo:hi.",
    ),
    splits: list[str] = typer.Option(
        [], "--split", help="Use only scans of these splits (repeatable); e.g. keep a downstream test split out."
    ),
    exclude_test_of: list[str] = typer.Option(
        [],
        "--exclude-test-of",
        help="Leave out the test patients of this task's stored split, the one every clearbench run of it uses (repeatable; drawn and stored when absent), as the paper did for task1.",
    ),
    store: Path | None = typer.Option(
        None,
        "--store",
        help="The store holding the tasks' stored splits, for --exclude-test-of (default: CLEARBENCH_HOME/store).",
    ),
    paper_name: str | None = typer.Option(
        None,
        "--paper-name",
        help="Paper row name for the card (default: none; a backbone trained here is not the paper's).",
    ),
    tag: str | None = typer.Option(
        None, "--tag", help="Last part of the card name <arch>-<method>-<tag> (default: the dataset)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run folder (default: CLEARBENCH_HOME/pretrain/<card name>)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights, data order and augmentations."),
    workers: int | None = typer.Option(
        None,
        "--workers",
        "-j",
        min=0,
        help="Data loader worker processes per GPU/process (default: one per CPU core, at most 4).",
    ),
    device: str = typer.Option(
        "auto", "--device", help="auto (the GPU of this rank when there is one), cpu, cuda or cuda:N."
    ),
    precision: str = typer.Option(
        "auto", "--precision", help="auto (bf16 autocast on GPUs, fp32 on CPUs), fp32, bf16 or fp16."
    ),
    cache: str = typer.Option(
        "auto",
        "--cache",
        help="memory (decode all scans once, keep HU in RAM), stream (decode each scan once per epoch) or auto.",
    ),
    cache_gb: float = typer.Option(
        16.0, "--cache-gb", min=0.0, help="With --cache auto: stream once the cohort's HU would exceed this many GiB."
    ),
    checkpoint_every: int = typer.Option(
        0, "--checkpoint-every", min=0, help="Also checkpoint every N steps (0: at the end of each epoch only)."
    ),
    stop_after: int | None = typer.Option(
        None, "--stop-after", min=1, help="Stop after this many steps in all, with a checkpoint; run again to continue."
    ),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first unreadable scan."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Pretrain a backbone with MoCo v3 or LECL and register it as an encoder card.

    Run the same command again to resume from the last checkpoint.

    Several GPUs or nodes: torchrun --nproc-per-node 4 -m clearbench pretrain ... (--batch-size is the global batch).

    At the end, clearbench embed --encoder <arch>-<method>-<tag> uses the trained backbone.
    """
    from clearbench.pretraining.run import pretrain as run_pretrain

    main = os.environ.get("RANK", "0") == "0"
    problems = command_problems(strict, show=main, record=main)
    result = run_pretrain(
        arch,
        method,
        dataset,
        problems=problems,
        lam=lam,
        root=root,
        variant=variant,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        warmup_epochs=warmup_epochs,
        weight_decay=weight_decay,
        tau=tau,
        momentum=momentum,
        proj_dim=proj_dim,
        mlp_dim=mlp_dim,
        image_size=image_size,
        crop_scale=(crop_min, crop_max),
        lesion_scale=(lesion_crop_min, lesion_crop_max),
        windows=tuple(windows),
        splits=tuple(splits) or None,
        exclude_test_of=tuple(exclude_test_of),
        store=store,
        paper_name=paper_name,
        tag=tag,
        out=out,
        seed=seed,
        workers=workers,
        device=device,
        precision=precision,
        cache=cache,
        cache_gb=cache_gb,
        checkpoint_every=checkpoint_every,
        stop_after=stop_after,
        strict=strict,
        progress=main and not no_progress and not json_out,
    )
    if not main:
        return
    last = result.losses[-1] if result.losses else None
    if json_out:
        print_json_line(
            {
                "card": result.card_name,
                "finished": result.finished,
                "steps": result.steps,
                "total_steps": result.total_steps,
                "run_dir": str(result.run_dir),
                "weights": str(result.weights) if result.weights else None,
                "card_path": str(result.card_path) if result.card_path else None,
                "last_loss": last,
                "skipped_scans": len(problems.errors),
            }
        )
        return
    loss = f", last loss {last:.4f}" if last is not None else ""
    if not result.finished:
        say(
            "stopped at step {} of {}{}; run the same command again to continue ({})",
            result.steps,
            result.total_steps,
            loss,
            result.run_dir,
        )
        return
    say("[green]trained[/] {}: {} steps{}", result.card_name, result.steps, loss)
    say("  weights  {}", result.weights)
    say("  card     {}", result.card_path)
    if problems.errors:
        say("  [yellow]{} input error(s)[/]: those scans or slices were left out (see above)", len(problems.errors))
    say("next: clearbench embed --encoder {} --dataset <dataset>", result.card_name)


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)
