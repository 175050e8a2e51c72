# ledgerbridge — every target creates .venv and installs what it needs, so each works on a fresh machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-quick chaos install clean

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) (Python 3.11) on PATH"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ledgerbridge demo run

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src/ledgerbridge/model src/ledgerbridge/domain
	$(BIN)/ledgerbridge contracts export build/contracts-current
	$(BIN)/ledgerbridge contracts check contracts build/contracts-current
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench || true
	$(BIN)/mypy src/ledgerbridge/model src/ledgerbridge/domain

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run_all.py --quick

# the full crash-safety suite: 100 SIGKILL points (CI runs 20 inside make test)
chaos: $(STAMP)
	LB_KILL_POINTS=100 $(BIN)/pytest -q -s tests/test_main_job_kill.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
