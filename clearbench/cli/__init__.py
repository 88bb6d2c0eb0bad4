"""The ``clearbench`` command line: thin commands over the Python API, rendered with rich.

Each command group lives in its own module with a ``register(app)`` function. Heavy imports (torch,
lancedb) happen inside the commands, so ``clearbench --help`` stays instant.
"""

from __future__ import annotations

import sys
from importlib import import_module

import typer

from clearbench.cli.common import say, skipped_summary, state
from clearbench.errors import ClearbenchError, UsageError

# The exit codes every command keeps, so that a script can trust them.
EXIT_ERROR, EXIT_USAGE, EXIT_SKIPPED = 1, 2, 3
EXIT_CODES_HELP = (
    "Exit codes, the same for every command: 0 everything done; 1 an error stopped the command; "
    "2 a usage error; 3 done, but some inputs were skipped (each reported on an error line and listed at the end). "
    "--strict stops at the first bad input instead (exit code 1)."
)


def _exit_code(_result: object = None, **_params: object) -> None:
    """After a command that finished: exit code 3 when it went past bad inputs, with the list on stderr."""
    if state.skipped:
        say("[yellow]{}[/]", skipped_summary(), err=True)
        raise typer.Exit(EXIT_SKIPPED)


app = typer.Typer(
    name="clearbench",
    help="Frozen CT encoders, attention-MIL protocols and leaderboards (the CLEAR recipe).",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    result_callback=_exit_code,
)

# Command modules, in the order their commands appear in --help.
_COMMAND_MODULES = (
    "demo",
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
    "board",
    "pretrain",
    "leaderboard",
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    state.debug = debug
    state.skipped.clear()


for _name in _COMMAND_MODULES:
    import_module(f"clearbench.cli.{_name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: one-line errors unless --debug.

    typer runs in standalone mode, so usage errors, help, Ctrl-C and exit codes are handled as typer
    handles them (its click is vendored in recent versions, so clearbench does not catch click's classes);
    a :class:`ClearbenchError` passes through it and is printed here as one line, with exit code 1, or 2 for a
    :class:`UsageError` (a value no command can take, such as an invalid table name).
    """
    try:
        app(args=argv, prog_name="clearbench")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise  # a command that succeeded returns, so that callers in the same process go on
    except ClearbenchError as exc:
        if state.debug:
            raise
        say("[bold red]error:[/] {}", exc, err=True)
        sys.exit(EXIT_USAGE if isinstance(exc, UsageError) else EXIT_ERROR)
