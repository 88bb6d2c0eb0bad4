"""The real CLI as a user runs it, in a subprocess, and the one-line error a bad input must give."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m clearbench ARGS`` with the test's environment (its CLEARBENCH_HOME)."""
    return subprocess.run([sys.executable, "-m", "clearbench", *args], capture_output=True, text=True, check=False)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The command's stderr, asserted to be exit code 1 and a single line without a traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    message = result.stderr.strip()
    assert "Traceback" not in message and "\n" not in message, message
    return message
