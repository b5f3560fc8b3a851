# Everyday targets. Everything runs from the repository's own .venv.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export PYTHONDONTWRITEBYTECODE ?= 1

.PHONY: setup crds lint test test-fast test-slow demo bench kind-e2e clean help

help:
	@echo "make setup      create .venv and install kubepeft with every extra (pinned CPU torch first)"
	@echo "make demo       build a tiny model, run examples/tiny-lora.yaml locally, verify artifacts"
	@echo "make test       the whole suite: fast tier, then the slow tier (training, e2e, faults)"
	@echo "make test-fast  the fast tier only"
	@echo "make lint       ruff + mypy + shellcheck + hadolint"
	@echo "make crds       regenerate crds/ and the chart's CRD from the typed API"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make kind-e2e   kind cluster end to end (needs Docker)"

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==25.3"

setup: $(PY)
	# CPU torch first: a loose torch requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[operator,trainer,local,dev]"

crds:
	$(PY) -m kubepeft crds --write

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/shellcheck hack/*.sh .ci/run
	$(VENV)/bin/hadolint operator/Dockerfile trainer_image/Dockerfile trainer_image/Dockerfile.cpu

# pytest exits 5 when it collected no tests; make treats any non-zero exit as failure.
test-fast:
	$(PY) -m pytest -m "not slow" -q

test-slow:
	$(PY) -m pytest -m "slow" -q

test: test-fast test-slow

demo: $(PY)
	@[ -x $(VENV)/bin/kubepeft ] || $(MAKE) setup
	$(PY) -m kubepeft demo

bench:
	$(PY) bench/storage_throughput.py
	$(PY) bench/trainer_overhead.py
	$(PY) bench/operator_scale.py
	$(PY) bench/task_switch.py

kind-e2e:
	bash hack/kind-e2e.sh

clean:
	rm -rf .kubepeft build *.egg-info .pytest_cache .mypy_cache .ruff_cache
