# TerraLens: two commands on a fresh machine.
#   make run   installs the app into .venv and starts it on http://localhost:8501
#              (another port: make run PORT=8502)
#   make test  installs the app, its test extras and the system packages the tests use,
#              then runs the whole test suite (unit, AppTest, real STAC API, real Chromium).
# Both are idempotent: a second call reinstalls nothing that is already there.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP_APP  := $(VENV)/.installed-app
STAMP_DEV  := $(VENV)/.installed-dev
PYTEST_ARGS ?=
# Port of `make run` (passed to streamlit as --server.port).
PORT ?= 8501
# The lock for this Python (constraints/py311.txt, py312.txt): the exact versions CI tested,
# the transitive stack (diffusers, timm, lightning, torchgeo …) included.
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d%d" % sys.version_info[:2])')
LOCK  := constraints/py$(PYVER).txt
PIP_LOCK := $(if $(wildcard $(LOCK)),-c $(LOCK),)

.PHONY: run test install install-dev system-deps lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=24"

$(STAMP_APP): pyproject.toml $(wildcard $(LOCK)) | $(PY)
	$(PY) -m pip install $(PIP_LOCK) -e .
	touch $@

$(STAMP_DEV): pyproject.toml $(wildcard $(LOCK)) | $(PY)
	$(PY) -m pip install $(PIP_LOCK) -e ".[dev,ray]"
	touch $@ $(STAMP_APP)

install: $(STAMP_APP)

install-dev: $(STAMP_DEV)

system-deps:
	bash tools/install-system-deps.sh

run: install
	$(VENV)/bin/streamlit run app/ui/main.py --server.port $(PORT)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile

test: system-deps install-dev lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/generate.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache test-artifacts
