# fear-mlflow developer entry points. Every target bootstraps .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export MLFLOW_TRACKING_URI ?= sqlite:///mlflow.db

.PHONY: venv test lint format demo clean

venv: $(STAMP)

# torch/torchvision are pinned and installed first: on these machines pip takes exactly
# these releases from local disk (a CUDA build that also runs on CPU).
# xautodl (NATS-Bench reference net for the parity test) pins numpy<=1.19.5: --no-deps.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev,natsbench,postgres,dashboard]'
	$(BIN)/pip install -q --no-deps xautodl==1.0.0
	touch $(STAMP)

test: venv
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check fear_mlflow tests bench
	$(BIN)/ruff format --check fear_mlflow tests bench

format: venv
	$(BIN)/ruff check --fix fear_mlflow tests bench
	$(BIN)/ruff format fear_mlflow tests bench

# The main job: one FEAR evaluation through `mlflow run` on scikit-learn's digits
# (offline, a few minutes on 2 CPU cores), recorded in ./mlflow.db.
demo: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow run . -e fear --env-manager local \
	    --experiment-name fear-demo -P dataset=digits
	@echo
	@echo "Done. Browse the run:  $(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI)"
	@echo "then open http://127.0.0.1:5000 -> experiment 'fear-demo'."

clean:
	rm -rf $(VENV) mlruns mlflow.db optuna.db .pytest_cache
