# Compound-scaling harness. `make help` lists every target.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SCALE ?= cpu# cpu: CPU presets on Fashion-MNIST, here | paper: full B0 on ImageNet (DATA=/path) via SLURM
DATA ?=
OUT ?= outputs
REPORTS ?= reports
SWEEP := $(PY) sweep.py -m paths.output_dir=$(OUT) train.progress=false
ifeq ($(SCALE),paper)
STUDY := preset=paper data.root=$(DATA)
RUN := $(SWEEP) $(STUDY)
DEPTHS := 2.0,3.0,4.0,6.0,8.0
WIDTHS := 1.4,1.8,2.6,3.8,5.0
RESOLUTIONS := 1.3,1.5,1.7,1.9,2.2,2.5
PHIS := 0,1,2,3,4,5,6,7
TRANSFER_PHIS := 2,3
RACE_SEEDS := 6
STAR_SEEDS := 0,1,2
PHI1 ?= 1
TABLE3_MODELS := mobilenetv2,resnet50
SEEDS := 0,1,2
else
# two trials at a time, one thread each (more images/s than one 2-thread trial; make bench), in two
# warm worker processes that run trial after trial
STUDY := train=demo
RUN := $(SWEEP) $(STUDY) hydra/launcher=local hydra.launcher.warm=true hydra.launcher.max_parallel=2 \
  hydra.launcher.cpus_per_task=1
DEPTHS := 2.0,3.0
WIDTHS := 1.4,1.8
RESOLUTIONS := 1.2,1.4
PHIS := 0,1,2
TRANSFER_PHIS := 2
RACE_SEEDS := 3
STAR_SEEDS := 0# seeds of the star sweep's φ = 1 levels (its φ = 2 levels are the transfer's, all seeds)
PHI1 ?=# set PHI1=1 to add the compound strategies at φ = 1 (STAR_SEEDS) to the Figure 8 analogue
TABLE3_MODELS := mobilenetv2_cpu,resnet18_cpu
SEEDS := 0,1,2
endif
S := $(OUT)/sweeps
REPORT := $(PY) -m analysis.report

.PHONY: help install test test-fast lint bench gpu-check slurm-up slurm-down demo demo-pooled frontier transfer fig3 fig4 fig8 table2 table3 figures clean

help:  ## list targets
	@grep -hE '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $@

# $(call apt_install,PACKAGE): install a Debian package quietly, running apt-get update first only if that fails
apt_install = (apt-get install -y -qq $(1) || (apt-get update -qq && apt-get install -y -qq $(1))) >/dev/null

install: $(VENV)/.installed  ## create .venv with every dependency; Fashion-MNIST files and tcmalloc where apt is available
	@if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "$$FASHION_MNIST_DIR" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    $(call apt_install,dataset-fashion-mnist); \
	  else echo "note: no Fashion-MNIST files; run 'sudo apt-get install dataset-fashion-mnist', set FASHION_MNIST_DIR, or use data.download=true"; fi; fi
	@if ! ls /usr/lib/*/libtcmalloc_minimal.so.4 >/dev/null 2>&1 && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  $(call apt_install,libtcmalloc-minimal4) \
	  || echo "note: no tcmalloc; local trials use the default malloc (about 5-9% slower)"; fi

slurm-up:  ## start a one-node SLURM cluster here (munge, slurmctld, slurmd, slurmdbd + MariaDB); needs root
	bash .ci/slurm-up.sh

slurm-down:  ## stop that cluster
	bash .ci/slurm-down.sh

test: install slurm-up  ## the full test suite, as CI runs it (real training, real SLURM)
	$(PY) -m pytest -q --durations=25

test-fast: install  ## tests without training runs or SLURM
	$(PY) -m pytest -q -m "not slow and not slurm"

lint: install  ## ruff
	$(VENV)/bin/ruff check scaling analysis hydra_plugins tools tests sweep.py

bench: install  ## trial training step vs a plain eager NCHW timm loop, overhead and peak memory
	$(PY) -m tools.bench

gpu-check: install  ## on a GPU machine: bench, SIGKILL + resume, nccl trial, cost probe, one table (no GPU: tiny, on CPU)
	$(PY) -m tools.gpu_check --out $(OUT)/gpu_check

SEEDS_FROM ?= 0# make demo SEEDS_FROM=3: the same study on seeds 3.. (its own folders), to replicate the answer
DEMO := compound_grid$(if $(filter-out 0,$(SEEDS_FROM)),_seeds$(SEEDS_FROM))
DEMO_SEEDS := $(shell seq -s, $(SEEDS_FROM) $$(($(SEEDS_FROM) + $(RACE_SEEDS) - 1)))
BASELINE = sweep=baseline name=baseline_$(DEMO) seed=$(DEMO_SEEDS)
# on CPU every equal-cost point on every seed, not a race: a race tests only from 3 seeds, so at 3 seeds it could
# stop nothing, and its one test would run at the race's calibrated level (docs/analysis.md); paper scale races
ifeq ($(SCALE),paper)
DEMO_STUDY = hydra/sweeper=race hydra.sweeper.race.max_seeds=$(RACE_SEEDS) hydra.sweeper.race.first_seed=$(SEEDS_FROM) \
  "hydra.sweeper.race.alongside='$(BASELINE)'"
else
DEMO_STUDY = seed=$(DEMO_SEEDS)
endif
demo: install  ## the main job: the φ=1 grid on 3 seeds, calm recipe; confidence set, σ, MDD, the optimum's region, figures
	@date +"demo started %T"
	-$(RUN) sweep=compound_grid name=$(DEMO) $(DEMO_STUDY)
	-$(RUN) $(BASELINE)
	$(REPORT) $(S)/$(DEMO) --baseline $(S)/baseline_$(DEMO) --out $(REPORTS)/$(subst compound_grid,demo,$(DEMO)) --wandb
	@date +"demo finished %T"

# the demo on seeds 0 .. 2R-1 (R = RACE_SEEDS): `make demo` and `make demo SEEDS_FROM=R`, pooled (analysis/pool.py);
# each run trains only what its folder lacks (nothing, once finished)
POOLED := compound_grid compound_grid_seeds$(RACE_SEEDS)
demo-pooled: install  ## the demo on seeds 0-5: both demo runs (each trains only what is missing), one pooled answer
	$(MAKE) demo SEEDS_FROM=0
	$(MAKE) demo SEEDS_FROM=$(RACE_SEEDS)
	$(REPORT) $(addprefix $(S)/,$(POOLED)) --baseline $(addprefix $(S)/baseline_,$(POOLED)) --out $(REPORTS)/demo-pooled

# the recipe frontier (docs/results/demo.md): cheaper demo recipes, each on 5 seeds at 3 equal-cost grid points
# ((1.0, 1.2) and (1.4, 1.1) in one sweep, (1.2, 1.15) in another); variant = LABEL:overrides (commas as ;)
FRONTIER_VARIANTS ?= cheap: clip1:train.clip_grad=1.0 ema:train.ema=0.99;train.ema_warmup=true \
  lr025:train.lr=0.025 warm50:train.warmup_fraction=0.5 clip5:train.clip_grad=5.0
FRONTIER := $(SWEEP) sweep=compound_grid train=demo logger=none hydra/launcher=local hydra.launcher.warm=true \
  hydra.launcher.max_parallel=2 hydra.launcher.cpus_per_task=1 train.train_images=6000 data.test_images=1000 \
  seed=0,1,2,3,4
frontier: install  ## cheaper recipes' seed noise and collapses against their cost, vs the demo's -> reports/frontier.md
	@for v in $(FRONTIER_VARIANTS); do label=$${v%%:*}; extra=$$(echo "$${v#*:}" | tr ';' ' '); \
	  $(FRONTIER) name=frontier_$${label}_a scaling.alpha=1.0,1.4 scaling.beta=1.2,1.1 $$extra || exit 1; \
	  $(FRONTIER) name=frontier_$${label}_b scaling.alpha=1.2 scaling.beta=1.15 $$extra || exit 1; done
	mkdir -p $(REPORTS)
	$(PY) -m tools.frontier calm=docs/results/demo-2026-12-07-records.csv --seeds 0,1,2,3,4 \
	  --points 1.0/1.2,1.2/1.15,1.4/1.1 $(foreach v,$(FRONTIER_VARIANTS),$(firstword $(subst :, ,$(v)))=$(S)/frontier_$(firstword $(subst :, ,$(v)))_a,$(S)/frontier_$(firstword $(subst :, ,$(v)))_b) \
	  | tee $(REPORTS)/frontier.md

TRANSFER := $(REPORTS)/transfer
comma := ,
space := $(subst ,, )
commas = $(subst $(space),$(comma),$(strip $(1)))
SEARCH = hydra.searchpath=[file://$(abspath $(TRANSFER))/conf]
TRANSFER_RUN = $(RUN) sweep=transfer '$(SEARCH)' seed=$(SEEDS)
TARGET_PHIS := $(subst $(comma), ,$(TRANSFER_PHIS))
# the cost-matched single dimensions: at φ = 1 (STAR_SEEDS only) the star sweep's lower levels; at each
# target φ the table's rows and the star sweep's upper levels
SINGLES := baseline_phi0 $(foreach p,1 $(TARGET_PHIS),depth_phi$(p) width_phi$(p) resolution_phi$(p))
COMPOUNDS := $(foreach p,$(if $(PHI1),1) $(TARGET_PHIS),selected_phi$(p) paper_phi$(p) uniform_phi$(p) star_phi$(p))
STRATEGY_FILES = $(PY) -m tools.strategies --fit $(REPORTS)/demo/fit.json --phi 1,$(TRANSFER_PHIS) \
  --only-seeds 1:$(STAR_SEEDS) --out $(TRANSFER)/conf
transfer: install  ## after demo: do the chosen coefficients beat single dimensions at equal measured cost? -> reports/transfer
	@test -f $(REPORTS)/demo/fit.json || { echo "error: $(REPORTS)/demo/fit.json not found; run 'make demo' first" >&2; exit 2; }
	@date +"transfer started %T"
	mkdir -p $(TRANSFER)
	$(STRATEGY_FILES) $(STUDY)
	-$(TRANSFER_RUN) transfer=$(call commas,$(SINGLES))
	$(PY) -m analysis.star $(S)/transfer > $(TRANSFER)/star.json
	$(STRATEGY_FILES) --star $(TRANSFER)/star.json $(STUDY)
	-$(TRANSFER_RUN) transfer=$(call commas,$(COMPOUNDS))
	$(PY) -m analysis.transfer $(S)/transfer --out $(TRANSFER)
	@date +"transfer finished %T"

fig3: install  ## paper Fig. 3: depth, width, resolution scaled one at a time -> reports/fig3
	-$(RUN) sweep=baseline
	-$(RUN) sweep=depth scaling.depth=$(DEPTHS)
	-$(RUN) sweep=width scaling.width=$(WIDTHS)
	-$(RUN) sweep=resolution scaling.resolution=$(RESOLUTIONS)
	$(REPORT) $(S)/baseline $(S)/depth $(S)/width $(S)/resolution --out $(REPORTS)/fig3 --only accuracy_vs_flops --name fig3_single_dimension

fig4: install  ## paper Fig. 4: width scaling at (d, r) in {1,2} x {1,1.3} -> reports/fig4
	-$(RUN) sweep=width_at_depth_resolution
	$(REPORT) $(S)/width_at_depth_resolution --out $(REPORTS)/fig4 --only fig4

fig8: install  ## paper Fig. 8: the four scaling methods from one baseline, incl. compound φ sweep -> reports/fig8
	-$(RUN) sweep=baseline
	-$(RUN) sweep=depth scaling.depth=$(DEPTHS)
	-$(RUN) sweep=width scaling.width=$(WIDTHS)
	-$(RUN) sweep=resolution scaling.resolution=$(RESOLUTIONS)
	-$(RUN) sweep=compound_scale scaling.phi=$(PHIS)
	$(REPORT) $(S)/baseline $(S)/depth $(S)/width $(S)/resolution $(S)/compound_scale --out $(REPORTS)/fig8 \
	  --only accuracy_vs_flops --name fig8_scaling_methods

table2: install  ## paper Table 2 analogue: B0-B7 params and FLOPs as built vs paper (no training) -> reports/table2
	$(PY) -m tools.table2 --out $(REPORTS)/table2

table3: install  ## paper Table 3 analogue: MobileNetV2 / ResNet scaled by d=4, w=2, r=2 and compound -> reports/table3
	-$(RUN) sweep=table3 model=$(TABLE3_MODELS)
	$(REPORT) $(S)/table3 --out $(REPORTS)/table3 --only table3

figures: fig3 fig4 fig8 table2 table3  ## all of the above

clean:  ## remove outputs and reports (keeps .venv)
	rm -rf $(OUT) $(REPORTS) wandb
