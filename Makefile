# lowbudget: everything a fresh machine needs, in two commands.
#   make demo   set up .venv, write 100 chest phantoms, train an effusion embedding on the embedded base, report
#   make test   set up .venv and run the test suite (CPU, offline, a few minutes)
#   make test-slow  the tests that take minutes, left out of `make test` (CI runs both)
# and, for maintainers, deliberate upgrades:
#   make lock         re-resolve requirements.lock (exact versions + hashes) from pyproject.toml's ranges
#   make test-latest  the suite in a throw-away venv with the newest releases those ranges allow
#   make test-oldest  the same with the oldest releases they allow (the lower bounds)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# torch is installed on its own, before the lock: its build depends on the machine (see README).
TORCH_VERSION ?= 2.13.0
UV_VERSION ?= 0.13.9
LATEST_VENV ?= .venv-latest
OLDEST_VENV ?= .venv-oldest
# A new folder per demo run, so a second `make demo` never overwrites the first.
DEMO_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup demo test test-slow lock lock-upgrade test-latest test-oldest clean-venv

setup: $(STAMP)

# install-torch VENV: the CPU build (the wheel pip finds for torch==TORCH_VERSION here) without its
# dependencies, which the lock pins; on an NVIDIA machine pip's CUDA build with its CUDA libraries.
# A torch already in the venv (a CUDA build you chose) is kept.
define install-torch
	@if $(1)/bin/python -c "import torch" >/dev/null 2>&1; then \
		echo "keeping the torch already in $(1)"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing a CUDA build of torch==$(TORCH_VERSION)"; \
		$(1)/bin/pip install --quiet torch==$(TORCH_VERSION); \
	else \
		echo "no NVIDIA GPU: installing the CPU build torch==$(TORCH_VERSION)"; \
		$(1)/bin/pip install --quiet --no-deps torch==$(TORCH_VERSION); \
	fi
endef

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(call install-torch,$(VENV))
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

demo: setup
	$(BIN)/lowbudget phantom images chest --finding effusion -n 100 --format mixed --output $(DEMO_DIR)/phantoms
	$(BIN)/lowbudget train recipes/phantom/chest-ti.toml --data $(DEMO_DIR)/phantoms --output $(DEMO_DIR)/effusion-ti
	$(BIN)/lowbudget phantom report $(DEMO_DIR)/effusion-ti/effusion.safetensors --finding effusion --output $(DEMO_DIR)/report

test: setup
	$(BIN)/python -m pytest

# The tests that take minutes (marked slow), which `make test` leaves out; CI runs them too.
test-slow: setup
	$(BIN)/python -m pytest -m slow

lock: setup
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/python tools/lock.py make --torch $(TORCH_VERSION) --uv $(BIN)/uv

lock-upgrade: setup
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/python tools/lock.py make --torch $(TORCH_VERSION) --uv $(BIN)/uv --upgrade

# throwaway-suite VENV INSTALL: the suite in a venv of its own (never .venv), torch as in setup, the rest
# by INSTALL; prints how the versions differ from the lock, and removes the venv whatever the outcome.
define throwaway-suite
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(call install-torch,$(1))
	echo "torch==$(TORCH_VERSION)" > $(1)/torch-pin.txt
	$(2)
	@echo "installed, against $(LOCK):"
	@$(1)/bin/python tools/lock.py drift --python $(1)/bin/python
	$(1)/bin/python -m pytest -p no:cacheprovider; status=$$?; rm -rf $(1); \
		echo "$@: pytest exit status $$status"; exit $$status
endef

# The newest releases pyproject.toml's ranges allow.
test-latest:
	$(call throwaway-suite,$(LATEST_VENV),$(LATEST_VENV)/bin/pip install --quiet --upgrade --upgrade-strategy eager -c $(LATEST_VENV)/torch-pin.txt -e ".[test,federate]")

# The oldest releases the ranges allow for lowbudget's own dependencies (uv's lowest-direct resolution).
test-oldest:
	$(call throwaway-suite,$(OLDEST_VENV),$(OLDEST_VENV)/bin/pip install --quiet uv==$(UV_VERSION) && $(OLDEST_VENV)/bin/uv pip install --quiet -p $(OLDEST_VENV)/bin/python --resolution lowest-direct -c $(OLDEST_VENV)/torch-pin.txt -e ".[test,federate]")

clean-venv:
	rm -rf $(VENV)
