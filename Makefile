# Two entry points, both safe on a fresh machine: they create .venv when missing and install the project.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.clearbench-installed
DEMO_DIR ?= .demo

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml tests/plugin/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e tests/plugin
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	CLEARBENCH_HOME=$(abspath $(DEMO_DIR))/home PATH=$(abspath $(VENV))/bin:$$PATH sh scripts/demo.sh $(abspath $(DEMO_DIR))

test: $(STAMP)
	$(PY) -m pytest -n 2 --durations=15

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
