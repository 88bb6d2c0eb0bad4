"""Test-wide settings.

- Every test gets its own CLEARBENCH_HOME, so nothing touches the user's.
- torch runs one thread per test process: the suite runs in two xdist workers on two cores, and the models
  under test are tiny, so extra intra-op threads only oversubscribe the machine.
- The CLI consoles are wide, so table assertions do not depend on the terminal the tests run in.
- The example plugin (tests/plugin) is installed by ``make test`` into ``.venv/test-plugins``, a folder only the
  tests put on the path (here, and on PYTHONPATH for the CLI run as a subprocess): a user's ``clearbench
  encoders`` or ``clearbench tasks`` in the same venv never lists a test fixture.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

TEST_PLUGINS = Path(sys.prefix) / "test-plugins"


def _put_test_plugins_on_the_path() -> None:
    if not TEST_PLUGINS.is_dir() or str(TEST_PLUGINS) in sys.path:
        return
    sys.path.append(str(TEST_PLUGINS))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(TEST_PLUGINS)) if p)


_put_test_plugins_on_the_path()


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARBENCH_HOME", str(tmp_path_factory.mktemp("clearbench_home")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    from clearbench.cli import common

    monkeypatch.setattr(common.console, "width", 200)
    monkeypatch.setattr(common.err_console, "width", 200)


@pytest.fixture(scope="session")
def deeplesion_runs(tmp_path_factory: pytest.TempPathFactory):
    """Two encoders' finished runs of task1 and a second DeepLesion task on one synthetic cohort (see
    tests/deeplesion_runs.py); built once per test process, read-only for the tests that use it."""
    from deeplesion_runs import two_encoder_run

    return two_encoder_run(tmp_path_factory.mktemp("deeplesion_runs"), n_scans=24, epochs=3, second_task=True)
