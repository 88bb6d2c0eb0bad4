"""``clearbench run TASK``: train and evaluate a task on stored embeddings, with live progress and a summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from clearbench.cli.common import command_problems, console, err_console, esc, markup, print_json_line, say
from clearbench.errors import ClearbenchError
from clearbench.progress import LoggedProgress
from clearbench.tasks.card import MIN_TEST_PATIENTS, PAPER_TRAINING, TrainingSpec

# Measured with benchmarks/bench_mil_sanity.py-sized heads on task 1 (see README, "Training recipe"): one
# torch thread per run was fastest; more threads spend more on synchronisation than the small GEMMs save.
DEFAULT_THREADS = 1

if TYPE_CHECKING:
    from clearbench.mil.train import EpochInfo
    from clearbench.protocols.metrics import FoldScores, Summary
    from clearbench.protocols.run import EncoderRun
    from clearbench.protocols.stored_split import StoredSplit


def training_option(setting: str, flags: str) -> typer.models.OptionInfo:
    """The option that overrides one of the task card's training settings: its help and lower bound are the
    setting's own (:class:`~clearbench.tasks.card.TrainingSpec`), so they cannot drift from what a card accepts.

    Its default is None, the card's value. typer's bounds are inclusive: a strict bound (``lr > 0``) is given
    as its inclusive form and said in the help, and the value itself is refused as the card would refuse it."""
    field = TrainingSpec.model_fields[setting]
    inclusive = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
    strict = next((m.gt for m in field.metadata if hasattr(m, "gt")), None)
    paper = PAPER_TRAINING.get(setting)
    help_text = (field.description or "") + (f" Must be > {strict}." if strict is not None else "")
    help_text += " Default: the task card's" + (f"; the paper's: {paper}." if paper is not None else ".")
    return typer.Option(flags, min=inclusive if strict is None else strict, help=help_text)


RESPLIT_HELP = (
    "The cohort changed since the task's split was stored: draw a new split (runs on the old one keep its id)."
)
KEEP_SPLIT_HELP = (
    "The cohort changed since the task's split was stored: keep that split (new scans are left out and listed)."
)


class RichRunProgress:
    """Two bars per encoder: folds done, and epochs of the fold in training with its losses."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.folds: TaskID | None = None
        self.epochs: TaskID | None = None
        self.max_epochs = 0
        self.label = ""

    def encoder_started(self, task: str, encoder: str, n_folds: int, reused: Sequence[int], max_epochs: int) -> None:
        for bar in (self.folds, self.epochs):
            if bar is not None:
                self.progress.remove_task(bar)
        self.label = f"{esc(task)} · {esc(encoder)}"
        self.max_epochs = max_epochs
        info = f"reusing finished folds {', '.join(map(str, reused))}" if reused else ""
        self.folds = self.progress.add_task(f"{self.label}: folds", total=n_folds, info=info)
        self.epochs = self.progress.add_task("  epochs", total=max_epochs, info="", visible=False)

    def fold_started(self, fold: int) -> None:
        assert self.epochs is not None
        self.progress.reset(
            self.epochs, total=self.max_epochs, description=f"  fold {fold}: epochs", visible=True, info=""
        )

    def epoch_done(self, fold: int, info: EpochInfo) -> None:
        assert self.epochs is not None
        self.progress.update(
            self.epochs,
            completed=info.epoch + 1,
            info=f"train {info.train_loss:.4f}  val {info.val_loss:.4f}  best epoch {info.best_epoch + 1}",
        )

    def fold_done(self, fold: int, scores: FoldScores, reused: bool) -> None:
        assert self.folds is not None and self.epochs is not None
        auc = scores.values["auc"]["macro"]
        self.progress.advance(self.folds)
        self.progress.update(self.folds, info=f"fold {fold} test macro AUC {_pct(auc)}{' (reused)' if reused else ''}")
        if not reused:
            self.progress.update(self.epochs, visible=False)


def _pct(x: float) -> str:
    return "undefined" if x != x else f"{100 * x:.1f}"


def _cell(s: Summary, n_folds: int) -> str:
    if not s.defined:
        return "[dim]undefined[/]"
    text = f"{100 * s.mean:.1f} ± {100 * s.std:.1f}"
    return text + (f" [dim](n={s.n})[/]" if s.n < n_folds else "")


def split_notes(split: StoredSplit) -> list[str]:
    """What the user should know about the task's split: that it was just drawn, or kept for a changed cohort."""
    size = f"{split.n_folds} folds, {len(split.patient_of)} scans, {len(set(split.patient_of.values()))} patients"
    if split.choice in ("drawn", "resplit"):
        verb = "drew and stored" if split.choice == "drawn" else "drew and stored a new"
        return [f"{split.task}: {verb} split {split.split_id} ({size}); every run of {split.task} uses it"]
    if split.change:
        return [f"{split.task}: kept split {split.split_id} ({size}) for a changed cohort: {split.change.describe()}"]
    return []


def recipe_line(r: EncoderRun) -> str:
    """The recipe a run trained with, overrides marked with ``*`` (plain text: print it through ``say``)."""
    t = r.training
    if not t:
        return ""
    names = {
        "lr": "lr",
        "batch_size": "batch",
        "max_epochs": "epochs",
        "patience": "patience",
        "standardize": "standardize",
        "min_steps": "min steps",
    }
    parts = [f"{label} {t[k]}{'*' if k in r.overrides else ''}" for k, label in names.items() if k in t]
    extra = [f"{k} {v}*" for k, v in r.overrides.items() if k not in names]
    return (
        "recipe: "
        + ", ".join(parts + extra)
        + f"; threads {r.threads}"
        + ("  (* = command-line override)" if r.overrides else "")
    )


def macro_name(r: EncoderRun) -> str:
    """``macro (5/8 labels)``: how many labels the macro average covers (a range when folds differ)."""
    low, high = r.macro_labels()
    covered = str(low) if low == high else f"{low}-{high}"
    return f"macro ({covered}/{len(r.labels)} labels)"


def summary_table(r: EncoderRun) -> Table:
    """Rows are labels and the macro average; cells are mean ± std over folds in percent, like the paper.

    The columns are the metrics the task card asks for (all three are computed and stored regardless). The
    macro row says how many labels it averages: a label with one class in a test set has no AUC and is left
    out of that fold's macro average.
    """
    from clearbench.protocols.metrics import MACRO

    table = Table(
        title=markup(
            "[bold]{} · {}[/]  {}, {} folds, {} scans, {} patients",
            r.task,
            r.encoder,
            r.head,
            len(r.folds),
            r.n_scans,
            r.n_patients,
        ),
        title_justify="left",
        caption=f"test set, % mean ± std over folds\nrun {r.run_id}" + (f" · split {r.split_id}" if r.split_id else ""),
        caption_justify="left",
    )
    table.add_column("label")
    for m in r.metrics:
        table.add_column(m.upper(), justify="right")
    for name in [*r.labels, MACRO]:
        cells = [_cell(r.summary[m][name], len(r.folds)) for m in r.metrics]
        shown = f"[bold]{esc(macro_name(r))}[/]" if name == MACRO else esc(name)
        table.add_row(shown, *cells, end_section=name == r.labels[-1])
    return table


# The options of `clearbench run`, each with its type and help in one place.
TaskArg = Annotated[str, typer.Argument(help="Task name (see clearbench tasks) or a task card .toml file.")]
EncoderOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--encoder",
        "-e",
        help="Encoder to evaluate (repeatable); default: every encoder with embeddings of the task's dataset.",
    ),
]
RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root", help="Dataset root for the labels (default: config.toml, else the root used at embed time)."
    ),
]
SeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Seed for the splits and training (default: the task card's).")
]
RerunOpt = Annotated[
    bool, typer.Option("--rerun", help="Retrain every fold, even those finished under the same configuration.")
]
EpochsOpt = Annotated[int | None, training_option("max_epochs", "--epochs")]
LrOpt = Annotated[float | None, training_option("lr", "--lr")]
BatchSizeOpt = Annotated[int | None, training_option("batch_size", "--batch-size")]
PatienceOpt = Annotated[int | None, training_option("patience", "--patience")]
StandardizeOpt = Annotated[bool | None, training_option("standardize", "--standardize/--no-standardize")]
MinStepsOpt = Annotated[int | None, training_option("min_steps", "--min-steps")]
PaperRecipeOpt = Annotated[
    bool,
    typer.Option(
        "--paper-recipe",
        help="Train exactly as the paper: "
        + ", ".join(f"{k} {v}" for k, v in PAPER_TRAINING.items())
        + " (other flags still apply on top).",
    ),
]
MinTestPatientsOpt = Annotated[
    int | None,
    typer.Option(
        "--min-test-patients",
        min=1,
        help=f"Accept test sets of at least this many patients (default: the card's; {MIN_TEST_PATIENTS} when it says none).",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N, or auto.")]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help=f"CPU threads for training (default: {DEFAULT_THREADS}, measured fastest for these small heads; part of the configuration).",
    ),
]
StoreOpt = Annotated[Path | None, typer.Option("--store", help="The LanceDB store (default: CLEARBENCH_HOME/store).")]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Stop at the first bad input instead of reporting it and going on.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary per encoder instead of tables.")]
ResplitOpt = Annotated[bool, typer.Option("--resplit", help=RESPLIT_HELP)]
KeepSplitOpt = Annotated[bool, typer.Option("--keep-split", help=KEEP_SPLIT_HELP)]


def run(
    task: TaskArg,
    encoder: EncoderOpt = None,
    root: RootOpt = None,
    seed: SeedOpt = None,
    rerun: RerunOpt = False,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchSizeOpt = None,
    patience: PatienceOpt = None,
    standardize: StandardizeOpt = None,
    min_steps: MinStepsOpt = None,
    paper_recipe: PaperRecipeOpt = False,
    min_test_patients: MinTestPatientsOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    store: StoreOpt = None,
    strict: StrictOpt = False,
    json_out: JsonOpt = False,
    resplit: ResplitOpt = False,
    keep_split: KeepSplitOpt = False,
) -> None:
    """Train and evaluate TASK on stored embeddings; results go to the store, a summary to the terminal."""
    import torch

    from clearbench.protocols.run import run_task

    torch.set_num_threads(threads or DEFAULT_THREADS)
    given = {
        "lr": lr,
        "batch_size": batch_size,
        "patience": patience,
        "standardize": standardize,
        "min_steps": min_steps,
    }
    recipe = _recipe(paper_recipe, given)

    problems = command_problems(strict)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with LoggedProgress(*columns, console=err_console, transient=False, disable=json_out) as progress:
        results = run_task(
            task,
            encoder or None,
            root=root,
            seed=seed,
            rerun=rerun,
            epochs=epochs,
            device=device,
            store=store,
            progress=RichRunProgress(progress),
            problems=problems,
            resplit=resplit,
            keep_split=keep_split,
            training=recipe,
            min_test_patients=min_test_patients,
        )
    if not results:
        raise ClearbenchError(
            f"no encoder could run task {task}: each was skipped for the reason reported above; "
            "embed more scans or pass --encoder with one that has them"
        )
    if json_out:
        for r in results:
            print_json_line(run_json(r))
        return
    _say_runs(results)
    if threads is None:
        say(
            "threads: {}, the default (measured fastest for these heads, see README); pass --threads N to change it",
            DEFAULT_THREADS,
            err=True,
        )
    print_run_board(results, store)


def _recipe(paper: bool, given: Mapping[str, object]) -> dict[str, object]:
    """The training settings the command line asks for: the paper's with --paper-recipe, each option given on top."""
    recipe: dict[str, object] = dict(PAPER_TRAINING) if paper else {}
    recipe.update({k: v for k, v in given.items() if v is not None})
    return recipe


def run_json(r: EncoderRun) -> dict[str, object]:
    """One encoder's run as the JSON object `clearbench run --json` prints."""
    from clearbench.protocols.run import group_exclusions

    return {
        "task": r.task,
        "encoder": r.encoder,
        "run_id": r.run_id,
        "config_hash": r.config_hash,
        "n_scans": r.n_scans,
        "n_excluded": len(r.excluded),
        "excluded_by_reason": {reason: len(ids) for reason, ids in group_exclusions(r.excluded).items()},
        "folds_reused": r.reused,
        "split_id": r.split_id,
        "n_missing": len(r.missing),
        "missing": r.missing,
        "training": r.training,
        "overrides": r.overrides,
        "threads": r.threads,
        "warnings": r.warnings,
        "macro_labels": dict(zip(("min", "max"), r.macro_labels(), strict=True), of=len(r.labels)),
        "summary": r.summary_dict(),
    }


def _say_runs(results: Sequence[EncoderRun]) -> None:
    """The split's notes, then each encoder's warnings, exclusions (each line once), summary table and recipe."""
    from clearbench.protocols.run import exclusion_lines

    split = results[0].split
    if split is not None:
        for line in split_notes(split):
            say("[cyan]note:[/] {}", line, err=True)
    noted: set[str] = set()
    for r in results:
        for line in r.warnings:
            say("[yellow]warning:[/] {}", line, err=True)
        for line in exclusion_lines(r.excluded):
            if line not in noted:
                noted.add(line)
                say("[yellow]note:[/] {}", line, err=True)
        if r.reused:
            say(
                "{} · {}: reused finished folds {} (pass --rerun to retrain them)",
                r.task,
                r.encoder,
                ", ".join(map(str, r.reused)),
                err=True,
            )
        console.print(summary_table(r))
        say("{}", recipe_line(r))


def print_run_board(results: Sequence[EncoderRun], store: Path | None) -> None:
    """The task's leaderboard for the encoders just run, the runs just made (the full board is one command away)."""
    from clearbench.cli.leaderboard import terminal_board
    from clearbench.leaderboards import leaderboard

    task = results[0].task
    try:
        board = leaderboard(
            task, store=store, run=[r.run_id for r in results], encoders=[r.encoder for r in results], published=False
        )
    except ClearbenchError as exc:
        say("[yellow]note:[/] no leaderboard for this run: {}", exc, err=True)
        return
    console.print(terminal_board(board, compact=True))
    say("every encoder and the paper's rows: clearbench leaderboard {}", task)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
