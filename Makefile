# Two entry points for a fresh machine: `make demo` (main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= results/demo

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The main job on the embedded default dataset (scikit-learn's digits): COLT and IMP tickets, then the report.
demo: $(STAMP)
	$(VENV)/bin/colt-ray ticket --method colt --dataset digits --arch conv2 --cycles 4 --epochs 10 --out $(OUT)
	$(VENV)/bin/colt-ray ticket --method imp --dataset digits --arch conv2 --cycles 4 --epochs 10 --out $(OUT)
	$(VENV)/bin/colt-ray report $(OUT)
	@echo "results: $(OUT)/ (Parquet tables, tickets, report/)"

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) results .pytest_cache
