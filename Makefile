# Two commands matter: `make run` and `make test`. Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test test-fast lint format bench demo budgets check-budgets validate-gpu clean

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

## demo: simulated fleet + local Prometheus and Alertmanager (Debian packages); demo budgets alert within ~2 min
demo: $(BIN)/footprint-exporter
	bash scripts/demo.sh

## budgets: render prometheus/budgets.yml into Prometheus and Grafana alert rules
budgets: $(BIN)/footprint-exporter
	$(BIN)/footprint-exporter budgets render

check-budgets: $(BIN)/footprint-exporter
	$(BIN)/footprint-exporter budgets check

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
