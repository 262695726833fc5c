# aicert — the two commands a newcomer needs are `make demo` and `make test`.
VENV     ?= .venv
# Where `make demo` writes the image, the job's output and the certificate.
OUT      ?= out
PYTHON   ?= python3
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed

.PHONY: setup test lint unit demo clean

# Host packages (apt) and the project in a virtual environment (pip), from this tree's files.
setup: $(STAMP)
$(STAMP): pyproject.toml scripts/install-host-deps.sh
	bash scripts/install-host-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[build,agent,azure,gcp,aws,bom,test]'
	touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	MYPY=$(abspath $(VENV))/bin/mypy bash scripts/typecheck.sh

# The whole suite: lint, unit, swtpm integration and system tests.
test: lint
	$(VENV)/bin/pytest

unit: setup
	$(VENV)/bin/pytest -m 'not system'

# The main job end to end: build the image, boot it, train, verify, tamper, refuse.
demo: setup
	bash scripts/demo.sh $(OUT)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
