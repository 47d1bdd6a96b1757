# Two commands matter: `make run` and `make test`. Both create the virtual environment on first use.
# `make help` lists every target. A line "## target: text" above a target is its entry in that list.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
# make run listens on this machine only: the series name users, pods and commands. The exporter's own
# default (--web.listen-address=:9877, all interfaces) is what a node deployment uses; LISTEN=:9877 here too.
LISTEN ?= 127.0.0.1:9877

.DEFAULT_GOAL := help
.PHONY: help run test test-fast lint format bench demo budgets check-budgets validate-gpu screenshots clean wheelhouse image

## help: this list
help:
	@awk '/^## [a-z][a-z-]*:/ { sub(/^## /, ""); name = $$0; sub(/:.*/, "", name); text = $$0; \
	  sub(/^[^:]*: */, "", text); printf "  make %-14s %s\n", name, text }' $(MAKEFILE_LIST)

$(BIN)/footprint-exporter: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## run: the exporter on http://localhost:9877 (GPUs via NVML if present; ARGS=--source.gpu=simulated to simulate)
run: $(BIN)/footprint-exporter
	$(BIN)/footprint-exporter --web.listen-address=$(LISTEN) $(ARGS)

## test: lint, types and the whole test suite (integration tests start real Prometheus/Alertmanager)
test: $(BIN)/footprint-exporter
	$(BIN)/ruff check exporter tests benchmarks
	$(BIN)/ruff format --check exporter tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider

## test-fast: the tests not marked integration (no exporter, Prometheus or Alertmanager started)
test-fast: $(BIN)/footprint-exporter
	$(BIN)/pytest -q -m "not integration"

## lint: ruff (lint and format check) and strict mypy, no tests
lint: $(BIN)/footprint-exporter
	$(BIN)/ruff check exporter tests benchmarks
	$(BIN)/ruff format --check exporter tests benchmarks
	$(BIN)/mypy

## format: reformat the code with ruff and apply its safe fixes
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

## demo: simulated fleet + local Prometheus and Alertmanager (Debian packages); demo budgets alert within ~2 min
demo: $(BIN)/footprint-exporter
	bash scripts/demo.sh

## budgets: render prometheus/budgets.yml into Prometheus and Grafana alert rules
budgets: $(BIN)/footprint-exporter
	$(BIN)/footprint-exporter budgets render

## check-budgets: fail if the committed budget rules differ from what prometheus/budgets.yml renders to
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

## screenshots: redraw docs/img/landing.png and docs/img/report.png in headless Chromium (from the tests' data)
screenshots: $(BIN)/footprint-exporter
	FOOTPRINT_SCREENSHOTS=docs/img $(BIN)/pytest -q -p no:cacheprovider \
	  tests/test_landing.py::test_landing_page_in_chromium_warns_about_the_world_average \
	  tests/test_report.py::test_html_renders_in_chromium_with_charts_and_no_errors

## clean: remove the virtual environment and build and tool caches
clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache $(WHEELHOUSE)
