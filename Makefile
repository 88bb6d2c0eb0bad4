# Two entry points, both safe on a fresh machine: they create .venv when missing and install the project.
#   make demo   clearbench demo: pretrain, embed, evaluate and compare four encoders on a synthetic cohort
#               (core install; DEMO_ARGS=--quick for the short version)
#   make test   ruff (lint, then format check) and mypy, then the test suite (core install plus the dev, merlin and
#               sam2 extras; the example plugin goes into .venv/test-plugins, a folder only the tests put on the
#               path, so a user's listings never show it);
#               installs Debian's chromium for the browser test when it is absent and the user is root
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CORE := $(VENV)/.clearbench-core
TEST := $(VENV)/.clearbench-test
TEST_PLUGINS := $(VENV)/test-plugins
PLUGIN := $(TEST_PLUGINS)/.clearbench-example-plugin
DEMO_DIR ?= .demo
EXAMPLE_DIR ?= .board-example

.PHONY: demo test board-example clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'setuptools>=70.1'

$(CORE): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

# sam2 is an sdist whose build imports torch: build it against the torch just installed, without CUDA.
$(TEST): $(CORE)
	$(PY) -m pip install --quiet -e '.[dev,merlin]'
	SAM2_BUILD_CUDA=0 $(PY) -m pip install --quiet --no-build-isolation -e '.[sam2]'
	touch $@

# The example plugin is a test fixture: tests/conftest.py puts this folder on the path. A .venv made before
# it lived here has it installed into the venv itself, where every listing would show it: that copy goes.
$(PLUGIN): tests/plugin/pyproject.toml $(wildcard tests/plugin/clearbench_example_plugin/*.py tests/plugin/clearbench_example_plugin/*/*) | $(CORE)
	$(PY) -m pip uninstall --quiet --yes clearbench-example-plugin
	rm -rf $(TEST_PLUGINS)
	$(PY) -m pip install --quiet --no-deps --target $(TEST_PLUGINS) ./tests/plugin
	touch $@

# Everything the demo makes goes under DEMO_DIR, its CLEARBENCH_HOME included; a second run reuses it.
demo: $(CORE)
	$(PY) -m clearbench demo --out $(DEMO_DIR) $(DEMO_ARGS)

# Regenerates leaderboards/example/ (the committed example board) from a synthetic run in $(EXAMPLE_DIR).
board-example: $(CORE)
	CLEARBENCH_HOME=$(abspath $(EXAMPLE_DIR))/home PATH=$(abspath $(VENV))/bin:$$PATH sh scripts/board_example.sh $(abspath $(EXAMPLE_DIR)) leaderboards/example

# ruff and mypy read pyproject.toml; ruff's default excludes (.venv, build, dist, ...) and .gitignore keep it on
# our sources; mypy checks the package (clearbench/) with the strictness stated there.
test: $(TEST) $(PLUGIN)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy clearbench
	sh scripts/ensure_chromium.sh
	$(PY) -m pytest -n 2 --durations=15

clean:
	rm -rf $(DEMO_DIR) $(EXAMPLE_DIR) .pytest_cache
