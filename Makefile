# `make run` serves the API on the embedded SQLite database; `make test` runs every check.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip --disable-pip-version-check --quiet
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-dev run test lint test-sqlite test-postgresql bench clean

$(VENV)/.runtime: requirements.txt
	python3 -m venv $(VENV)
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
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
	env -u DATABASE_URL DJANGO_SETTINGS_MODULE=config.settings.test $(PYTHON) manage.py makemigrations --check --dry-run

test-sqlite: install-dev
	@echo "==> pytest on SQLite"
	env -u DATABASE_URL $(VENV)/bin/pytest

test-postgresql: install-dev
	@echo "==> pytest on PostgreSQL 15 (throwaway cluster)"
	scripts/with-postgres $(VENV)/bin/pytest

test: lint test-sqlite test-postgresql

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
