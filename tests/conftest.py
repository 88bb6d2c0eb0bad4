"""Test-wide settings.

- Every test gets its own CLEARBENCH_HOME, so nothing touches the user's.
- torch runs one thread per test process: the suite runs in two xdist workers on two cores, and the models
  under test are tiny, so extra intra-op threads only oversubscribe the machine.
- The CLI consoles are wide, so table assertions do not depend on the terminal the tests run in.
"""

from __future__ import annotations

import pytest
import torch


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
