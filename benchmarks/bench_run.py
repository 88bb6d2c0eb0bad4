"""Benchmark of ``clearbench run``'s training path, measured side by side in one process.

Figure 1 -- protocol time. The same embeddings, the same ABMIL head, the same folds and the same number of
epochs (early stopping disabled so both sides train every epoch), trained two ways:

- clearbench: bags read once from the LanceDB store, every fold trained from the in-memory tensor with
  length-bucketed, masked batches built by one gather (``clearbench.protocols.cv.run_fold``);
- the paper's way (KatherLab/CLEAR ``src/downstreamtasks``, re-written here): one ``.npy`` file per scan,
  a torch ``Dataset`` that reads its file in ``__getitem__`` and zero-pads every bag to 512 instances, a
  ``DataLoader`` (batch 128, shuffled) for training and validation, and batch size 1 on the test set.

Figure 2 -- achieved FLOP/s of one ABMIL training step (batch gather, forward, loss, backward, AdamW step)
divided by the FLOP/s of plain ``torch.matmul`` calls of the same GEMM shapes. The FLOPs counted are the
GEMMs of the head, for B bags of K instances of dimension D, hidden H, attention P, n_out outputs::

    forward  F = 2BK(D*H + H*P + P + H) + 2B(H*H + H*n_out)
    training   = 3F - 2BK*D*H   (every GEMM once forward, once for its weight gradient, once for its input
                                 gradient, except the input gradient of the first layer: embeddings need none)

The matmul reference runs exactly those GEMMs (forward, weight-gradient and input-gradient shapes) and
nothing else, so the ratio is the fraction of the machine's GEMM speed that a real training step keeps.

Run: ``.venv/bin/python benchmarks/bench_run.py`` (``--help`` for sizes). On a GPU pass ``--device cuda``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from clearbench.mil.data import BagSet, make_batch
from clearbench.mil.heads import ABMIL
from clearbench.mil.train import TrainConfig, seed_everything
from clearbench.protocols.cv import run_fold
from clearbench.protocols.splits import make_folds
from clearbench.scans.windows import get_window
from clearbench.store import EmbeddingStore, ScanEmbeddings
from clearbench.tasks.card import HeadSpec
from clearbench.tasks.spec import ProtocolSpec

PAPER_PAD = 512


def synthetic_embeddings(n_scans: int, dim: int, n_labels: int, min_len: int, max_len: int, seed: int):
    """Per scan: vectors (two windows of equal slice count, like task 1), patient id and labels."""
    rng = np.random.default_rng(seed)
    scans = []
    for i in range(n_scans):
        n_slices = int(rng.integers(min_len, max_len + 1)) // 2
        y = (rng.random(n_labels) < 0.3).astype(np.float32)
        v = rng.normal(size=(2 * n_slices, dim)).astype(np.float32)
        for j in np.flatnonzero(y):
            v[int(rng.integers(0, 2 * n_slices)), j] += 3.0
        scans.append((f"{i // 2:05d}_{i % 2:02d}_01", f"{i // 2:05d}", v, y))
    return scans


def write_store(path: Path, scans, dim: int) -> EmbeddingStore:
    store = EmbeddingStore(path)
    windows = [get_window("abdomen"), get_window("lung")]
    table = store.open_for_writing("bench__synthetic", dim, {"encoder": "synthetic", "dataset": "bench"}, windows)
    rows = []
    for scan_id, patient, v, _ in scans:
        n = len(v) // 2
        rows.append(
            ScanEmbeddings(
                scan_id,
                patient,
                np.repeat(["abdomen", "lung"], n),
                np.tile(np.arange(n), 2),
                np.tile(np.arange(n), 2) * 1.0,
                v,
            )
        )
    for start in range(0, len(rows), 200):
        table.write(rows[start : start + 200])
    return store


# -- the paper's way --------------------------------------------------------------------------------------


class PerFileBags(Dataset):
    """One .npy per scan, read on every access and zero-padded to 512 instances (no mask)."""

    def __init__(self, files: list[Path], labels: np.ndarray) -> None:
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        feats = torch.from_numpy(np.load(self.files[i]))
        if len(feats) < PAPER_PAD:
            feats = torch.cat([feats, torch.zeros(PAPER_PAD - len(feats), feats.shape[1])])
        else:
            feats = feats[torch.sort(torch.randperm(len(feats))[:PAPER_PAD])[0]]
        return feats, torch.from_numpy(self.labels[i])


def paper_fold(files, labels, fold, dim, n_labels, epochs, device, seed):
    seed_everything(seed)
    model = ABMIL(dim, n_labels).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def sub(idx):
        return PerFileBags([files[i] for i in idx], labels[idx])

    train_dl = DataLoader(sub(fold.train), batch_size=128, shuffle=True, num_workers=0)
    val_dl = DataLoader(sub(fold.val), batch_size=128, shuffle=False, num_workers=0)
    test_dl = DataLoader(sub(fold.test), batch_size=1, shuffle=False, num_workers=0)
    for _ in range(epochs):
        model.train()
        for x, y in train_dl:
            logits, _ = model(x.to(device))
            loss = F.binary_cross_entropy_with_logits(logits, y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for x, y in val_dl:
                F.binary_cross_entropy_with_logits(model(x.to(device))[0], y.to(device)).item()
    with torch.no_grad():
        probs = [torch.sigmoid(model(x.to(device))[0]).cpu() for x, _ in test_dl]
    return torch.cat(probs)


# -- FLOP/s ---------------------------------------------------------------------------------------------


def training_flops(b: int, k: int, d: int, h: int, p: int, n_out: int) -> float:
    forward = 2 * b * k * (d * h + h * p + p + h) + 2 * b * (h * h + h * n_out)
    return 3 * forward - 2 * b * k * d * h


def gemm_shapes(b: int, k: int, d: int, h: int, p: int, n_out: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every GEMM in one training step, matching :func:`training_flops`."""
    per_instance = [(b * k, d, h), (b * k, h, p), (b * k, p, 1)]
    per_bag = [(b, h, h), (b, h, n_out)]
    shapes = []
    for m, kk, n in per_instance + per_bag:
        shapes += [(m, kk, n), (kk, m, n)]  # forward, weight gradient
        if (m, kk, n) != (b * k, d, h):
            shapes.append((m, n, kk))  # input gradient
    # attention pooling: weights (B,1,K) @ h (B,K,H), and its two gradients, as one (BK)-long reduction each
    shapes += [(b, k, h)] * 3
    return shapes


def time_it(fn, device: str, repeat: int) -> float:
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def flops_ratio(b: int, k: int, d: int, n_out: int, device: str, repeat: int) -> tuple[float, float, float]:
    h = p = 256
    torch.manual_seed(0)
    lengths = torch.full((b,), k)
    feats = torch.randn(b * k, d, device=device)
    offsets = torch.zeros(b + 1, dtype=torch.int64, device=device)
    offsets[1:] = lengths.cumsum(0)
    bags = BagSet(
        [str(i) for i in range(b)],
        [str(i) for i in range(b)],
        feats,
        offsets,
        (torch.rand(b, n_out, device=device) < 0.3).float(),
    )
    model = ABMIL(d, n_out, hidden=h, attention_dim=p).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    index = torch.arange(b, device=device)

    def step() -> None:
        batch = make_batch(bags, index)
        logits, _ = model(batch.x, batch.mask)
        loss = F.binary_cross_entropy_with_logits(logits, batch.y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    mats = [
        (torch.randn(m, kk, device=device), torch.randn(kk, n, device=device))
        for m, kk, n in gemm_shapes(b, k, d, h, p, n_out)
    ]

    def matmuls() -> None:
        for a, w in mats:
            torch.matmul(a, w)

    flops = training_flops(b, k, d, h, p, n_out)
    step_s, mm_s = time_it(step, device, repeat), time_it(matmuls, device, repeat)
    gemm_flops = sum(2 * m * kk * n for m, kk, n in gemm_shapes(b, k, d, h, p, n_out))
    assert abs(gemm_flops - flops) / flops < 0.01, (gemm_flops, flops)
    return flops / step_s, flops / mm_s, step_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scans", type=int, default=300)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--labels", type=int, default=8)
    # DeepLesion series folders hold typically 30-60 slices (docs/DATASETS.md §1); task 1 embeds each slice
    # in two windows, so its bags have 60-120 instances.
    ap.add_argument("--min-len", type=int, default=60, help="fewest instances per bag (both windows)")
    ap.add_argument("--max-len", type=int, default=120, help="most instances per bag (both windows)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--repeat", type=int, default=5, help="timed repeats of the FLOP/s measurement")
    ap.add_argument(
        "--full", action="store_true", help="also time clearbench's full task-1 protocol (32 epochs, patience 8)"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    scans = synthetic_embeddings(args.scans, args.dim, args.labels, args.min_len, args.max_len, seed=0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store = write_store(tmp / "store", scans, args.dim)
        # The same vectors for the reference, after the store's float16 round trip, one file per scan.
        bags = store.bags(table="bench__synthetic", windows=["abdomen", "lung"])
        labels_of = {s: y for s, _, _, y in scans}
        files = []
        for s in bags.scan_ids:
            files.append(tmp / "npy" / f"{s}.npy")
            files[-1].parent.mkdir(exist_ok=True)
            np.save(files[-1], bags.bag(s))
        y = np.stack([labels_of[s] for s in bags.scan_ids])
        folds = make_folds(ProtocolSpec("holdout+kfold", folds=args.folds, seed=0), bags.patient_ids, y)
        mean_len = float(np.diff(bags.offsets).mean())
        print(
            f"{len(bags)} scans, {len(set(bags.patient_ids))} patients, {mean_len:.0f} instances per bag on average "
            f"(range {args.min_len}-{args.max_len}), dim {args.dim}, {args.labels} labels, {args.folds} folds x "
            f"{args.epochs} epochs, device {args.device}, {torch.get_num_threads()} threads"
        )

        # torch imports its compiler stack the first time an optimizer is built (seconds); pay that before timing.
        torch.optim.AdamW(torch.nn.Linear(1, 1).parameters())
        cfg = TrainConfig(
            loss="bce", batch_size=128, max_epochs=args.epochs, patience=args.epochs + 1, device=args.device
        )
        head = HeadSpec("abmil", {"hidden": 256, "attention_dim": 256, "dropout": 0.5, "gated": False})
        start, cpu = time.perf_counter(), time.process_time()
        raw = EmbeddingStore(tmp / "store").bags(table="bench__synthetic", windows=["abdomen", "lung"])
        bagset = BagSet.from_arrays(raw.scan_ids, raw.patient_ids, raw.vectors, raw.offsets, y)
        for fold in folds:
            run_fold(bagset, fold, head, cfg, [f"l{j}" for j in range(args.labels)], seed=0)
        ours, ours_cpu = time.perf_counter() - start, time.process_time() - cpu

        full_line = ""
        if args.full:
            full_cfg = TrainConfig(loss="bce", batch_size=128, max_epochs=32, patience=8, device=args.device)
            start, cpu = time.perf_counter(), time.process_time()
            names = [f"l{j}" for j in range(args.labels)]
            epochs_run = [run_fold(bagset, fold, head, full_cfg, names, seed=0).train.epochs_run for fold in folds]
            full_line = (
                f"clearbench's full task-1 protocol (up to 32 epochs, patience 8; epochs run per fold {epochs_run}): "
                f"{time.perf_counter() - start:.2f} s wall, {time.process_time() - cpu:.2f} s CPU"
            )

        start, cpu = time.perf_counter(), time.process_time()
        for fold in folds:
            paper_fold(files, y, fold, args.dim, args.labels, args.epochs, args.device, seed=0)
        paper, paper_cpu = time.perf_counter() - start, time.process_time() - cpu

    # CPU time is printed too: on a shared machine it moves far less with other people's load than wall time.
    print(f"full protocol, clearbench (store read + {args.folds} folds): {ours:8.2f} s wall, {ours_cpu:8.2f} s CPU")
    print(f"full protocol, paper-style per-file loop, pad 512:  {paper:8.2f} s wall, {paper_cpu:8.2f} s CPU")
    print(
        f"protocol speed-up: {paper / ours:.1f}x wall, {paper_cpu / ours_cpu:.1f}x CPU  (target >= 5x; "
        f"padding alone accounts for {PAPER_PAD / mean_len:.1f}x of the compute)"
    )
    if full_line:
        print(full_line)

    k = round(mean_len)
    achieved, peak, step_s = flops_ratio(128, k, args.dim, args.labels, args.device, args.repeat)
    print(
        f"ABMIL training step (B=128, K={k}, D={args.dim}, H=P=256): {step_s * 1e3:.1f} ms, "
        f"{achieved / 1e9:.1f} GFLOP/s; plain matmul of the same GEMMs: {peak / 1e9:.1f} GFLOP/s"
    )
    print(f"achieved / matmul FLOP/s: {achieved / peak:.2f}  (target >= 0.5)")


if __name__ == "__main__":
    main()
