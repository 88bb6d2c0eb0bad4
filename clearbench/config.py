"""Where clearbench keeps its state, and how dataset roots are found.

Everything lives under ``CLEARBENCH_HOME`` (default ``~/.clearbench``): ``config.toml``, user cards in
``encoders/`` and ``tasks/``, and the embedded LanceDB store in ``store/``. A command-line ``--root`` or
``--store`` always wins over the config file, so a script can be explicit without editing it.

``config.toml`` is read into :class:`ClearbenchConfig`, which refuses unknown keys: a typo such as
``[datasets.deeplesion] roots = ...`` is an error naming the key, not a setting silently ignored.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pydantic import Field

from clearbench.errors import ClearbenchError, InputError
from clearbench.settings import Settings, validate_settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib


def home() -> Path:
    """The clearbench home folder (``CLEARBENCH_HOME`` or ``~/.clearbench``); it may not exist yet."""
    env = os.environ.get("CLEARBENCH_HOME")
    return Path(env).expanduser() if env else Path.home() / ".clearbench"


def config_path() -> Path:
    return home() / "config.toml"


def read_toml(path: Path, what: str = "file") -> dict[str, Any]:
    """A TOML file as a dict; an unreadable or malformed file is an :class:`InputError` naming it."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise InputError(path, f"cannot read {what} ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"not valid TOML ({exc}); fix or remove the {what}") from None


class DatasetConfig(Settings):
    """``[datasets.NAME]``: where one dataset lives on this machine."""

    root: str | None = None  # the folder --root would name; ~ is expanded


class ClearbenchConfig(Settings):
    """``CLEARBENCH_HOME/config.toml``. ``[datasets] NAME = "DIR"`` is the short form of a ``root``."""

    datasets: dict[str, DatasetConfig | str] = Field(default_factory=dict)


def load_config() -> ClearbenchConfig:
    """The validated ``config.toml`` (all defaults when there is none); a bad key is one :class:`InputError`."""
    path = config_path()
    if not path.is_file():
        return ClearbenchConfig()
    hint = 'write one [datasets.NAME] root = "DIR" table per dataset'
    return validate_settings(ClearbenchConfig, read_toml(path, "config file"), path, hint=hint)


def dataset_roots() -> dict[str, Path]:
    """Dataset roots declared in ``config.toml`` as ``[datasets.NAME] root = "..."``."""
    roots: dict[str, Path] = {}
    for name, entry in load_config().datasets.items():
        root = entry if isinstance(entry, str) else entry.root
        if root is not None:
            roots[name] = Path(root).expanduser()
    return roots


def dataset_root(name: str, root: str | Path | None = None) -> Path:
    """The root folder of dataset ``name``: ``root`` if given, else the one in ``config.toml``."""
    path = Path(root).expanduser() if root is not None else dataset_roots().get(name)
    if path is None:
        raise ClearbenchError(
            f"no root folder for dataset '{name}': pass --root DIR, or add "
            f'[datasets.{name}] root = "DIR" to {config_path()}'
        )
    if not path.is_dir():
        raise ClearbenchError(f"{path}: dataset root for '{name}' is not a folder")
    return path


def store_path(store: str | Path | None = None) -> Path:
    """The LanceDB store folder: ``store`` if given, else ``CLEARBENCH_HOME/store``."""
    return Path(store).expanduser() if store is not None else home() / "store"


def user_card_dir(kind: str) -> Path:
    """The folder of the user's own cards of one kind (``encoders`` or ``tasks``)."""
    return home() / kind
