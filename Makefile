# postsave: `make demo` runs the main job, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-installed-stamp

.PHONY: demo test lint unit venv clean migrate worker beat bench bench-quick

demo: $(STAMP)
	$(BIN)/postsave demo

# Two runs: the tiers that only wait on PostgreSQL, RabbitMQ and files, then the end-to-end
# tests, each on a database and vhost of its own (the faults that stop or alarm a whole RabbitMQ
# node on a node of their own, one group). Two at a time in both: the end-to-end tests' timings
# and fault injections need the CPUs.
test: $(STAMP) lint
	$(BIN)/pytest -n 2 --ignore=tests/e2e
	$(BIN)/pytest -n 2 --dist loadgroup tests/e2e

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest tests/unit

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "postsave needs Python 3.11 or newer; set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

migrate: $(STAMP)
	$(BIN)/alembic upgrade head

worker: $(STAMP)
	$(BIN)/celery -A tasks worker --loglevel=INFO

beat: $(STAMP)
	$(BIN)/celery -A tasks beat --loglevel=INFO

# The benchmark's own dependencies (procrastinate, matplotlib) come with it, not with the venv.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Results, plot and report go to var/bench/; `python -m bench --publish` makes docs/performance.md.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench --full

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
