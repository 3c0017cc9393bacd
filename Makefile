# Every target installs what it needs first, so each works from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test check bench reproduce clean

install: $(STAMP)

# pip byte-compiles what it installs (half of the install's CPU: 44 s of user CPU without, 87 s
# with), and it must: where PYTHONDONTWRITEBYTECODE is set (it is on the shared 2-core machine) no
# process writes a .pyc later, so without them every process compiles torch, Ray and scipy again as it
# imports them (12 CPU-s instead of 5.5 for their imports, in each Ray worker and CLI run). The
# venv's own pip installs the pinned set (the same packages as after an upgrade of pip).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The package's own modules, byte-compiled before the tests (0.3 s when up to date), for the same
# reason: no process of the suite writes them where PYTHONDONTWRITEBYTECODE is set, and every Ray
# worker and CLI run compiled them again (0.2 CPU-s each). A syntax error is pytest's to report.
PYC = -$(BIN)/python -m compileall -q -j 0 scaling cluster analysis

demo: $(STAMP)
	$(BIN)/scaling sweep configs/demo.yaml --results results

# make test: what a newcomer runs (a few minutes, one process); make check: every test, as CI
# runs it, on two pytest-xdist workers: the tests that start a Ray, bind ports or signal processes
# in one group, in order on one worker, the tests that only compute on the other, at nice 10
# where the suite runs as root (as CI does), so that they take only the CPU the group leaves
# idle (tests/conftest.py); then the few marked `alone`, which time a sweep's first seconds, by
# themselves. JOBS=1 runs make check in one process, as make test runs. Both print their slowest tests.
JOBS ?= 2
test: $(STAMP)
	$(PYC)
	$(BIN)/python -m pytest -q --durations=25 -m "not slow" tests

check: $(STAMP)
	$(PYC)
ifeq ($(JOBS),1)
	$(BIN)/python -m pytest -q --durations=25 tests
else
	$(BIN)/python -m pytest -q --durations=25 -n $(JOBS) --dist loadgroup -m "not alone" tests
	$(BIN)/python -m pytest -q --durations=5 -m alone tests
endif

# Speed is measured side by side in one run; absolute times on shared machines are noise.
# BENCH=store runs only the results-store benchmark (100k and 1M trials; about 10 minutes, 1 GB of disk).
BENCH ?=
bench: $(STAMP)
ifeq ($(BENCH),store)
	$(BIN)/python -m cluster.bench.store
else
	$(BIN)/python -m cluster.bench.roofline
	$(BIN)/python -m cluster.bench.roofline --optimizer adamw
	$(BIN)/python -m cluster.bench
	$(BIN)/python -m cluster.bench.driver
	$(BIN)/python -m analysis.bench
	$(BIN)/python -m analysis.bench.calibration
	$(BIN)/python -m analysis.bench.extrapolation
	$(BIN)/python -m cluster.bench.store
	$(BIN)/python -m cluster.bench.serve
endif

# Measure both laws and the critical batch size on real data; write results/reproduce/report.html.
# SCALE=full runs configs/full/ (MNIST IDX files in data/mnist, larger grids, for GPUs).
SCALE ?= small
REPRO_CONFIGS := $(if $(filter full,$(SCALE)),configs/full,configs)
reproduce: $(STAMP)
	$(BIN)/scaling sweep $(REPRO_CONFIGS)/learning_curve.yaml --results results/reproduce --engine packed --quiet
	$(BIN)/scaling sweep $(REPRO_CONFIGS)/bopt_rule.yaml --results results/reproduce --engine packed --quiet
	$(BIN)/scaling sweep $(REPRO_CONFIGS)/bcrit.yaml --results results/reproduce --engine packed --quiet
	$(BIN)/python -m analysis.report.reproduce results/reproduce -o results/reproduce/report.html

clean:
	rm -rf $(VENV) results .pytest_cache
