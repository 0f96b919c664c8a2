# The two commands of the README. Both create the environment first if it is missing.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test demo demo-forecasting demo-scopf demo-inverse dashboard clean-env

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The demo: one small run of each of the three applications, so that every application page
# of the dashboard has data (about 4-6 min on 2 cores, offline):
# - task-based forecasting on SimBench's shipped load profiles (the main job);
# - SC-OPF attack and defence on PGLib case14 (from $GRIDLEARN_DATA_DIR, default ../shared/data);
# - inverse AC-OPF on case14, the quick configuration.
# Full-size runs: see studies/README.md.
GRIDLEARN_DATA_DIR ?= $(abspath ../shared/data)
export GRIDLEARN_DATA_DIR

demo: setup
	$(MAKE) --no-print-directory demo-forecasting demo-scopf demo-inverse
	@echo "Results are in results/; view them with: make dashboard"

demo-forecasting: setup
	$(VENV)/bin/gridlearn run task-forecasting --demo --no-progress

demo-scopf: setup
	$(VENV)/bin/gridlearn run scopf --demo

demo-inverse: setup
	$(VENV)/bin/gridlearn run inverse-acopf --quick

dashboard: setup
	$(VENV)/bin/gridlearn dashboard

clean-env:
	rm -rf $(VENV)
