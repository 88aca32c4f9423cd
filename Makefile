# sr-lightning: every entry point is a make target. `make install` builds .venv/.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines take the local CPU wheel; CUDA users: make install TORCH="torch==2.x.y"
TORCH ?= torch==2.13.0
DATA ?= ../shared/datasets

.PHONY: install test lint format eval-bicubic bench-data bench-infer train report clean

install:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install -e ".[dev,sample,sweep,export]"

test:
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check src tests bench train.py eval.py
	$(PY) -m ruff format --check src tests bench train.py eval.py

format:
	$(PY) -m ruff format src tests bench train.py eval.py
	$(PY) -m ruff check --fix src tests bench train.py eval.py

# Quickstart: a small EDSR on the embedded sample photos, a few minutes on 2 CPU cores.
train:
	$(PY) train.py experiment=quickstart

# Tables and plots of a Hydra multirun: make report SWEEP=outputs/<task>/multiruns/<id>
report:
	$(PY) -m sr_lightning.report $(SWEEP)

# The paper's bicubic rows, reproduced on the four benchmarks.
eval-bicubic:
	$(PY) eval.py model=bicubic data.root=$(DATA) data.scales=[2,3,4] \
		data.benchmarks=[Set5,Set14,B100,Urban100] results_path=outputs/bicubic.json

# Data-loader patches/s (batch 16, 48x48 LR, x2) with 0, 1 and 2 workers.
bench-data:
	$(PY) bench/data.py --root $(DATA)

# Inference ms per output megapixel (EDSR-baseline, EDSR; x2, x4; fp32; tiled and not).
bench-infer:
	$(PY) bench/infer.py

clean:
	rm -rf .pytest_cache .ruff_cache src/*.egg-info
