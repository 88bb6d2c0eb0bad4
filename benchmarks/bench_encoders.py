"""Images (or volumes) per second of every encoder family on this machine, tiny and full size, side by side.

Each family is built through the real family API (``build`` under a fixed seed, then ``wrap``), so this
measures exactly what ``clearbench embed`` runs. Two rates per row: ``model`` times ``Encoder.embed`` on an
already preprocessed batch; ``end-to-end`` adds the family's preprocessing (slices arrive as 512x512
windowed DeepLesion-sized images; volumes as HU scans). Ratios are printed against the tiny config of the
same family and against hu-hist, all measured in this one run.

    .venv/bin/python benchmarks/bench_encoders.py                 # every family, tiny and full
    .venv/bin/python benchmarks/bench_encoders.py --size tiny     # tiny configs only (seconds)
    .venv/bin/python benchmarks/bench_encoders.py --family mambaout --family vit-convb

A family's module that does not exist yet, or whose optional extra is missing, is reported and skipped.
To add a family, add its tiny and full :class:`Config` to ``CONFIGS``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from clearbench.encoders.family import EncoderSpec, seeded
from clearbench.encoders.registry import get_family
from clearbench.errors import ClearbenchError
from clearbench.scans.scan import Scan


@dataclass(frozen=True)
class Config:
    """One benchmark setting: card params and preprocessing, and the input it is fed."""

    params: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    n: int = 8  # slices per batch, or volumes (one at a time) for volume encoders
    shape: tuple[int, ...] = (512, 512)  # slice (H, W) or volume (Z, Y, X)
    spacing: tuple[float, float, float] = (1.0, 0.8, 0.8)  # volumes only, mm (z, y, x)


SMALL_2D = {"size": 64, "crop": 64}
CONFIGS: dict[str, dict[str, Config]] = {
    "hu-hist": {"tiny": Config({"bins": 8, "max_side": 128}, n=64), "full": Config(n=64)},
    "mambaout": {
        "tiny": Config({"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]}, SMALL_2D, n=32),
        "full": Config({"variant": "base"}, n=4),  # CLEAR's 768-d MambaOut has base dims
    },
    "vit-convb": {
        "tiny": Config({"img_size": 64, "embed_dim": 64, "depth": 1, "num_heads": 2}, SMALL_2D, n=32),
        "full": Config({}, n=4),
    },
    "vmamba": {
        "tiny": Config({"depths": [1, 1, 1, 1], "dims": [16, 32, 64, 128], "ssm_d_state": 4}, SMALL_2D, n=32),
        "full": Config({}, n=2),  # VSSM() defaults, as CLEAR trained it
    },
    "biomedclip": {
        "tiny": Config({"model_name": "vit_tiny_patch16_224"}, n=8),
        "full": Config({}, n=4),
    },
    "sam2": {
        "tiny": Config(
            {
                "embed_dim": 16,
                "num_heads": 1,
                "stages": [1, 1, 2, 1],
                "global_att_blocks": [3],
                "window_spec": [8, 4, 4, 2],
                "d_model": 32,
            },
            SMALL_2D,
            n=32,
        ),
        "full": Config({}, n=2),
    },
    "ctclip": {
        "tiny": Config(
            {
                "dim": 32,
                "codebook_size": 16,
                "image_size": 32,
                "patch_size": 8,
                "temporal_patch_size": 4,
                "spatial_depth": 1,
                "temporal_depth": 1,
                "dim_head": 8,
                "heads": 2,
                "dim_latent": 32,
            },
            {"shape": [8, 32, 32]},
            n=2,
            shape=(12, 40, 40),
        ),
        "full": Config({}, n=1, shape=(160, 400, 400)),
    },
    "merlin": {
        "tiny": Config({"layers": [1, 1, 1, 1], "class_nb": 8}, {"shape": [32, 32, 16]}, n=2, shape=(20, 40, 40)),
        "full": Config({}, n=1, shape=(160, 400, 400)),
    },
}


def _slices(cfg: Config) -> torch.Tensor:
    return torch.rand(cfg.n, *cfg.shape, generator=torch.Generator().manual_seed(0))


def _scan(cfg: Config) -> Scan:
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1000, size=cfg.shape, dtype=np.int16)
    return Scan(scan_id="bench", patient_id="bench", hu=hu, spacing=cfg.spacing)


def _rate(fn, items: int, min_seconds: float) -> float:
    """Items per second: one warm-up call, then calls until ``min_seconds`` have passed."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return calls * items / elapsed


def measure(family_name: str, size: str, cfg: Config, min_seconds: float) -> dict[str, Any]:
    family = get_family(family_name)
    family.require_extra()
    params = family.resolve_params(cfg.params)
    prep = family.resolve_preprocessing(cfg.preprocessing)
    with seeded(0):
        model = family.build(params)
    dim = family.output_dim(params)
    assert dim is not None, f"{family_name}: the {size} config must fix the architecture"
    enc = family.wrap(model, EncoderSpec(f"{family_name}-{size}", dim, params, prep))
    n_params = sum(p.numel() for p in enc.model.parameters())
    if family.kind == "slice":
        x = _slices(cfg)
        batch = enc.preprocess(x)
        model_rate = _rate(lambda: enc.embed(batch), cfg.n, min_seconds)
        e2e_rate = _rate(lambda: enc.encode(x), cfg.n, min_seconds)
    else:
        scan = _scan(cfg)
        volume = enc.preprocess(scan)
        model_rate = _rate(lambda: enc.embed(volume), 1, min_seconds)
        e2e_rate = _rate(lambda: enc.encode(scan), 1, min_seconds)
    return {
        "family": family_name,
        "size": size,
        "kind": family.kind,
        "dim": dim,
        "params": n_params,
        "input": "x".join(map(str, cfg.shape)),
        "model": model_rate,
        "e2e": e2e_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", action="append", help="only these families (repeatable)")
    parser.add_argument("--size", choices=("tiny", "full", "both"), default="both")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="time each measurement at least this long")
    args = parser.parse_args()
    sizes = ("tiny", "full") if args.size == "both" else (args.size,)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    rows, skipped = [], []
    for name in args.family or list(CONFIGS):
        for size in sizes:
            try:
                rows.append(measure(name, size, CONFIGS[name][size], args.min_seconds))
            except (ClearbenchError, ImportError) as exc:
                skipped.append(f"{name} ({size}): {exc}")
                break
            r = rows[-1]
            print(f"  measured {name:<11} {size:<4}  {r['model']:10.3g} /s", flush=True)

    floor = {r["size"]: r["e2e"] for r in rows if r["family"] == "hu-hist"}
    tiny = {r["family"]: r["model"] for r in rows if r["size"] == "tiny"}
    header = (
        f"{'family':<11} {'size':<4} {'kind':<6} {'dim':>4} {'params':>11} {'input':>11} "
        f"{'model/s':>10} {'end-to-end/s':>12} {'full÷tiny':>9} {'÷hu-hist':>9}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        unit = "img" if r["kind"] == "slice" else "vol"
        vs_tiny = f"{r['model'] / tiny[r['family']]:.3g}x" if r["size"] == "full" and r["family"] in tiny else ""
        vs_floor = f"{r['e2e'] / floor[r['size']]:.2g}x" if r["size"] in floor and r["kind"] == "slice" else ""
        print(
            f"{r['family']:<11} {r['size']:<4} {r['kind']:<6} {r['dim']:>4} {r['params']:>11,} {r['input']:>11} "
            f"{r['model']:>6.3g} {unit} {r['e2e']:>8.3g} {unit} {vs_tiny:>9} {vs_floor:>9}"
        )
    for line in skipped:
        print(f"skipped {line}")


if __name__ == "__main__":
    main()
