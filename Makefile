# lowbudget: everything a fresh machine needs, in two commands.
#   make demo   set up .venv, write 100 chest phantoms, train an effusion embedding on the embedded base, report
#   make test   set up .venv and run the test suite (CPU, offline, a few minutes)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A new folder per demo run, so a second `make demo` never overwrites the first.
DEMO_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup demo test clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: pip picks a CUDA build of torch"; \
	else \
		echo "no NVIDIA GPU: installing the CPU build torch==2.13.0"; \
		$(BIN)/pip install --quiet torch==2.13.0; \
	fi
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: setup
	$(BIN)/lowbudget phantoms chest --finding effusion -n 100 --format mixed --output $(DEMO_DIR)/phantoms
	$(BIN)/lowbudget train recipes/phantom/chest-ti.toml --data $(DEMO_DIR)/phantoms --output $(DEMO_DIR)/effusion-ti --quiet
	$(BIN)/lowbudget report $(DEMO_DIR)/effusion-ti/effusion.safetensors --finding effusion --output $(DEMO_DIR)/report

test: setup
	$(BIN)/python -m pytest

clean-venv:
	rm -rf $(VENV)
