# The two commands of the README. Both create the environment first if it is missing.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test demo dashboard clean-env

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/gridlearn doctor

dashboard: setup
	$(VENV)/bin/gridlearn dashboard

clean-env:
	rm -rf $(VENV)
