# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXAMPLES := $(sort $(wildcard examples/*.py))

.PHONY: demo test bench schemas clean

# A strict editable install: site-packages gets a plain path to links to the
# package's files, which mypy follows from any directory (the default install
# is an import hook, which it cannot follow). A module added to or removed from
# netmcore/ changes the directory, and the links are made again.
$(STAMP): pyproject.toml Makefile netmcore
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=strict
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/nqueens.py

# Per-test timeouts are in pyproject.toml; `timeout` bounds a hang they cannot end.
test: $(STAMP)
	timeout -k 10 900 $(PY) -m pytest
	$(PY) -m mypy
	$(PY) -m ruff check netmcore tests examples
	$(PY) -m ruff format --check netmcore tests examples
	$(PY) -m netmcore schemas $(EXAMPLES) --out schemas --exact --check

schemas: $(STAMP)
	$(PY) -m netmcore schemas $(EXAMPLES) --out schemas --exact

bench: $(STAMP)
	$(PY) -m netmcore bench

clean:
	rm -rf $(VENV) build *.egg-info
