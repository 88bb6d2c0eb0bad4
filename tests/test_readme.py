"""The README is run as written: its two opening commands, and its encoder-plugin example.

The plugin example is the recipe a user copies to add an architecture, so it is extracted from README.md
here (every fenced block whose first line names a file under ``tinyconv-plugin/``), installed with pip
(non-editable, into a folder of its own, never into the test environment), and used in a fresh
interpreter exactly as the README's Python block uses it, then held to the family contract by
``clearbench encoders check``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PLUGIN = "tinyconv-plugin"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(lang: str | None = None) -> list[str]:
    return [body for kind, body in _FENCE.findall(README.read_text(encoding="utf-8")) if lang in (None, kind)]


def _plugin_files() -> dict[str, str]:
    files = {}
    for body in _blocks():
        first, _, _ = body.partition("\n")
        name = first.lstrip("# ").strip()
        if name.startswith(PLUGIN + "/"):
            files[name] = body
    return files


def test_the_opening_commands_are_make_targets_and_ci_runs_the_tests() -> None:
    opening = _blocks("sh")[0]
    commands = [line.split("#", 1)[0].split() for line in opening.splitlines() if line.strip()]
    assert commands == [["make", "demo"], ["make", "test"]]
    assert "# creates .venv if missing" in opening.splitlines()[0]
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, re.M), f"no `{target}` target in the Makefile"

    # What each target would run, without running it: the demo command, and the suite through pytest.
    def dry(target: str) -> str:
        return subprocess.run(
            ["make", "-n", "-C", str(REPO), target], capture_output=True, text=True, check=True
        ).stdout

    assert re.search(r"-m clearbench demo\b", dry("demo"))
    assert re.search(r"-m pytest\b", dry("test"))
    assert ["make", "test"] in [_command(line) for line in (REPO / ".ci" / "run").read_text().splitlines()]


def _command(line: str) -> list[str]:
    """A shell line's words without its comment and the ``NAME=value`` assignments in front."""
    words = shlex.split(line, comments=True)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)
    return words


def test_the_plugin_example_has_every_file_it_needs() -> None:
    files = _plugin_files()
    assert set(files) == {
        f"{PLUGIN}/pyproject.toml",
        f"{PLUGIN}/clearbench_tinyconv/__init__.py",
        f"{PLUGIN}/clearbench_tinyconv/cards/tinyconv-random.toml",
        f"{PLUGIN}/clearbench_tinyconv/cards/tinyconv-mine.toml",
    }
    pyproject = files[f"{PLUGIN}/pyproject.toml"]
    assert '[project.entry-points."clearbench.encoders"]' in pyproject
    assert 'clearbench_tinyconv = ["cards/*.toml"]' in pyproject


def _write_plugin(root: Path, drop_package_data: bool = False) -> Path:
    for name, body in _plugin_files().items():
        text = body
        if drop_package_data and name.endswith("pyproject.toml"):
            text = re.sub(r"\[tool\.setuptools\.package-data\]\n[^\n]*\n", "", body)
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / PLUGIN


def _install(source: Path, target: Path) -> None:
    """``pip install`` as the README says, but into ``target`` and without the network or build isolation."""
    [install] = next(line for line in _blocks("sh") if "pip install ./" + PLUGIN in line).splitlines()[:1]
    assert shlex.split(install)[1:] == ["install", f"./{PLUGIN}"]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def _run_readme_python(site: Path, home: Path) -> subprocess.CompletedProcess[str]:
    [snippet] = [body for body in _blocks("python") if 'load_encoder("tinyconv-random")' in body]
    return subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, env=_env(site, home), cwd=home, check=False
    )


def _env(site: Path, home: Path) -> dict[str, str]:
    """The plugin's install folder and this checkout on the path, in a home of the test's own."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "CLEARBENCH_HOME": str(home)}


@pytest.mark.slow
def test_the_plugin_example_installs_and_loads_through_the_registry(tmp_path: Path) -> None:
    source = _write_plugin(tmp_path / "src")
    site = tmp_path / "site"
    _install(source, site)
    assert (site / "clearbench_tinyconv" / "cards" / "tinyconv-random.toml").is_file()
    home = tmp_path / "home"
    home.mkdir()
    result = _run_readme_python(site, home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tinyconv-random", "(2,", "32)", "random:0"]
    check = subprocess.run(
        [sys.executable, "-m", "clearbench", "encoders", "check", "tinyconv-random", "--json"],
        capture_output=True,
        text=True,
        check=False,
        env=_env(site, home),
        cwd=home,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    # The same package without its package-data table installs no cards, so the encoder is unknown: the
    # table is what the recipe needs, and the test above would catch a README that lost it.
    bare = _write_plugin(tmp_path / "bare", drop_package_data=True)
    _install(bare, tmp_path / "bare-site")
    assert not (tmp_path / "bare-site" / "clearbench_tinyconv" / "cards").exists()
    failed = _run_readme_python(tmp_path / "bare-site", home)
    assert failed.returncode != 0 and "unknown encoder 'tinyconv-random'" in failed.stderr
