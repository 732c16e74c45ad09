# The two front doors: `make demo` and `make test`. Both set up .venv from nothing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export DS_ACCELERATOR ?= cpu
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONUNBUFFERED := 1

.PHONY: install demo test bench icl-curriculum clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and exactly: the CPU wheel on these machines, never a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,baselines]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m jobs.demo

test: $(STAMP)
	$(PY) -m pytest -q --timeout=900 tests

bench: $(STAMP)
	$(PY) -m benchmarks.ingest_throughput

# The in-context (tab2d) checkpoint, pretrained on the synthetic prior in six stages of difficulty, each
# starting from the last: (1) an easy prior (4 numeric features, 64 rows, low noise, regression only), where
# the model first learns to read the features; (2) the default prior up to 128 rows x 10 features (categorical
# features and targets, missing cells, tree SCMs); (3) up to 256 rows x 16 features; (4) up to 512 rows x 16
# features, capped at 50 minutes (2,357 of its 3,000 steps on the 2-core machine); (5) the same prior with the
# model deepened from 2 to 4 layers (basisfm.model.grow: the new layers start as the identity), capped at 80
# minutes (1,541 of 2,000 steps); (6) deepened again, 4 to 6 layers, capped at 88 minutes (1,002 of 1,050 steps);
# (7) 6 to 8 layers, capped at 80 minutes (556 of 720 steps). 341 minutes and 119,648 tasks in all, measured at
# 1 thread (ICL_THREADS=1, another run on the other core; stages 1-3 took 57 minutes at 2 threads alone),
# 2026-12-01/02. Results:
# benchmarks/results/icl_prior_pretrain_cpu_stage{1,2,3,4,5_grown4,6_grown6,7_grown8}.md; checkpoint: $(ICL_OUT)/stage7_grown8,
# shipped as platform/basisfm/pretrained/in_context (jobs.ship_checkpoint --out).
# `make icl-curriculum ICL_ARCH=basis_icl` runs the same stages for basis_icl (into runs/curriculum_basis_icl, pages
# icl_prior_pretrain_cpu_basis_icl_stage*.md: stages 1-3 measured, 43 minutes at 1 thread, held-out ratio stays ~1.00);
# ICL_THREADS sets torch's CPU threads (1 runs two curricula side by side).
ICL_ARCH    ?= tab2d
ICL_THREADS ?= 2
ICL_OUT     ?= runs/curriculum$(if $(filter tab2d,$(ICL_ARCH)),,_$(ICL_ARCH))
ICL_TAG      = $(if $(filter tab2d,$(ICL_ARCH)),,$(ICL_ARCH)_)
ICL          = $(PY) -m benchmarks.icl_prior_pretrain --architecture $(ICL_ARCH) --threads $(ICL_THREADS) --eval-every 100
EASY     = max_noise_std=0.03 max_layers=2 min_layers=1 classification_fraction=0 multi_target_fraction=0 \
           missing_task_fraction=0 max_categorical_fraction=0 tree_weight=0 skewed_fraction=0 integer_fraction=0
icl-curriculum: $(STAMP)
	$(ICL) --label $(ICL_TAG)stage1 --seed 0 --steps 3000 --max-rows 64 --max-features 4 $(addprefix --prior ,$(EASY)) --out $(ICL_OUT)/stage1
	$(ICL) --label $(ICL_TAG)stage2 --seed 1 --steps 4000 --warmup 50 --max-rows 128 --max-features 10 --init $(ICL_OUT)/stage1 \
	    --prior curriculum=linear --prior curriculum_steps=1500 --prior curriculum_start_rows=64 --prior curriculum_start_features=4 \
	    --prior classification_fraction=0.2 --prior multi_target_fraction=0.05 --out $(ICL_OUT)/stage2
	$(ICL) --label $(ICL_TAG)stage3 --seed 2 --steps 2500 --warmup 50 --max-rows 256 --max-features 16 --max-cells 4096 --lr 2e-3 --init $(ICL_OUT)/stage2 \
	    --prior curriculum=linear --prior curriculum_steps=800 --prior curriculum_start_rows=128 --prior curriculum_start_features=10 \
	    --prior classification_fraction=0.2 --prior multi_target_fraction=0.05 --out $(ICL_OUT)/stage3
	$(ICL) --label $(ICL_TAG)stage4 --seed 3 --steps 3000 --minutes 50 --warmup 50 --max-rows 512 --max-features 16 --max-cells 8192 --lr 1e-3 \
	    --init $(ICL_OUT)/stage3 --prior curriculum=linear --prior curriculum_steps=500 --prior curriculum_start_rows=256 \
	    --prior curriculum_start_features=16 --prior classification_fraction=0.2 --prior multi_target_fraction=0.05 --out $(ICL_OUT)/stage4
	$(ICL) --label $(ICL_TAG)stage5_grown4 --seed 4 --steps 2000 --minutes 80 --warmup 50 --max-rows 512 --max-features 16 --max-cells 8192 \
	    --lr 1e-3 --init $(ICL_OUT)/stage4 --grow-layers 4 --prior classification_fraction=0.2 --prior multi_target_fraction=0.05 \
	    --out $(ICL_OUT)/stage5_grown4
	$(ICL) --label $(ICL_TAG)stage6_grown6 --seed 5 --steps 1050 --minutes 88 --warmup 50 --max-rows 512 --max-features 16 --max-cells 8192 \
	    --lr 7e-4 --init $(ICL_OUT)/stage5_grown4 --grow-layers 6 --prior classification_fraction=0.2 --prior multi_target_fraction=0.05 \
	    --out $(ICL_OUT)/stage6_grown6
	$(ICL) --label $(ICL_TAG)stage7_grown8 --seed 7 --steps 720 --minutes 80 --warmup 50 --max-rows 512 --max-features 16 --max-cells 8192 \
	    --lr 6e-4 --init $(ICL_OUT)/stage6_grown6 --grow-layers 8 --prior classification_fraction=0.2 --prior multi_target_fraction=0.05 \
	    --out $(ICL_OUT)/stage7_grown8

clean:
	rm -rf runs .pytest_cache
