# Two commands do all the set-up: `make run` and `make test` (see README.md).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
MLFLOW_DB ?= mlruns/mlflow.db
PORT ?= 5000

# No network calls from Kedro's telemetry, ever (see docs/configuration.md).
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

# `make run LOG_FORMAT=json` (or any target that runs Kedro): one JSON object per log line, for
# CI (conf/logging_json.yml; docs/configuration.md#logging). Kedro builds logging classes only
# from modules on its allow-list, hence the second variable.
LOG_FORMAT ?= rich
ifeq ($(LOG_FORMAT),json)
export KEDRO_LOGGING_CONFIG := conf/logging_json.yml
export KEDRO_LOGGING_MODULE_ALLOWLIST := eyecatcher.json_logging
else ifneq ($(LOG_FORMAT),rich)
$(error LOG_FORMAT=$(LOG_FORMAT): expected rich or json)
endif

.DEFAULT_GOAL := help
.PHONY: help run test lint format mlflow-ui viz serve demo-data lock clean-outputs

help: ## list the targets and what each does
	@awk -v port=$(PORT) -v viz=$(VIZ_PORT) 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / { \
		gsub(/\$$\(PORT\)/, port, $$2); gsub(/\$$\(VIZ_PORT\)/, viz, $$2); \
		printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

CONSTRAINTS := requirements/constraints.txt

# Stamps re-run the install only when the dependencies change. The constraints file pins
# known-good versions so that pip never backtracks through releases (boto3/aiobotocore).
$(VENV)/.installed-run: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install -e . -c $(CONSTRAINTS)
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev,ray]" -c $(CONSTRAINTS)
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run ## run the whole pipeline on the embedded demo (offline)
	$(BIN)/kedro run

test: $(VENV)/.installed-dev ## lint, then the test suite (offline, tiny models)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev ## ruff check and ruff format --check, no changes
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

format: $(VENV)/.installed-dev ## ruff format, then ruff check --fix (rewrites files)
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

mlflow-ui: $(VENV)/.installed-run ## browse runs and the registry on http://127.0.0.1:$(PORT)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(MLFLOW_DB) --default-artifact-root ./mlruns --host 127.0.0.1 --port $(PORT)

VIZ_PORT ?= 4141
viz: $(VENV)/.installed-dev ## the pipelines in kedro-viz on http://127.0.0.1:$(VIZ_PORT) (static site: kedro viz build)
	$(BIN)/kedro viz run --host 127.0.0.1 --port $(VIZ_PORT) --no-browser

serve: $(VENV)/.installed-run ## serve the champion on 127.0.0.1 after a staging smoke test (Ctrl-C stops)
	$(BIN)/kedro run --pipelines serving --params serving.foreground=true

demo-data: $(VENV)/.installed-run ## regenerate the synthetic demo under data/01_raw/demo
	$(BIN)/python scripts/make_demo_data.py

lock: $(VENV)/.installed-dev ## refresh requirements/constraints.txt from the working venv
	{ head -3 $(CONSTRAINTS); $(BIN)/python -m pip freeze --exclude-editable | grep -v '^eyecatcher'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean-outputs: ## delete pipeline outputs (keeps the demo inputs and the label cache)
	find data/02_intermediate data/03_primary data/04_feature data/05_model_input data/06_models data/07_model_output data/08_reporting -type f ! -name .gitkeep -delete
