# ReadingRoom: two set-up commands.
#   make run   installs (once), checks the models, and starts the workstation with demo data
#   make test  installs (once), checks the models, and runs the tests
# Every run checks each model by checksum and installs what is missing (`readingroom models`):
# the models live in .venv/share/readingroom/models, not in the data folder var/, so
# `rm -rf var` resets the demo without losing them; `make clean` removes them with .venv.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT_PACKAGES := dcmtk espeak-ng chromium faketime postgresql redis-server orthanc

.PHONY: run test install system-deps bench bench-dictation bench-reports bench-triage clean

run: install
	$(BIN)/readingroom run --demo

# Lint (ruff, every file) and type-check the kernel (mypy) first: both are set in pyproject.toml.
test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

install: system-deps $(STAMP)
	$(BIN)/readingroom models

# Debian packages the tests and the demo use (dcmtk's storescu/echoscu/findscu; postgresql's initdb and
# pg_ctl start a throwaway server for tests/test_postgres.py; redis-server is the throwaway broker of
# tests/test_celery_queue.py; orthanc is the speed peer of bench/intake_vs_orthanc.py).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The postgres extra (psycopg) lets the tests run the kernel on PostgreSQL as well as SQLite; the celery
# extra (Celery, redis-py) is the distributed job engine (jobs.engine: celery, docs/jobs.md).
$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,postgres,celery]'
	touch $(STAMP)

bench: install
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/worklist.py
	$(BIN)/python bench/orders.py

bench-reports: install
	$(BIN)/python bench/checks.py
	$(BIN)/python bench/report_delivery.py

bench-dictation: install
	$(BIN)/python bench/dictation.py

bench-triage: install
	$(BIN)/python bench/triage.py

clean:
	rm -rf $(VENV) var build *.egg-info
