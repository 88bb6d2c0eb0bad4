"""Errors a user can act on.

Anything raised as a :class:`ClearbenchError` is shown by the CLI as one line, without a traceback
(unless ``--debug``), so its message must say what went wrong and what to do next.
"""

from __future__ import annotations

from pathlib import Path


class ClearbenchError(Exception):
    """An error caused by the user's input or environment, with a message meant for them."""


class UsageError(ClearbenchError):
    """The command was called with a value it cannot take (the CLI exits with code 2, as for a bad option)."""


class InputError(ClearbenchError):
    """One bad input file: the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MissingExtraError(ClearbenchError):
    """An optional backend is not installed; the message names the pip command that installs it."""

    def __init__(self, extra: str, what: str) -> None:
        self.extra = extra
        super().__init__(f"{what} needs the '{extra}' extra: pip install 'clearbench[{extra}]'")
