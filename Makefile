# Everything installs itself: a fresh machine needs only Python 3.11 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo

.PHONY: demo test bench clean

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
	@echo "open $(DEMO)/report/report.html in a browser"

test: $(STAMP)  ## the whole suite, slow end-to-end tests included
	$(BIN)/python -m pytest -ra

bench: $(STAMP)
	$(BIN)/python benchmarks/season_throughput.py

clean:
	rm -rf $(DEMO) .pytest_cache
