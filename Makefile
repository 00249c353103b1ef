# The template's own commands. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
# Test processes in parallel; the machine CI uses has 2 cores, and much of the
# time goes to waiting on subprocesses and servers.
WORKERS ?= 3

.PHONY: test demo bench clean

$(VENV)/.ready: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet uv
	$(UV) pip install --quiet --compile-bytecode --python $(VENV)/bin/python --group dev
	touch $@

test: $(VENV)/.ready  ## Run the template's whole test suite
	$(VENV)/bin/python -m pytest -n $(WORKERS) --dist loadgroup --durations=30

demo: $(VENV)/.ready  ## Generate the default project and serve it on embedded defaults
	rm -rf build/demo
	$(VENV)/bin/cookiecutter . --no-input --output-dir build/demo
	cd build/demo/my-service && UV_PYTHON_DOWNLOADS=never ../../../$(UV) run uvicorn app.main:app --port 8000

bench: $(VENV)/.ready  ## Benchmark the default project against bare FastAPI and Starlette (needs wrk)
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) build
