# The two commands of the README. Both create the environment first if it is missing.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test demo dashboard clean-env

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The main job: the task-based forecasting study on SimBench's shipped load profiles
# (offline, a few minutes on 2 cores), leaving a run directory the dashboard shows.
demo: setup
	$(VENV)/bin/gridlearn run task-forecasting --demo
	@echo "Results are in results/task_forecasting/; view them with: make dashboard"

dashboard: setup
	$(VENV)/bin/gridlearn dashboard

clean-env:
	rm -rf $(VENV)
