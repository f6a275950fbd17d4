# Two entry points, each installing what it needs first:
#   make demo   the main job, offline, on the embedded defaults
#   make test   the whole test suite (what CI runs through .ci/run)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The tested torch pair; override for another CUDA build, e.g. TORCH="torch torchvision".
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.lstmbench-installed

.PHONY: demo test lint install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(STAMP)
	$(BIN)/lstmbench demo

# Debian packages (chromium for the browser tests, docker-compose to validate the compose file)
# and the database servers come first; the tests create and drop their own databases.
test: $(STAMP)
	bash scripts/install-test-deps.sh
	bash scripts/test-services.sh
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmark
	$(BIN)/ruff format --check src tests benchmark
