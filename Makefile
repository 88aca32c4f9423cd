# sr-lightning: every entry point is a make target. `make install` builds .venv/.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines take the local CPU wheel; CUDA users: make install TORCH="torch==2.x.y"
TORCH ?= torch==2.13.0
# sharded training sets (sr-shard, data.train_set=shards): the [stream] extra, installed
# without litdata's torchvision (PyPI's needs a CUDA torch and would replace this one)
LITDATA ?= litdata>=0.2.76,<0.3
# this machine's data sets; elsewhere data.root defaults to $SR_DATA_ROOT, else ./data
DATA ?= $(or $(SR_DATA_ROOT),../shared/datasets)

.PHONY: install test test-fast lint format eval-bicubic bench bench-data bench-infer gpu-payload train report ablations clean

install:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install -e ".[dev,sample,sweep,export]" boto3 obstore
	$(PY) -m pip install --no-deps "$(LITDATA)"

# the full suite (what CI and the README run); the fast first tier: in-process tests only
test:
	$(PY) -m pytest -q

test-fast:
	$(PY) -m pytest -q -m "not slow"

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
	$(VENV)/bin/sr-report $(SWEEP)

# The six smoke ablations of docs/ablations.md: 5 seeds where a job takes under a minute, 3 where
# not (mdsr: its MDSR job trains 3x the updates). Tested on Set14 (the primary set of every
# verdict), Set5 and the sample's held-out test photos. Re-running continues where it stopped
# (fixed sweep folders: finished jobs are not trained again).
ABLATIONS := bn:five loss:five ema:five pretrain:five res_scale:five mdsr:three
ablations:
	for a in $(ABLATIONS); do name=$${a%%:*}; seeds=$${a##*:}; \
		$(PY) train.py -m experiment=ablation_$${name}_smoke +seeds=$$seeds data.root=$(DATA) \
			'data.benchmarks=[Set14,Set5,sample]' hydra.sweep.dir=outputs/ablations/$$name && \
		$(VENV)/bin/sr-report outputs/ablations/$$name > /dev/null || exit 1; \
	done

# The paper's bicubic rows, reproduced on the four benchmarks.
eval-bicubic:
	$(PY) eval.py model=bicubic data.root=$(DATA) data.scales=[2,3,4] \
		data.benchmarks=[Set5,Set14,B100,Urban100] results_path=outputs/bicubic.json

# The benchmark table (training step: plain eager vs ours, FLOPs and % of the matmul peak,
# inference ms/MP, loader patches/s), printed and appended to BENCHMARKS.md. ~15 min on 2 cores.
bench:
	$(VENV)/bin/sr-bench --data-root $(DATA)

# What bench/gpu.sh needs on a GPU machine without network: wheels of the packages its image
# lacks (.whl/, pure Python) and the training/test images (gpu_payload/datasets/).
GPU_WHEELS := hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3
gpu-payload:
	rm -rf .whl gpu_payload && mkdir -p gpu_payload/datasets/benchmark
	$(PY) -m pip wheel -q --no-deps -w .whl $(GPU_WHEELS)
	for s in B100 Set5; do mkdir -p gpu_payload/datasets/benchmark/$$s && \
		cp -r $(DATA)/benchmark/$$s/HR gpu_payload/datasets/benchmark/$$s/; done
	du -sh .whl gpu_payload

# Data-loader patches/s (batch 16, 48x48 LR, x2) with 0, 1 and 2 workers and data.on_device.
bench-data:
	$(VENV)/bin/sr-bench --only loader --workers 0 1 2 --data-root $(DATA) --out ''

# Inference ms per output megapixel (EDSR-baseline, EDSR; x2, x4; fp32; tiled and not).
bench-infer:
	$(VENV)/bin/sr-bench --only inference --data-root $(DATA) --out ''

clean:
	rm -rf .pytest_cache .ruff_cache src/*.egg-info
