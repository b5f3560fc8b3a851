# Everyday targets. Everything runs from the repository's own .venv.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export PYTHONDONTWRITEBYTECODE ?= 1

.PHONY: setup crds settings lint test test-fast test-slow test-cluster demo bench kind-e2e clean help

# The control-plane tier's binaries (envtest convention): etcd, kube-apiserver, kube-controller-manager.
CLUSTER_ASSETS ?= $(or $(KUBEBUILDER_ASSETS),$(HOME)/.cache/kubepeft/kube-bin)

help:
	@echo "make setup      create .venv and install kubepeft with every extra (pinned CPU torch first)"
	@echo "make demo       build a tiny model, run examples/tiny-lora.yaml locally, verify artifacts"
	@echo "make test       the whole suite: fast, slow, and the control-plane tier when its binaries exist"
	@echo "make test-fast  the fast tier only"
	@echo "make test-cluster  the control-plane tier (real etcd + kube-apiserver; see docs/testing.md)"
	@echo "make lint       ruff + mypy + import contracts (plane boundaries) + shellcheck + hadolint"
	@echo "make crds       regenerate crds/ and the chart's CRD from the typed API"
	@echo "make settings   regenerate docs/settings.md from the planes' settings models"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make kind-e2e   kind cluster end to end (needs Docker)"

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==25.3"

setup: $(PY)
	# CPU torch first: a loose torch requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[operator,trainer,local,dev]"
	# the test-support package (its own distribution: never in the product's wheel or images)
	$(PY) -m pip install --quiet --no-deps -e testing

crds:
	$(PY) -m kubepeft crds --write

settings:
	$(PY) hack/settings_table.py --write

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
# the plane boundaries ([tool.importlinter] in pyproject.toml), run by the venv's interpreter so
# the packages are found wherever the venv's scripts point
	$(PY) -c "from importlinter.cli import lint_imports_command; lint_imports_command()" --no-logo
	$(VENV)/bin/shellcheck hack/*.sh .ci/run
	$(VENV)/bin/hadolint operator/Dockerfile trainer_image/Dockerfile trainer_image/Dockerfile.cpu

# pytest exits 5 when it collected no tests; make treats any non-zero exit as failure.
# The cluster tier runs once, in test-cluster: the other tiers exclude it.
test-fast:
	$(PY) -m pytest -m "not slow and not cluster" -q --durations=5

test-slow:
	$(PY) -m pytest -m "slow and not cluster" -q --durations=10

# Without the binaries the tier reports one skipped test saying how to get them; exit 5 (nothing
# collected, e.g. with a narrowing PYTEST_ADDOPTS) is not a failure of this tier.
test-cluster:
	KUBEBUILDER_ASSETS="$(CLUSTER_ASSETS)" $(PY) -m pytest tests/cluster -m cluster -q

test: test-fast test-slow
	@if [ -x "$(CLUSTER_ASSETS)/kube-apiserver" ] && [ -x "$(CLUSTER_ASSETS)/etcd" ]; then \
	  $(MAKE) --no-print-directory test-cluster; \
	else \
	  echo "control-plane tier skipped: no etcd/kube-apiserver in $(CLUSTER_ASSETS) (docs/testing.md says how to get them)"; \
	fi

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
	rm -rf .kubepeft build *.egg-info .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
