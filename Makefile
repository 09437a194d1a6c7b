# Two commands for a newcomer: `make demo` (the main job, on bundled synthetic data and tiny models) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: setup demo test clean

setup:
	@bash scripts/setup_env.sh

demo: setup
	@$(PY) -m task_supplementor.cli demo

test: setup
	@$(PY) -m pytest -ra $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build install log .pytest_cache ros_ws/build ros_ws/install ros_ws/log
