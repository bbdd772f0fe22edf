# musicrec — the two commands: `make run` and `make test` (each installs first).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip's find-links/extra-index warnings on these machines are noise, not errors.
QUIET_PIP := sed -u '/is ignored: it is neither a file nor a directory/d'
# Two pytest workers (pytest-xdist): much of the suite waits on servers and schedulers, so two
# workers overlap those waits on 2 cores. A test file (and the whole e2e package, which shares one
# airflow standalone) runs on one worker; see tests/conftest.py. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
PYTEST_ARGS ?= $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))

.PHONY: help install run test services stop status airflow serve bench lint lock clean

help:
	@echo "make run       install, start the embedded engines, generate the sample, run the pipeline, print a summary"
	@echo "make test      install, then run the test suite (what CI runs)"
	@echo "make airflow   the Airflow UI (standalone) on http://127.0.0.1:8080 over the same data"
	@echo "make serve     the serving API and web page on http://127.0.0.1:8000 (foreground; Ctrl-C stops it)"
	@echo "make services  start SecantusDB (127.0.0.1:27117) and milvus-lite (127.0.0.1:19530)"
	@echo "make stop      stop everything the project started (by pid file)"
	@echo "make bench     run the benchmarks under bench/"
	@echo "make gpu-wheels download the wheels the GPU check carries (bench/gpu/wheels.txt) into .whl/"
	@echo "make lint      ruff"
	@echo "make lock      recompile requirements*.txt from requirements*.in (uv)"
	@echo "make clean     stop and delete data/ (the embedded stores and the lake)"

# Re-install only when a lock or the project metadata changed.
$(STAMP): requirements.txt requirements-local.txt pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "installing the locked requirements into $(VENV) (a few minutes the first time) ..."
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-local.txt 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install -q --no-deps -e . 2>&1 | $(QUIET_PIP)
	@touch $(STAMP)

install: $(STAMP)

run: install
	PYTHONUNBUFFERED=1 $(BIN)/python -m musicrec.local run

test: install
	PYTHONUNBUFFERED=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

services: install
	$(BIN)/python -m musicrec.local services

status: install
	$(BIN)/python -m musicrec.local status

stop:
	@if test -x $(BIN)/python; then $(BIN)/python -m musicrec.local stop; else echo "nothing to stop"; fi

airflow: install
	$(BIN)/python -m musicrec.local airflow

# The serving API (issue 16) over the embedded default: the engines are started if needed, then uvicorn
# runs in the foreground with the embedded default's settings (data/musicrec.env, as the workers get them).
SERVE_PORT ?= 8000
SERVE_WORKERS ?= 1
serve: install
	$(BIN)/python -m musicrec.local services
	@echo "serving on http://127.0.0.1:$(SERVE_PORT) (page /, OpenAPI /docs); a key: $(BIN)/python -m musicrec.serve keys create --name me --scopes read,events"
	set -a && . data/musicrec.env && set +a && exec $(BIN)/python -m musicrec.serve --host 127.0.0.1 \
	  --port $(SERVE_PORT) --workers $(SERVE_WORKERS)

bench: install
	$(BIN)/python bench/lake_import.py
	$(BIN)/python bench/lake_daily.py
	$(BIN)/python bench/als.py
	$(BIN)/python bench/lyrics.py
	$(BIN)/python bench/embeddings.py
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/serve.py
	@echo "bench/freshness.py needs a running 'make airflow' (after 'make run'): $(BIN)/python bench/freshness.py"

lint: install
	$(BIN)/ruff check .

lock:
	$(PY) -m pip install -q uv 2>&1 | $(QUIET_PIP)
	# uv prefers the pins already in the lock; "+cpu" keeps torch on the local CPU wheel (no CUDA deps).
	sed -i 's/^torch==\([0-9.]*\)$$/torch==\1+cpu/' requirements.txt
	$(PY) -m uv pip compile requirements.in -o requirements.txt --python-version 3.11 --find-links /opt/wheels --no-header
	sed -i 's/^torch==\(.*\)+cpu$$/torch==\1/' requirements.txt
	$(PY) -m uv pip compile requirements-local.in -o requirements-local.txt --python-version 3.11 --find-links /opt/wheels --no-header

clean: stop
	rm -rf data logs airflow.db

# --- GPU check (issue 19) ------------------------------------------------------------------------
# The wheels bench/gpu/run.sh installs on a lent GPU machine (Python 3.12, no registry there): cp312
# manylinux builds into the ignored .whl/, which the device call carries. Old wheels are removed first:
# two versions of one package stop the install there. See docs/operations.md ("The GPU check").
GPU_PIP ?= $(PY) -m pip
.PHONY: gpu-wheels
gpu-wheels:
	mkdir -p .whl
	rm -f .whl/*.whl
	$(GPU_PIP) download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
	  $$(grep -v '^#' bench/gpu/wheels.txt) 2>&1 | $(QUIET_PIP)
	@ls .whl/*.whl
	@du -ch .whl/*.whl | tail -1 | sed 's/total$$/in .whl (carried with the tree: keep it well under 64 MiB)/'
