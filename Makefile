# Every target installs what it needs first, so each works from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/scaling sweep configs/demo.yaml --results results

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# Speed is measured side by side in one run; absolute times on shared machines are noise.
bench: $(STAMP)
	$(BIN)/python -m cluster.bench
	$(BIN)/python -m cluster.bench_driver
	$(BIN)/python -m analysis.bench

clean:
	rm -rf $(VENV) results .pytest_cache
