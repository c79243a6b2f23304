# `make run` serves the API on the embedded SQLite database; `make test` runs every check,
# the benchmark's smoke run included (so that the benchmark cannot rot).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip --disable-pip-version-check --quiet
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-dev test-tools run test lint test-sqlite test-postgresql test-cluster test-failover bench bench-smoke clean

$(VENV)/.runtime: requirements.txt
	python3 -m venv $(VENV)
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt requirements-integrations.txt
	$(PIP) install -r requirements-dev.txt
	touch $@

install: $(VENV)/.runtime

install-dev: $(VENV)/.dev

run: install
	$(PYTHON) manage.py migrate --noinput
	$(PYTHON) manage.py runserver $(HOST):$(PORT)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports --no-cache
	env -u DATABASE_URL DJANGO_SETTINGS_MODULE=config.settings.test $(PYTHON) manage.py makemigrations --check --dry-run

# Debian's chromium (e2e/) and docker-compose (compose validation), installed when missing.
test-tools:
	e2e/install-tools

test-sqlite: install-dev test-tools
	@echo "==> pytest on SQLite"
	env -u DATABASE_URL $(VENV)/bin/pytest

test-postgresql: install-dev test-tools
	@echo "==> pytest on PostgreSQL 15 (throwaway cluster)"
	scripts/with-postgres $(VENV)/bin/pytest

# Several app servers on a primary, a streaming standby that replays 200 ms late, and Redis.
test-cluster: install-dev test-tools
	@echo "==> pytest -m cluster (PostgreSQL primary + synchronous standby, Redis)"
	scripts/with-redis scripts/with-replicated-postgres --apply-delay 200 $(VENV)/bin/pytest -m cluster

# Kills the primary under load and promotes the standby: a pair of its own.
test-failover: install-dev test-tools
	@echo "==> pytest -m failover (PostgreSQL primary + synchronous standby)"
	scripts/with-replicated-postgres $(VENV)/bin/pytest -m failover

test: lint test-sqlite test-postgresql test-cluster test-failover bench-smoke

# The benchmark (issue 5): a throwaway PostgreSQL, 1,000,000 messages, the service under
# gunicorn driven by wrk over loopback, controls F1 and P; about 15 minutes on 2 cores.
# Then issue 15's rows (bench.replication) on a primary with a streaming standby and Redis,
# about 5 minutes more. Prints the table, writes bench/results/results.json and
# bench/results/latency.png.
bench: install
	bench/install-tools $(VENV)
	scripts/with-postgres $(PYTHON) -m bench.run --profile full
	scripts/with-redis scripts/with-replicated-postgres $(PYTHON) -m bench.replication --profile full

# The same run on tiny data, part of `make test`: fails when a figure is missing, whatever
# the timings (about a minute and a half).
bench-smoke: install
	bench/install-tools $(VENV)
	scripts/with-postgres $(PYTHON) -m bench.run --profile smoke --output bench/results/tmp/smoke
	scripts/with-redis scripts/with-replicated-postgres $(PYTHON) -m bench.replication --profile smoke \
		--output bench/results/tmp/smoke

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
