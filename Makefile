# One Makefile that people, CI and pre-commit all call.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint unit install clean bench soak

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default (SQLite, in-process broker, offline fake model API).
demo: $(STAMP)
	$(BIN)/cascade demo

## Lint, types, layering contracts, then the whole test suite.
test: lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest tests/unit

## Throughput, memory, latency and fleet rate-limit benchmarks (needs Postgres and Redis),
## then prompt caching and repeated texts (issue 19: 10,000 items, 3 interleaved
## cache off/on pairs, ~25 min under load). BENCH_ARGS=--quick for the scaled-down
## run (a few minutes); CACHING_ARGS to size the caching run.
CACHING_ARGS ?= --items 10000 --rounds 3
bench: $(STAMP)
	$(BIN)/python -c 'import litellm' 2>/dev/null || $(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.caching $(CACHING_ARGS)

## The chaos soak (~10 min; SOAK_ARGS=--quick for ~2 min): kills, Redis restart, faults,
## then the fake's request log against the ledger. Needs Postgres and redis-server;
## restarts Postgres only if CASCADE_TEST_PG_RESTART_CMD is set. Not part of `make test`.
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) cascade.db cascade.db-* cascade-demo.db cascade-demo.db-* .pytest_cache .mypy_cache .ruff_cache
