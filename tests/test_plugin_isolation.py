"""The example plugin is a test fixture: visible to the test suite, never in a user's listings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from pathlib import Path

import pytest

PLUGIN = "clearbench-example-plugin"
TEST_PLUGINS = Path(sys.prefix) / "test-plugins"  # where make test installs it (see tests/conftest.py)


def _installed_in_the_venv() -> bool:
    """Whether an older ``make test`` installed the plugin into the venv itself (where users see it)."""
    try:
        where = distribution(PLUGIN).locate_file("")
    except PackageNotFoundError:
        return False
    return TEST_PLUGINS not in (where, *where.parents)


def test_the_suite_sees_the_example_plugin() -> None:
    assert "example" in {ep.name for ep in entry_points(group="clearbench.encoders")}
    assert "example-tiny" in {ep.name for ep in entry_points(group="clearbench.tasks")}


@pytest.mark.skipif(
    _installed_in_the_venv(),
    reason=f"{PLUGIN} is installed into this venv by an older make test; "
    f"`{sys.executable} -m pip uninstall -y {PLUGIN}` and run make test again",
)
def test_a_users_listings_do_not_show_the_example_plugin() -> None:
    """The CLI as a user runs it: the same interpreter, without the folder the tests add to the path."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(TEST_PLUGINS)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    for command, key in ((["encoders", "--json"], "name"), (["tasks", "--json"], "name")):
        out = subprocess.run(
            [sys.executable, "-m", "clearbench", *command], capture_output=True, text=True, env=env, check=True
        ).stdout
        names = [json.loads(line)[key] for line in out.splitlines() if line.startswith("{")]
        assert names and not [n for n in names if n.startswith("example")], names
