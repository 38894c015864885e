# Everything installs itself: a fresh machine needs only Python 3.11 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo

.PHONY: demo test lint bench clean system-deps
SYSTEM_BINS := slurmctld slurmd sbatch munged chromium chromedriver

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls gigabytes of CUDA wheels.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)  ## SYNTHETIC archive, head, instruments -> season on a LocalCluster -> stores -> join -> report
	rm -rf $(DEMO)
	$(BIN)/aurora-batch synth file://./$(DEMO)/archive --stations NYA,LYR \
		--start 2010-12-01 --end 2010-12-03 --cadence 10min --seed 1 --corrupt 3 \
		--instruments file://./$(DEMO)/instruments
	$(BIN)/aurora-batch synth-oath $(DEMO)/oath-synthetic --per-class 40 --seed 0
	$(BIN)/aurora-batch train $(DEMO)/oath-synthetic --recipe lite128 --head logistic --split -1 \
		--out $(DEMO)/head-synthetic.npz --cache $(DEMO)/cache
	$(BIN)/aurora-batch season jobs/demo.yaml
	$(BIN)/aurora-batch join jobs/demo.yaml
	$(BIN)/aurora-batch report jobs/demo.yaml --out $(DEMO)/report
	$(BIN)/aurora-batch keogram jobs/demo.yaml --station NYA --night 2010-12-01 --out $(DEMO)/keogram_NYA_2010-12-01.png
	@echo "open $(DEMO)/report/report.html in a browser; the keogram is $(DEMO)/keogram_NYA_2010-12-01.png"

system-deps:  ## Debian packages the tests use: a real single-node SLURM (slurmctld, slurmd, munge), headless Chromium
	@missing=""; for b in $(SYSTEM_BINS); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing SLURM, munge and Chromium (missing:$$missing)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			--no-install-recommends slurmctld slurmd slurm-client munge chromium chromium-driver >/dev/null; \
	fi

lint: $(STAMP)  ## the house style: ruff (lint and format) over package, tests and benchmarks; mypy on the package
	$(BIN)/ruff check aurora_batch tests benchmarks
	$(BIN)/ruff format --check aurora_batch tests benchmarks
	$(BIN)/mypy

test: $(STAMP) system-deps lint  ## lint, then the whole suite, slow end-to-end tests included (real S3, Dask, SLURM), on 2 processes
	@# bytecode once: where PYTHONDONTWRITEBYTECODE is set, every worker and CLI process compiled the package again
	$(BIN)/python -m compileall -q aurora_batch tests >/dev/null
	$(BIN)/python -m pytest -ra -n 2

bench: $(STAMP)
	$(BIN)/python benchmarks/season_throughput.py

clean:
	rm -rf $(DEMO) .pytest_cache
