"""``clearbench pretrain``: train a backbone with MoCo v3 or LECL and register it as an encoder card.

The options are derived from :class:`~clearbench.pretraining.config.PretrainConfig`: its fields give each
option's type, default, lower bound and help, so a setting's default exists once. This module only says
which flags name which setting (the command's public interface), and splits the two ``(min, max)`` crop
ranges into two options each, as the command has always taken them.
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import typer
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from clearbench.cli.common import command_problems, print_json_line, say
from clearbench.pretraining.config import PretrainConfig

if TYPE_CHECKING:
    from clearbench.pretraining.run import PretrainResult


@dataclass(frozen=True)
class Flag:
    """The option(s) of one setting. ``end`` picks one end of a ``(min, max)`` setting, with its own help."""

    setting: str
    names: tuple[str, ...]
    end: int | None = None
    help: str | None = None

    @property
    def param(self) -> str:
        """The command's parameter name: the setting's, or the first flag's for one end of a range."""
        return self.setting if self.end is None else self.names[0].lstrip("-").replace("-", "_")


def _flag(setting: str, *names: str) -> Flag:
    return Flag(setting, names or ("--" + setting.replace("_", "-"),))


# Every setting on the command line, in the order `--help` shows them; ``buffer_size`` stays a Python API
# setting. ``progress`` is the one inverted flag: --no-progress.
FLAGS: tuple[Flag, ...] = (
    _flag("arch", "--arch", "-a"),
    _flag("method", "--method", "-m"),
    _flag("dataset", "--dataset", "-d"),
    _flag("lam"),
    _flag("root"),
    _flag("variant", "--variant", "--size"),
    _flag("epochs"),
    _flag("batch_size", "--batch-size", "-b"),
    _flag("lr"),
    _flag("warmup_epochs"),
    _flag("weight_decay"),
    _flag("tau"),
    _flag("momentum"),
    _flag("proj_dim"),
    _flag("mlp_dim"),
    _flag("image_size"),
    Flag("crop_scale", ("--crop-min",), 0, "Smallest random crop, as a fraction of the slice area."),
    Flag("crop_scale", ("--crop-max",), 1, "Largest random crop, as a fraction of the slice area."),
    Flag("lesion_scale", ("--lesion-crop-min",), 0, "Smallest lesion-centred crop (LECL), fraction of the slice area."),
    Flag("lesion_scale", ("--lesion-crop-max",), 1, "Largest lesion-centred crop (LECL), fraction of the slice area."),
    _flag("windows", "--window", "-w"),
    _flag("splits", "--split"),
    _flag("exclude_test_of"),
    _flag("store"),
    _flag("paper_name"),
    _flag("tag"),
    _flag("out", "--out", "-o"),
    _flag("seed"),
    _flag("workers", "--workers", "-j"),
    _flag("device"),
    _flag("precision"),
    _flag("cache"),
    _flag("cache_gb"),
    _flag("checkpoint_every"),
    _flag("stop_after"),
    _flag("strict"),
    Flag("progress", ("--no-progress",), help="No progress bar."),
)
FOLDERS = frozenset({"root", "store", "out"})  # settings kept as text, taken as paths


def _cli_type(flag: Flag, field: FieldInfo) -> Any:
    """The type typer parses: one end of a range is a float; names are repeated options; folders are paths."""
    if flag.end is not None:
        return float
    annotation: Any = field.annotation
    optional = get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)
    inner: Any = next(a for a in get_args(annotation) if a is not type(None)) if optional else annotation
    if get_origin(inner) is Annotated:
        inner = get_args(inner)[0]
    if get_origin(inner) is tuple:
        return list[str]
    if get_origin(inner) is Literal:
        inner = str  # checked by the model, so a bad value is the same one-line error as from Python
    if flag.setting in FOLDERS:
        inner = Path
    return inner | None if optional else inner


def _option(flag: Flag) -> inspect.Parameter:
    field = PretrainConfig.model_fields[flag.setting]
    default: Any = ... if field.default is PydanticUndefined else field.default
    if flag.end is not None:
        default = default[flag.end]
    elif flag.setting == "progress":
        default = not default
    elif isinstance(default, tuple) or (default is None and get_origin(_cli_type(flag, field)) is list):
        default = list(default or ())
    low: Any = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
    option = typer.Option(default, *flag.names, min=low, help=flag.help or field.description)
    return inspect.Parameter(
        flag.param, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=_cli_type(flag, field)
    )


def _signature() -> inspect.Signature:
    json_out = typer.Option(False, "--json", help="Print the result as one JSON object.")
    params = [_option(flag) for flag in FLAGS]
    params.append(inspect.Parameter("json_out", inspect.Parameter.KEYWORD_ONLY, default=json_out, annotation=bool))
    return inspect.Signature(params, return_annotation=None)


def settings_from(options: dict[str, Any]) -> dict[str, Any]:
    """The command's options as :class:`PretrainConfig` settings: ranges joined, lists as tuples, paths kept."""
    settings: dict[str, Any] = {}
    for flag in FLAGS:
        value = options[flag.param]
        if flag.end is not None:
            settings.setdefault(flag.setting, [None, None])[flag.end] = value
        elif flag.setting == "progress":
            settings["progress"] = not value
        elif isinstance(value, list):
            settings[flag.setting] = tuple(value)  # no --split at all: the model keeps no split filter
        else:
            settings[flag.setting] = value
    return {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}


def pretrain(**options: Any) -> None:
    """Pretrain a backbone with MoCo v3 or LECL and register it as an encoder card.

    Run the same command again to resume from the last checkpoint.

    Several GPUs or nodes: torchrun --nproc-per-node 4 -m clearbench pretrain ... (--batch-size is the global batch).

    At the end, clearbench embed --encoder <arch>-<method>-<tag> uses the trained backbone.
    """
    from clearbench.pretraining.run import pretrain as run_pretrain
    from clearbench.runtime import env_ranks

    main = env_ranks().rank == 0
    json_out = bool(options.pop("json_out"))
    settings = settings_from(options)
    settings["progress"] = main and settings["progress"] and not json_out
    problems = command_problems(settings["strict"], show=main, record=main)
    result = run_pretrain(problems=problems, **settings)
    if main:
        _report(result, len(problems.errors), json_out)


pretrain.__signature__ = _signature()  # type: ignore[attr-defined]  # typer reads the options from it


def _report(result: PretrainResult, skipped: int, json_out: bool) -> None:
    """What rank 0 prints at the end: one JSON object, or where the weights and card are and what is next."""
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
                "skipped_scans": skipped,
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
    if skipped:
        say("  [yellow]{} input error(s)[/]: those scans or slices were left out (see above)", skipped)
    say("next: clearbench embed --encoder {} --dataset <dataset>", result.card_name)


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)
