"""``clearbench demo``: the CLEAR recipe end to end on a synthetic cohort, answering its question in minutes.

The question clearbench exists to answer is "which encoder should I use, and is the difference real?".
The demo asks it of four encoders on the same test patients:

1. a synthetic DeepLesion cohort (phantom CTs with lesions of all 8 types, in the real on-disk layout);
2. a small MambaOut pretrained here twice, with MoCo v3 and with LECL-0, leaving out task 1's test
   patients (``--exclude-test-of``), as the paper did;
3. the same MambaOut with random weights (what pretraining adds) and ``hu-hist`` (the non-learned floor);
4. task 1 on all four, with the demo card ``task1-demo`` (the paper's protocol and head, a recipe that
   trains on ~100 scans: its description says why);
5. the leaderboard with bootstrap CIs and paired tests, the HTML board with attention plots across slices,
   and a verdict that says plainly whether the learned encoders won.

Everything lives under ``out``: ``deeplesion/`` (the cohort), ``home/`` (the ``CLEARBENCH_HOME`` of the
demo: cards, pretraining runs, the store), ``leaderboard.{txt,md,csv}`` and ``board/`` (``index.html`` and
``plots/``). A
second run reuses what exists: the cohort, finished pretraining runs, stored embeddings and finished folds.

The synthetic data and seeds are the ones the tests use; nothing here is tuned to make one encoder win.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearbench.errors import ClearbenchError

if TYPE_CHECKING:
    import polars as pl

    from clearbench.protocols.run import RunProgress

TASK = "task1-demo"
DATASET = "deeplesion"
SEED = 0
HU_HIST = "hu-hist"


@dataclass(frozen=True)
class DemoSize:
    """How big each step is. ``full`` fits about ten minutes on two CPU cores, ``quick`` about two."""

    name: str
    scans: int  # enough patients that a 20% test set holds at least 10
    slice_px: int
    variant: str  # MambaOut variant pretrained and used at random init
    image_size: int  # the pretrained encoders' input size
    pretrain_epochs: int
    pretrain_batch: int
    pretrain_lr: float  # per 256 images, as clearbench pretrain takes it
    mlp_dim: int
    proj_dim: int
    run_epochs: int | None  # None: the task card's
    plots: int  # attention plots per encoder

    @property
    def tag(self) -> str:
        """The pretraining tag, so full and quick runs in one folder never resume each other's checkpoint."""
        return "demo" if self.name == "full" else f"demo-{self.name}"


FULL = DemoSize(
    "full",
    scans=120,
    slice_px=64,
    variant="nano",
    image_size=64,
    pretrain_epochs=6,
    pretrain_batch=64,
    pretrain_lr=1e-3,
    mlp_dim=1024,
    proj_dim=128,
    run_epochs=None,
    plots=2,
)
QUICK = DemoSize(
    "quick",
    scans=120,
    slice_px=64,
    variant="micro",
    image_size=32,
    pretrain_epochs=1,
    pretrain_batch=64,
    pretrain_lr=1e-3,
    mlp_dim=256,
    proj_dim=64,
    run_epochs=12,
    plots=1,
)


@dataclass
class DemoEncoder:
    name: str
    role: str  # what the row stands for, in the verdict and the summary
    learned: bool


@dataclass
class DemoResult:
    """Where everything went, and what the leaderboard said."""

    out: Path
    home: Path
    cohort: Path
    size: DemoSize
    encoders: list[DemoEncoder]
    leaderboard: pl.DataFrame
    leaderboard_files: list[Path]
    plots: list[Path]
    board: Path
    verdict: str
    seconds: dict[str, float] = field(default_factory=dict)


Say = Callable[[str], None]


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the demo's duration.

    The demo's models are small: on two cores, intra-op threads of a small convolution mostly wait for each
    other, and on a busy machine they wait for the scheduler too (measured: six times the CPU time per
    pretraining step with two threads under load). Slices are decoded in the main process for the same
    reason (``workers = 0``), which also keeps the data loader from forking a process that holds LanceDB.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def demo_home(home: Path) -> Iterator[Path]:
    """Run with ``CLEARBENCH_HOME`` = ``home``, so the demo's cards, runs and store stay in its own folder."""
    previous = os.environ.get("CLEARBENCH_HOME")
    home.mkdir(parents=True, exist_ok=True)
    os.environ["CLEARBENCH_HOME"] = str(home)
    try:
        yield home
    finally:
        if previous is None:
            os.environ.pop("CLEARBENCH_HOME", None)
        else:
            os.environ["CLEARBENCH_HOME"] = previous


def _cohort(out: Path, size: DemoSize, say: Say) -> Path:
    """The synthetic cohort, written once: a marker records what was asked, and a match is reused."""
    from clearbench.progress import LoggedProgress
    from clearbench.scans.synth.deeplesion import write_cohort

    root = out / DATASET
    marker = out / f"{DATASET}.json"
    wanted = {"dataset": DATASET, "scans": size.scans, "seed": SEED, "size": size.slice_px}
    if marker.is_file() and (root / "DL_info.csv").is_file() and json.loads(marker.read_text()) == wanted:
        say(f"reusing the cohort in {root}")
        return root
    if root.exists():
        # A cohort the demo did not finish, or one of another size: the demo owns it and its home, and a
        # store made from another cohort would only be refused later.
        say(f"removing the unfinished or different demo cohort under {out}, and the demo's store")
        shutil.rmtree(root)
        shutil.rmtree(out / "home", ignore_errors=True)
        (out / "home").mkdir()
    with LoggedProgress(console=None, transient=True) as bar:
        task = bar.add_task(f"writing {size.scans} DeepLesion series", total=size.scans)
        write_cohort(root, size.scans, SEED, size=size.slice_px, progress=lambda n: bar.advance(task, n))
    marker.write_text(json.dumps(wanted))
    say(f"wrote {size.scans} phantom DeepLesion series ({size.slice_px} px, seed {SEED}) to {root}")
    return root


def _pretrained(method: str, root: Path, size: DemoSize, say: Say) -> str:
    """Pretrain the small MambaOut with ``method`` (moco or lecl, λ = 0) unless a finished run is there."""
    from clearbench.encoders.registry import get_card
    from clearbench.pretraining import PretrainConfig, pretrain
    from clearbench.pretraining.export import PROVENANCE, WEIGHTS
    from clearbench.pretraining.run import run_dir_of

    settings: dict[str, Any] = {
        "root": str(root),
        "lam": 0.0,
        "variant": size.variant,
        "epochs": size.pretrain_epochs,
        "batch_size": size.pretrain_batch,
        "lr": size.pretrain_lr,
        "image_size": size.image_size,
        "mlp_dim": size.mlp_dim,
        "proj_dim": size.proj_dim,
        "exclude_test_of": ("task1", TASK),
        "tag": size.tag,
        "seed": SEED,
        "cache": "memory",
        "workers": 0,
    }
    config = PretrainConfig(arch="mambaout", method=method, dataset=DATASET, **settings)
    run_dir = run_dir_of(config)
    done = run_dir / PROVENANCE
    if done.is_file() and (run_dir / WEIGHTS).is_file():
        saved = json.loads(done.read_text()).get("settings", {})
        if not config.differences(saved):
            get_card(config.card_name)  # the card is there and readable
            say(f"reusing {config.card_name} (pretrained before: {run_dir})")
            return config.card_name
    label = "MoCo v3" if method == "moco" else "LECL-0"
    say(
        f"pretraining MambaOut-{size.variant} with {label}: {size.pretrain_epochs} epochs, batch {size.pretrain_batch}, "
        f"{size.image_size} px, without the test patients of task1 and {TASK}"
    )
    result = pretrain("mambaout", method, DATASET, **settings)
    last = f", last loss {result.losses[-1]:.3f}" if result.losses else ""
    say(f"trained {result.card_name}: {result.steps} steps{last}")
    return result.card_name


def _random_twin(learned_card: str, size: DemoSize) -> str:
    """A card for the same MambaOut (parameters and preprocessing of ``learned_card``) with random weights."""
    from clearbench.encoders.card import write_card
    from clearbench.encoders.registry import get_card

    name = f"mambaout-random-{size.tag}"
    card = get_card(learned_card).to_toml()
    twin = {
        "name": name,
        "family": card["family"],
        "dim": card["dim"],
        "description": f"the architecture and preprocessing of {learned_card}, seeded random weights: what pretraining adds",
        "weights": f"random:{SEED}",
        "params": card.get("params", {}),
        "preprocessing": card.get("preprocessing", {}),
    }
    write_card(twin, overwrite=True)
    return name


def _embed(encoders: Sequence[DemoEncoder], root: Path, say: Say) -> None:
    from clearbench.embedding import embed

    for enc in encoders:
        summary = embed(enc.name, DATASET, root=root)
        say(f"{enc.name}: {summary.scans_done} scan(s) embedded, {summary.scans_skipped} already stored")


def _leaderboard(encoders: Sequence[DemoEncoder], out: Path) -> tuple[pl.DataFrame, list[Path]]:
    from rich.console import Console

    from clearbench.leaderboards import leaderboard
    from clearbench.leaderboards.render import render, to_rich

    board = leaderboard(TASK, encoders=[e.name for e in encoders], published=False)
    files = []
    for fmt in ("md", "csv"):
        path = out / f"leaderboard.{fmt}"
        path.write_text(render([board], fmt), encoding="utf-8")
        files.append(path)
    text = out / "leaderboard.txt"
    with text.open("w", encoding="utf-8") as fh:
        Console(file=fh, width=200, color_system=None, highlight=False).print(to_rich(board))
    return board, [text, *files]


def verdict(board: pl.DataFrame, encoders: Sequence[DemoEncoder]) -> str:
    """Whether the learned encoders beat the others on the average, and whether the CIs allow saying so."""
    rows = {r["encoder"]: r for r in board.iter_rows(named=True) if r["group"] == "ranked"}
    missing = [e.name for e in encoders if e.name not in rows]
    if missing:
        return f"no verdict: {', '.join(missing)} could not be ranked on the same test patients (see the leaderboard)"
    learned = [e for e in encoders if e.learned]
    baselines = [e for e in encoders if not e.learned]

    def show(e: DemoEncoder) -> str:
        r = rows[e.name]
        ci = f" [{r['ci_low']:.1f}, {r['ci_high']:.1f}]" if r["ci_low"] is not None else ""
        return f"{e.role} {r['average']:.1f}{ci}"

    best_base = max(baselines, key=lambda e: rows[e.name]["average"])
    lines = [f"macro AUC on the test patients (95% bootstrap CI): {'; '.join(show(e) for e in encoders)}."]
    wins = [e for e in learned if rows[e.name]["average"] > rows[best_base.name]["average"]]
    if len(wins) == len(learned):
        apart = all(
            rows[e.name]["ci_low"] is not None
            and rows[b.name]["ci_high"] is not None
            and rows[e.name]["ci_low"] > rows[b.name]["ci_high"]
            for e in learned
            for b in baselines
        )
        if apart:
            lines.append("The pretrained encoders beat random init and hu-hist, with CIs that do not overlap.")
        else:
            lines.append(
                "The pretrained encoders score higher than random init and hu-hist, but their CIs overlap: "
                "on this many test patients the difference is not established."
            )
        lines += _paired(rows, encoders)
    elif wins:
        lines.append(
            f"Only {', '.join(e.role for e in wins)} beats the best baseline ({best_base.role}); "
            f"{', '.join(e.role for e in learned if e not in wins)} does not."
        )
    else:
        lines.append(
            f"The pretrained encoders do NOT beat the best baseline ({best_base.role}) here: a few minutes of "
            "pretraining on a phantom cohort did not give better features for this task."
        )
    return " ".join(lines)


def _paired(rows: dict[str, dict[str, Any]], encoders: Sequence[DemoEncoder]) -> list[str]:
    """What the paired test against the best row (a learned one) says of each baseline, when the board has it."""
    best = next((e for e in encoders if rows[e.name].get("p_value") is None and rows[e.name].get("rank") == 1), None)
    tested = [e for e in encoders if not e.learned and rows[e.name].get("p_value") is not None]
    if best is None or not best.learned or not tested:
        return []
    parts = [f"{e.role} p = {rows[e.name]['p_value']:.3f}" for e in tested]
    return [f"Paired bootstrap test of {best.role} against each baseline on the same patients: {'; '.join(parts)}."]


def _board(out: Path, root: Path, size: DemoSize) -> tuple[Path, list[Path]]:
    """The HTML board of the demo's store, with attention plots of each run beside its row."""
    from clearbench.htmlboard.build import board

    written = board(out / "board", published=False, plots=size.plots, root=root)
    return written.path, written.plots


def run_demo(
    out: str | Path = ".demo",
    *,
    quick: bool = False,
    say: Say = print,
    run_progress: Callable[[], AbstractContextManager[RunProgress | None]] | None = None,
) -> DemoResult:
    """Run the demo into ``out``; ``say`` gets one line per step, ``run_progress`` gives the display of the runs.

    Returns where each output is and the verdict. The demo's ``CLEARBENCH_HOME`` is ``out/home`` for the
    duration of the call, so nothing touches the user's own home.
    """
    from clearbench.protocols.run import run_task

    size = QUICK if quick else FULL
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[step] = now - clock
        clock = now

    with demo_home(out / "home") as home, one_thread():
        say(f"[1/6] a synthetic DeepLesion cohort with all 8 lesion types ({size.name} demo)")
        root = _cohort(out, size, say)
        lap("cohort")
        say("[2/6] pretraining a small MambaOut twice, leaving task 1's test patients out")
        moco = _pretrained("moco", root, size, say)
        lecl = _pretrained("lecl", root, size, say)
        lap("pretrain")
        encoders = [
            DemoEncoder(moco, "MoCo", learned=True),
            DemoEncoder(lecl, "LECL-0", learned=True),
            DemoEncoder(_random_twin(moco, size), "random init", learned=False),
            DemoEncoder(HU_HIST, "hu-hist", learned=False),
        ]
        say("[3/6] embedding every slice in the abdomen and lung windows with the four encoders")
        _embed(encoders, root, say)
        lap("embed")
        say(f"[4/6] {TASK} on all four encoders: the same stored split, a fresh ABMIL head per fold")
        with run_progress() if run_progress is not None else _nothing() as progress:
            runs = run_task(
                TASK, [e.name for e in encoders], root=root, epochs=size.run_epochs, device="cpu", progress=progress
            )
        if len(runs) != len(encoders):
            raise ClearbenchError(
                f"only {len(runs)} of {len(encoders)} encoders could run {TASK}; see the messages above"
            )
        lap("run")
        say(
            "[5/6] the leaderboard: mean ± std over folds, bootstrap CI over test patients, paired test against the best"
        )
        board, files = _leaderboard(encoders, out)
        lap("leaderboard")
        say("[6/6] the HTML board, with attention plots across slices for each run")
        board_path, plots = _board(out, root, size)
        lap("board")
    return DemoResult(
        out=out,
        home=home,
        cohort=root,
        size=size,
        encoders=encoders,
        leaderboard=board,
        leaderboard_files=files,
        plots=plots,
        board=board_path,
        verdict=verdict(board, encoders),
        seconds=seconds,
    )


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def next_commands(result: DemoResult) -> list[tuple[str, str]]:
    """What to try next: on the demo's own store, then on real data."""
    home = f"CLEARBENCH_HOME={result.home}"
    best = next((e.name for e in result.encoders if e.learned), HU_HIST)
    return [
        ("this demo's leaderboard, as markdown", f"{home} clearbench leaderboard {TASK} --format md"),
        ("attention across slices for one encoder", f"{home} clearbench explain {TASK} --encoder {best}"),
        ("the split every encoder was tested on", f"{home} clearbench splits {TASK}"),
        (
            "your DeepLesion download: what is read, what is wrong",
            "clearbench scans --dataset deeplesion --root /data/DeepLesion",
        ),
        ("embed it (resumable)", "clearbench embed --encoder hu-hist --dataset deeplesion --root /data/DeepLesion"),
        (
            "pretrain LECL-0 as the paper did",
            "clearbench pretrain --arch mambaout --method lecl --lam 0 --root /data/DeepLesion --exclude-test-of task1",
        ),
        (
            "task 1 with the paper's recipe, then the board",
            "clearbench run task1 --root /data/DeepLesion && clearbench leaderboard task1",
        ),
    ]


def describe_outputs(result: DemoResult) -> list[tuple[str, Any]]:
    """Each output and where it is."""
    rows: list[tuple[str, Any]] = [
        ("cohort", result.cohort),
        ("store (embeddings, splits, runs)", result.home / "store"),
        ("pretrained encoders (cards)", result.home / "encoders"),
        ("pretraining runs", result.home / "pretrain"),
    ]
    rows += [(f"leaderboard ({p.suffix[1:]})", p) for p in result.leaderboard_files]
    rows.append(("HTML board (open it in a browser)", result.board))
    rows.append((f"attention plots ({len(result.plots)})", result.board.parent / "plots"))
    return rows
