"""The ``clearbench`` command line: thin commands over the Python API, rendered with rich.

Each command group lives in its own module with a ``register(app)`` function. Heavy imports (torch,
lancedb) happen inside the commands, so ``clearbench --help`` stays instant.
"""

from __future__ import annotations

import sys
from importlib import import_module

import typer

from clearbench.cli.common import err_console, state
from clearbench.errors import ClearbenchError

app = typer.Typer(
    name="clearbench",
    help="Frozen CT encoders, attention-MIL protocols and leaderboards (the CLEAR recipe).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Command modules, in the order their commands appear in --help.
_COMMAND_MODULES = (
    "doctor",
    "synth",
    "scans",
    "encoders",
    "embed",
    "store",
    "tasks",
    "splits",
    "run",
    "explain",
    "pretrain",
    "leaderboard",
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    state.debug = debug


for _name in _COMMAND_MODULES:
    import_module(f"clearbench.cli.{_name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: one-line errors unless --debug.

    typer runs in standalone mode, so usage errors, help, Ctrl-C and exit codes are handled as typer
    handles them (its click is vendored in recent versions, so clearbench does not catch click's classes);
    a :class:`ClearbenchError` passes through it and is printed here as one line.
    """
    try:
        app(args=argv, prog_name="clearbench")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise  # a command that succeeded returns, so that callers in the same process go on
    except ClearbenchError as exc:
        if state.debug:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
