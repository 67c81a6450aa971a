# Each target bootstraps .venv by itself, so a fresh machine needs only Python and the registries.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint models clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

models: $(STAMP)
	$(BIN)/callgate models fetch --source $${CALLGATE_MODEL_SOURCE:-auto}

run: models
	$(BIN)/callgate serve

test: models
	bash tests/setup.sh
	$(BIN)/ruff check .
	$(BIN)/pytest -q

bench: models
	bash tests/setup.sh
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
