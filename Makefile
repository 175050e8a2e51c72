# ledgerbridge — every target creates .venv and installs what it needs, so each works on a fresh machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-quick chaos fault fuzz security audit proof install clean

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

# fault injection: 30% of target calls fail (5xx, 429, resets, stalls, lost answers), every ERP target, 10 seeds, bigger firm
fault: $(STAMP)
	LB_FAULT_TARGETS=workday,xero,netsuite,dynamics365,sap_s4,oracle_fusion LB_FAULT_SEEDS=1,2,3,4,5,6,7,8,9,10 LB_FAULT_EMPLOYEES=12 $(BIN)/pytest -q -s tests/test_fault_*.py tests/test_faultproxy.py

# fuzzing: 9,100 cases per parser target (11 targets: >100k in all) + schemathesis with its coverage phase on every operation
fuzz: $(STAMP)
	LB_FUZZ_EXAMPLES=9100 LB_FUZZ_RANDOM=1 $(BIN)/pytest -q --hypothesis-show-statistics tests/test_fuzz_parsers.py
	LBT_SCHEMA_EXAMPLES=200 LBT_SCHEMA_COVERAGE=1 $(BIN)/pytest -q tests/test_service_openapi.py

# security: signatures (replay, stale, forged), scope matrix, secrets in logs, audit chain tampering; dependency audit
security: $(STAMP)
	$(BIN)/pytest -q tests/test_service_webhooks.py tests/test_service_auth.py tests/test_service_redaction.py tests/test_store_audit.py tests/test_service_admin.py
	$(BIN)/python scripts/audit-deps

audit: $(STAMP)
	$(BIN)/python scripts/audit-deps

# every proof suite, full size (see docs/proof.md); takes hours on 2 cores
proof: chaos fault fuzz security bench

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
