# Developer commands. Everything installs itself on first use:
#
#   make demo                  the example project: a cluster runs a few hundred tasks
#   make test                  the test suite on Python 3.11 (Django 5.2) and 3.12 (Django 6.x), side by side
#   make test PY=311           one interpreter only (PY=312 for the other)
#   make test ARGS="-k redis"  extra pytest arguments (TESTS="tests/unit" picks the tests)
#   make test WORKERS=0        no pytest-xdist: one process per run (the default is 3), e.g. for --pdb
#   make check                 manage.py check and makemigrations --check, both Pythons, and make typecheck
#   make typecheck             mypy with django-stubs over django_q/ (Python 3.12)
#   make bench                 the benchmark (bench/README.md); ARGS=--quick: a few minutes
#   make docs                  the documentation site into docs/_build/html (Sphinx, warnings are errors)
#   make release-check         build the sdist and wheel, twine check, run them installed without extras, then with [all]
#
# Each interpreter has its own virtualenv (.venv, .venv312). It is (re)installed
# when it is missing or when pyproject.toml is newer than its stamp file.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PY ?= 311 312
ARGS ?=
TESTS ?=
WORKERS ?= 3
$(foreach v,$(PY),$(if $(filter 311 312,$(v)),,$(error PY takes 311 and/or 312, not "$(v)")))

# The interpreters that create the virtualenvs. pyenv's shims need
# PYENV_VERSION to expose a version that is not the global one.
PYTHON_311 ?= $(shell command -v python3.11 >/dev/null 2>&1 && echo python3.11 || echo python3)
PYTHON_312 ?= PYENV_VERSION=3.12.1 python3.12

VENV_311 := .venv
VENV_312 := .venv312
STAMP := .installed

.PHONY: help test demo check typecheck venv clean bench docs release-check

help:
	@sed -n 's/^#   //p' Makefile

# --- virtualenvs -----------------------------------------------------------

$(VENV_311)/$(STAMP): pyproject.toml
	@$(call make-venv,$(VENV_311),$(PYTHON_311),3.11)

$(VENV_312)/$(STAMP): pyproject.toml
	@$(call make-venv,$(VENV_312),$(PYTHON_312),3.12)

# make-venv DIR, INTERPRETER, EXPECTED_VERSION: a working venv at DIR with -e .[test].
# A venv whose python no longer runs (its interpreter was removed) is rebuilt.
# The sed drops pip's warnings about this machine's optional local index folders.
define make-venv
	if ! $(1)/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "$(3)".split("."))))' 2>/dev/null; then \
		echo "==> creating $(1) (Python $(3))"; \
		rm -rf $(1); \
		$(2) -m venv $(1); \
		$(1)/bin/python -c 'import sys; v = "%d.%d" % sys.version_info[:2]; sys.exit(0 if v == "$(3)" else "$(1): expected Python $(3), got " + v)'; \
	fi; \
	echo "==> installing -e .[test] into $(1)"; \
	$(1)/bin/python -m pip install -q -e '.[test]' 2>&1 | sed '/is ignored: it is neither a file nor a directory/d'; \
	touch $(1)/$(STAMP)
endef

venv: $(foreach v,$(PY),$(VENV_$(v))/$(STAMP))

# --- tests -----------------------------------------------------------------

# tests/run.sh runs one lane per interpreter, side by side: the suite (or TESTS)
# in WORKERS pytest-xdist processes, then, without TESTS, the tests that depend
# on the default database with PostgreSQL, then MariaDB, as the default database.
# Each run and each xdist worker gets its own DQ_TEST_ID (test databases, cluster
# names) and scratch folder, so nothing is shared between them, the interpreters,
# or two checkouts on one machine. Every run goes ahead even if another fails;
# with both interpreters each lane's log is printed whole once it ended.
test: venv
	@PY="$(PY)" TESTS="$(TESTS)" WORKERS="$(WORKERS)" bash tests/run.sh $(ARGS)

# --- demo ------------------------------------------------------------------

demo: $(VENV_311)/$(STAMP)
	$(VENV_311)/bin/python example/run_demo.py

# --- checks ----------------------------------------------------------------

# The example project checks against a throwaway database so that it never
# creates or touches example/db.sqlite3.
check: venv typecheck
	@for v in $(PY); do \
		venv=$$([ $$v = 311 ] && echo $(VENV_311) || echo $(VENV_312)); \
		py=$$PWD/$$venv/bin/python; \
		tmp=$$(mktemp -d); \
		trap 'rm -rf "$$tmp"' EXIT; \
		echo "==> checks on py$$v: example project"; \
		(cd example && DEMO_DB=$$tmp/db.sqlite3 $$py manage.py check --fail-level WARNING \
			&& DEMO_DB=$$tmp/db.sqlite3 $$py manage.py makemigrations --check --dry-run); \
		echo "==> checks on py$$v: tests.settings"; \
		DQ_TEST_ID=check$${v}_$$$$ DQ_TEST_TMP=$$tmp $$py -m django check --settings=tests.settings; \
		DQ_TEST_ID=check$${v}_$$$$ DQ_TEST_TMP=$$tmp $$py -m django makemigrations --check --dry-run --settings=tests.settings; \
		rm -rf "$$tmp"; \
	done

# mypy's cache is .mypy_cache (ignored by git); a warm run takes a few seconds.
typecheck: $(VENV_312)/.installed-typecheck
	$(VENV_312)/bin/python -m mypy

clean:
	rm -rf $(VENV_311) $(VENV_312) .pytest_cache .mypy_cache example/db.sqlite3 example/db.sqlite3-* example/*.log docs/_build dist

# --- docs and release ----------------------------------------------------------

# They use .venv312 (Python 3.12, Django 6: the reference documents the
# Django 6 backend), with the [docs], [release] or [typecheck] extra on top of [test].
# The docs are read afresh every time (-E): the reference is drawn from the code.
$(VENV_312)/.installed-docs: $(VENV_312)/$(STAMP)
	@echo "==> installing -e .[docs] into $(VENV_312)"
	@$(VENV_312)/bin/python -m pip install -q -e '.[docs]' 2>&1 | sed '/is ignored: it is neither a file nor a directory/d'
	@touch $@

$(VENV_312)/.installed-typecheck: $(VENV_312)/$(STAMP)
	@echo "==> installing -e .[typecheck] into $(VENV_312)"
	@$(VENV_312)/bin/python -m pip install -q -e '.[typecheck]' 2>&1 | sed '/is ignored: it is neither a file nor a directory/d'
	@touch $@

$(VENV_312)/.installed-release: $(VENV_312)/$(STAMP)
	@echo "==> installing -e .[release] into $(VENV_312)"
	@$(VENV_312)/bin/python -m pip install -q -e '.[release]' 2>&1 | sed '/is ignored: it is neither a file nor a directory/d'
	@touch $@

docs: $(VENV_312)/.installed-docs
	$(VENV_312)/bin/python -m sphinx -W --keep-going -E -b html -q docs docs/_build/html
	@echo "==> docs/_build/html/index.html"

release-check: $(VENV_312)/.installed-release
	PYTHON=$(VENV_312)/bin/python bash .ci/release_check.sh

# --- benchmark ---------------------------------------------------------------

# bench/run.py makes its own venvs (bench/.venvs, pinned in bench/venvs.py) and
# needs Redis (db 12 and 15 are flushed) and PostgreSQL on localhost.
bench:
	$(PYTHON_311) bench/run.py $(ARGS)
