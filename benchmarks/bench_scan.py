"""The chunked selective scan against the plain token-by-token recurrence, side by side in one run.

Default sizes are those of one SS2D call in VMamba's first stage at 224 px: a 56x56 map (L = 3136 tokens),
d_inner = 192 channels in each of K = 4 scan directions (B and C grouped per direction), d_state N = 16,
batch 1. Inputs follow VMamba's initialisation: A = -(1..N) (S4D-real), delta = softplus(x + bias) with the
bias the inverse softplus of a log-uniform step in [0.001, 0.1] and small projected x, so the decays are
those of a freshly built model. ``--steep F`` multiplies A by F to force the chunk-splitting path.

    .venv/bin/python benchmarks/bench_scan.py
    .venv/bin/python benchmarks/bench_scan.py --threads 1 --chunk-size 16 --chunk-size 32 --chunk-size 64
    .venv/bin/python benchmarks/bench_scan.py --no-backward --steep 20

Each time is the best of ``--repeats`` runs. On a shared CPU, ``--threads 1`` avoids the large slowdowns
that oversubscribed OpenMP threads cause to the chunked scan's bigger operations.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch

from clearbench.encoders.selective_scan import (
    DEFAULT_CHUNK_SIZE,
    _prepare,
    _safe_spans,
    selective_scan_chunked,
    selective_scan_reference,
)


def vmamba_like_inputs(
    batch: int, k: int, d: int, n: int, length: int, steep: float, seed: int = 0
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    channels = k * d
    step = torch.exp(torch.rand(channels, generator=g) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
    return {
        "u": torch.randn(batch, channels, length, generator=g),
        "delta": 0.1 * torch.randn(batch, channels, length, generator=g),
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(channels, 1) * steep,
        "B": torch.randn(batch, k, n, length, generator=g),
        "C": torch.randn(batch, k, n, length, generator=g),
        "D": torch.ones(channels),
        "delta_bias": step + torch.log(-torch.expm1(-step)),
    }


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def forward_backward(
    scan: Callable[..., torch.Tensor], inputs: dict[str, torch.Tensor], **kw: int
) -> dict[str, torch.Tensor]:
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    y = scan(**leaves, delta_softplus=True, **kw)
    y.backward(torch.ones_like(y))
    return {"y": y.detach(), **{k: v.grad for k, v in leaves.items()}}


def vssm_forward(repeats: int) -> None:
    """The default VSSM (CLEAR's configuration) on one 224 px image, with the chunked scan and the recurrence."""
    import clearbench.encoders.vmamba as vm

    torch.manual_seed(0)
    model = vm.build_vmamba().eval()
    x = torch.randn(1, 3, 224, 224)
    times = {}
    with torch.no_grad():
        for name, scan in (("recurrence", selective_scan_reference), ("chunked", vm.selective_scan)):
            original, vm.selective_scan = vm.selective_scan, scan
            try:
                times[name], out = best_time(lambda: model(x), repeats)
            finally:
                vm.selective_scan = original
            times[name + "_out"] = out
    diff = (times["chunked_out"] - times["recurrence_out"]).abs().max().item()
    print("\nVSSM() forward, 1 image 224 px (16 blocks, 4-direction scans)")
    print(f"  recurrence        {times['recurrence']:9.3f} s")
    print(
        f"  chunked           {times['chunked']:9.3f} s   {times['recurrence'] / times['chunked']:.2f}x   "
        f"max |diff| {diff:.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=3136)
    parser.add_argument("--dim", type=int, default=192, help="channels per scan direction (d_inner)")
    parser.add_argument("--state", type=int, default=16, help="d_state N")
    parser.add_argument("--directions", type=int, default=4, help="K (one B/C group per direction)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, action="append", help=f"repeatable (default {DEFAULT_CHUNK_SIZE})")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--steep", type=float, default=1.0, help="multiply A by this (faster forgetting)")
    parser.add_argument("--no-backward", action="store_true", help="time the forward pass only")
    parser.add_argument(
        "--vssm", action="store_true", help="also time a whole VSSM() forward at 224 px (batch 1) with each scan"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    chunk_sizes = args.chunk_size or [DEFAULT_CHUNK_SIZE]
    inputs = vmamba_like_inputs(args.batch, args.directions, args.dim, args.state, args.length, args.steep)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; batch {args.batch}, "
        f"K {args.directions}, D {args.dim}, N {args.state}, L {args.length}, A x{args.steep:g}"
    )

    with torch.no_grad():
        _, dt, A, *_ = _prepare(
            **{k: inputs[k] for k in ("u", "delta", "A", "B", "C", "delta_bias")}, delta_softplus=True
        )
        ref_time, ref_y = best_time(lambda: selective_scan_reference(**inputs, delta_softplus=True), args.repeats)
        print("\nforward              time (s)   speed-up   max |diff|   chunks")
        print(f"  recurrence        {ref_time:9.3f}   {1.0:7.2f}x   {0.0:10.2e}   {args.length} tokens")
        for size in chunk_sizes:
            spans = len(_safe_spans(dt, A, size))
            t, y = best_time(
                lambda size=size: selective_scan_chunked(**inputs, delta_softplus=True, chunk_size=size), args.repeats
            )
            diff = (y - ref_y).abs().max().item()
            print(f"  chunked T={size:<5}  {t:9.3f}   {ref_time / t:7.2f}x   {diff:10.2e}   {spans}")

    if args.vssm:
        vssm_forward(args.repeats)
    if args.no_backward:
        return
    # Once: the recurrence's backward runs through 3136 small autograd steps and takes minutes.
    ref_time, ref_g = best_time(lambda: forward_backward(selective_scan_reference, inputs), 1)
    print("\nforward + backward   time (s)   speed-up   max |diff| / max |value|, output and all 7 gradients")
    print(f"  recurrence        {ref_time:9.3f}   {1.0:7.2f}x")
    for size in chunk_sizes:
        t, g = best_time(
            lambda size=size: forward_backward(selective_scan_chunked, inputs, chunk_size=size), args.repeats
        )
        diff = max((g[k] - ref_g[k]).abs().max().item() for k in g)
        rel = max(((g[k] - ref_g[k]).abs().max() / ref_g[k].abs().max()).item() for k in g)
        print(f"  chunked T={size:<5}  {t:9.3f}   {ref_time / t:7.2f}x   {diff:.2e} / {rel:.2e} relative")


if __name__ == "__main__":
    main()
