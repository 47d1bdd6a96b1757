# Two commands matter: `make run` and `make test`. Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test test-fast lint format bench demo budgets check-budgets validate-gpu clean wheelhouse image

$(BIN)/footprint-exporter: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## run: the exporter on :9877 (GPU via NVML if present; ARGS=--source.gpu=simulated for a simulated fleet)
run: $(BIN)/footprint-exporter
	$(BIN)/footprint-exporter $(ARGS)

## test: lint, types and the whole test suite (integration tests start real Prometheus/Alertmanager)
test: $(BIN)/footprint-exporter
	$(BIN)/ruff check exporter tests benchmarks
	$(BIN)/ruff format --check exporter tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider

test-fast: $(BIN)/footprint-exporter
	$(BIN)/pytest -q -m "not integration"

lint: $(BIN)/footprint-exporter
	$(BIN)/ruff check exporter tests benchmarks
	$(BIN)/ruff format --check exporter tests benchmarks
	$(BIN)/mypy

format: $(BIN)/footprint-exporter
	$(BIN)/ruff format exporter tests benchmarks
	$(BIN)/ruff check --fix exporter tests benchmarks

## bench: speed, memory and accuracy benchmarks; writes benchmarks/results/latest.md
bench: $(BIN)/footprint-exporter
	$(BIN)/python -m benchmarks.run $(ARGS)

## validate-gpu: load GPU 0 from two processes and measure NVML and the exporter on it (docs/validation.md)
VALIDATE_OUT ?= validation-out
validate-gpu: $(BIN)/footprint-exporter
	$(BIN)/footprint-exporter validate-gpu --out $(VALIDATE_OUT) $(ARGS)

## demo: simulated fleet + local Prometheus and Alertmanager (Debian packages)
demo: $(BIN)/footprint-exporter
	bash scripts/demo.sh

## budgets: render prometheus/budgets.yml into Prometheus and Grafana alert rules
budgets: $(BIN)/footprint-exporter
	$(BIN)/footprint-exporter budgets render

check-budgets: $(BIN)/footprint-exporter
	$(BIN)/footprint-exporter budgets check

## wheelhouse: wheels of the exporter and every dependency for the image's Python (needs PyPI once)
WHEELHOUSE ?= wheelhouse
WHEEL_PYTHON ?= 3.11
WHEEL_ARCH ?= $(shell uname -m)
# Debian bookworm's glibc is 2.36: wheels for it or any older manylinux run there. pip matches each
# tag literally, so every one is listed.
WHEEL_MANYLINUX ?= manylinux_2_36 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_24 \
  manylinux_2_17 manylinux2014 manylinux_2_12 manylinux2010 manylinux_2_5 manylinux1
wheelhouse: $(BIN)/footprint-exporter
	rm -rf $(WHEELHOUSE)
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir $(WHEELHOUSE) .
	$(BIN)/pip download --quiet --dest $(WHEELHOUSE) --only-binary=:all: --implementation cp \
	  --python-version $(WHEEL_PYTHON) $(foreach tag,$(WHEEL_MANYLINUX),--platform $(tag)_$(WHEEL_ARCH)) \
	  $(WHEELHOUSE)/ai_footprint_exporter-*.whl

## image: build the container image offline from the wheelhouse (IMAGE, PYTHON_IMAGE, DOCKER to override)
DOCKER ?= docker
PYTHON_IMAGE ?= python:3.11.11-slim-bookworm
IMAGE ?= footprint-exporter:$(shell $(PYTHON) -c 'import re,sys; print(re.search(r"__version__ = \"(.+?)\"", open("exporter/__init__.py").read()).group(1))')
image: wheelhouse
	$(DOCKER) build --network=none --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) -f exporter/Dockerfile -t $(IMAGE) .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache $(WHEELHOUSE)
