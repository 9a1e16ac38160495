# Compound-scaling harness. `make help` lists every target.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SCALE ?= cpu# cpu (Fashion-MNIST on this machine) | paper (ImageFolder on SLURM; set DATA=/path/to/imagenet)
DATA ?=
OUT ?= outputs
REPORTS ?= reports
SWEEP := $(PY) sweep.py -m paths.output_dir=$(OUT) train.progress=false
ifeq ($(SCALE),paper)
SWEEP += +preset=paper data.root=$(DATA) hydra/launcher=submitit_slurm
endif

.PHONY: help install test test-fast lint bench slurm-up slurm-down demo fig3 fig4 fig8 table2 table3 figures clean

help:  ## list targets
	@grep -hE '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $@

install: $(VENV)/.installed  ## create .venv with every dependency, and the Fashion-MNIST files where apt is available
	@if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "$$FASHION_MNIST_DIR" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	  else echo "note: no Fashion-MNIST files; run 'sudo apt-get install dataset-fashion-mnist', set FASHION_MNIST_DIR, or use data.download=true"; fi; fi

slurm-up:  ## start a one-node SLURM cluster here (munge, slurmctld, slurmd, slurmdbd + MariaDB); needs root
	bash .ci/slurm-up.sh

slurm-down:  ## stop that cluster
	bash .ci/slurm-down.sh

test: install slurm-up  ## the full test suite, as CI runs it (real training, real SLURM)
	$(PY) -m pytest -q

test-fast: install  ## tests without training runs or SLURM
	$(PY) -m pytest -q -m "not slow and not slurm"

lint: install  ## ruff
	$(VENV)/bin/ruff check scaling analysis hydra_plugins tests sweep.py

bench: install  ## trial training step vs a plain eager NCHW timm loop, overhead and peak memory
	$(PY) -m scaling.bench

clean:  ## remove outputs and reports (keeps .venv)
	rm -rf $(OUT) $(REPORTS) wandb
