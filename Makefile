# Two entry points for a fresh machine: `make demo` (main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SWEEPS ?= sweeps
DEMO := quick-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install demo lint test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The main job on the embedded default dataset (scikit-learn's digits): a small COLT sweep, then the report.
demo: $(STAMP)
	$(VENV)/bin/colt-ray sweep search_spaces/quick.yaml --storage $(SWEEPS) --name $(DEMO)
	$(VENV)/bin/colt-ray report $(SWEEPS)/$(DEMO)
	@echo "results: $(SWEEPS)/$(DEMO)/ (runs/ cycles/ layers/ Parquet, trials.parquet, tickets/, report/)"

# ruff: lint and format check (configured in pyproject.toml), then the whole suite
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q --durations=15

clean:
	rm -rf $(VENV) results sweeps .pytest_cache
