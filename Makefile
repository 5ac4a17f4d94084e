# One-command set-up: `make test` and `make run` create the virtualenv and install everything.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# checkov (terraform checks) lives apart: its pins would fight the gateway's.
IAC_VENV := .venv-iac
IAC_STAMP := $(IAC_VENV)/.installed
REQUIREMENTS := requirements.txt gpu_worker/requirements.txt gpu_worker/constraints.txt \
  gpu_worker/requirements-asr.txt requirements-dev.txt cli/requirements.txt
MODEL ?=
RUNPOD ?=
PORT ?= 8080

export PYTHONPATH := $(CURDIR)

.PHONY: venv iac-venv test test-unit test-integration lint typecheck run bench soak fuzz clean

venv: $(STAMP)

$(STAMP): $(REQUIREMENTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -r gpu_worker/requirements-asr.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

iac-venv: $(IAC_STAMP)

$(IAC_STAMP): requirements-iac.txt
	@test -x $(IAC_VENV)/bin/python || $(PYTHON) -m venv $(IAC_VENV)
	$(IAC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(IAC_VENV)/bin/python -m pip install --quiet -r requirements-iac.txt
	@touch $@

## The whole suite: lint, types, unit, integration (emulators), end-to-end, and the Terraform
## checks (fmt where the binary exists, checkov, topology coverage).
test: venv iac-venv lint typecheck
	TTS_REQUIRE_IAC=1 $(PY) -m pytest

test-unit: venv
	$(PY) -m pytest tests/unit

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

## The local stack. MODEL=tiny uses the offline plumbing-only model (noise).
run: venv
	$(PY) -m infra.devstack --model "$(MODEL)" --port $(PORT) $(if $(RUNPOD),--runpod)

## Minutes of load on the local stack (hundreds of jobs, two worker kills); not in `make test`.
soak: venv
	$(PY) -m pytest -m soak -s tests/e2e/test_soak.py

## The lifecycle model (tests/integration/test_lifecycle_model.py) at length, random seeds; it
## prints its step count. `make test` runs a short, fixed-seed version of the same machine.
FUZZ_EXAMPLES ?= 300
FUZZ_STEPS ?= 60
fuzz: venv
	TTS_LIFECYCLE_RANDOM=1 TTS_LIFECYCLE_EXAMPLES=$(FUZZ_EXAMPLES) TTS_LIFECYCLE_STEPS=$(FUZZ_STEPS) \
		$(PY) -m pytest -s -o timeout=0 tests/integration/test_lifecycle_model.py

bench: venv
	$(PY) bench/routing_overhead.py
	$(PY) bench/prompt_cache.py
	$(PY) bench/speech.py
	$(PY) bench/cache.py
	$(PY) bench/batch.py
	$(PY) bench/verify.py
	$(PY) bench/engine.py

clean:
	rm -rf $(VENV) $(IAC_VENV) .build .cache .pytest_cache .mypy_cache .ruff_cache
