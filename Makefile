# The two commands of the RSKD Tutorial Book:
#   make book   build the book into _build/html from the chapters' stored outputs
#               (EXECUTE=1 re-executes every chapter first, in the auto profile or PROFILE=ci|cpu|gpu)
#   make test   run the unit tests and every chapter under nbval in the `ci` profile
# Both create the virtual environment .venv when it is missing and install what they need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXECUTE ?= 0
PROFILE ?=
CHAPTERS := $(sort $(wildcard book/[0-9][0-9]_*.ipynb))
PIP_FLAGS := -q --disable-pip-version-check

.PHONY: book test execute venv clean help

help:
	@sed -n '1,6p' Makefile

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip

$(VENV)/.installed-book: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(PIP_FLAGS) -e ".[book]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(PIP_FLAGS) -e ".[test]"
	touch $@

venv: $(VENV)/.installed-book $(VENV)/.installed-test

# Re-execute the chapters in place (stored outputs are what the rendered book shows).
# RSKD_PROFILE is set only when PROFILE is given: an exported RSKD_PROFILE is kept otherwise.
execute: $(VENV)/.installed-book
	@for nb in $(CHAPTERS); do \
	  echo "executing $$nb (profile: $(or $(PROFILE),$${RSKD_PROFILE:-auto}))"; \
	  $(if $(PROFILE),RSKD_PROFILE=$(PROFILE) )$(BIN)/jupyter execute --inplace --timeout=-1 $$nb || exit 1; \
	done

book: $(VENV)/.installed-book
	@if [ "$(EXECUTE)" = "1" ]; then $(MAKE) --no-print-directory execute PROFILE=$(PROFILE); fi
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "open _build/html/index.html"

test: $(VENV)/.installed-test
	RSKD_PROFILE=ci RSKD_CACHE=$$(mktemp -d) RSKD_RESULTS=$$(mktemp -d) MPLBACKEND=Agg $(BIN)/python -m pytest tests book \
	  --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider

clean:
	rm -rf _build .pytest_cache
