# chat-ingest: every target sets itself up (virtualenv, packages) on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)
SANDBOX_DIR ?= .sandbox

.PHONY: demo test unit lint sandbox-up sandbox-down ui cluster bench venv clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	# the build leaves egg-info beside the package; on sys.path (the plugins folder) it would make a
	# second copy of the distribution, and Airflow would load the plugin twice
	rm -rf plugins/chat_ingest.egg-info
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

## The main job: sandbox up, synthetic days, every ingestion DAG + reporting as real Airflow runs, summary.
demo: venv
	$(PY) -m sandbox.demo --dir $(SANDBOX_DIR)

## The whole test suite (starts its own sandbox servers; needs nothing running), after the linter.
test: lint
	$(PY) -m pytest

## The tests of pure logic (specs, windows, rules, parsing, config, the generator): no server, seconds.
unit: venv
	$(PY) -m pytest tests/unit

## ruff over the whole tree (its rules: pyproject.toml).
lint: venv
	$(PY) -m ruff check .

## Start the stand-ins; DATASET=path loads your own data (layout: sandbox/generator.py).
sandbox-up: venv
	$(PY) -m sandbox up --dir $(SANDBOX_DIR) $(if $(DATASET),--dataset $(DATASET))

sandbox-down:
	@if [ -x $(PY) ]; then $(PY) -m sandbox down --dir $(SANDBOX_DIR); else echo "sandbox not running"; fi

## The Airflow UI (http://localhost:$(PORT), login printed) over the sandbox's metadata DB, with a scheduler.
PORT ?= 8080
HOST ?= 127.0.0.1
ui: venv
	$(PY) -m sandbox.ui --dir $(SANDBOX_DIR) --port $(PORT) --host $(HOST) $(if $(DATASET),--dataset $(DATASET))

## The same on Airflow's CeleryExecutor: a Redis server and $(WORKERS) Celery workers on this machine.
WORKERS ?= 2
cluster: venv
	$(PY) -m sandbox.ui --executor celery --workers $(WORKERS) --dir $(SANDBOX_DIR) --port $(PORT) --host $(HOST) $(if $(DATASET),--dataset $(DATASET))

## Throughput and memory benchmarks against raw baselines (long: not part of `make test`).
bench: venv
	PYTHONPATH=plugins $(PY) -m bench

clean: sandbox-down
	rm -rf $(SANDBOX_DIR)
