# Two entry points, both safe on a fresh machine: they create .venv when missing and install the project.
#   make demo   the pipeline on a built-in synthetic cohort (core install)
#   make test   the test suite (core install plus the dev, merlin and sam2 extras and the example plugin);
#               installs Debian's chromium for the browser test when it is absent and the user is root
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CORE := $(VENV)/.clearbench-core
TEST := $(VENV)/.clearbench-test
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
$(TEST): $(CORE) tests/plugin/pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,merlin]' -e tests/plugin
	SAM2_BUILD_CUDA=0 $(PY) -m pip install --quiet --no-build-isolation -e '.[sam2]'
	touch $@

demo: $(CORE)
	CLEARBENCH_HOME=$(abspath $(DEMO_DIR))/home PATH=$(abspath $(VENV))/bin:$$PATH sh scripts/demo.sh $(abspath $(DEMO_DIR))

# Regenerates leaderboards/example/ (the committed example board) from a synthetic run in $(EXAMPLE_DIR).
board-example: $(CORE)
	CLEARBENCH_HOME=$(abspath $(EXAMPLE_DIR))/home PATH=$(abspath $(VENV))/bin:$$PATH sh scripts/board_example.sh $(abspath $(EXAMPLE_DIR)) leaderboards/example

test: $(TEST)
	sh scripts/ensure_chromium.sh
	$(PY) -m pytest -n 2 --durations=15

clean:
	rm -rf $(DEMO_DIR) $(EXAMPLE_DIR) .pytest_cache
