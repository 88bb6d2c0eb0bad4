"""Test-wide settings: every test gets its own CLEARBENCH_HOME, so nothing touches the user's."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARBENCH_HOME", str(tmp_path_factory.mktemp("clearbench_home")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
