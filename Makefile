# ReadingRoom: two set-up commands.
#   make run   installs (once) and starts the workstation with demo data
#   make test  installs (once) and runs the tests
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT_PACKAGES := dcmtk espeak-ng chromium

.PHONY: run test install system-deps bench bench-dictation bench-reports bench-triage clean

run: install
	$(BIN)/readingroom run --demo

test: install
	$(BIN)/python -m pytest

install: system-deps $(STAMP)

# Debian packages the tests and the demo use (dcmtk's storescu/echoscu/findscu).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python -m dictation.install
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
