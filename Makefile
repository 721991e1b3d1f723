# Two commands do all the set-up on a fresh machine (see README):
#   make demo   provision this machine and deploy the bundled example app, then print its health
#   make test   install what the tests need (apt, pip, npm) and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test venv lint bench

$(PY): requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	touch $(PY)

venv: $(PY)

demo: $(PY)
	$(PY) deploy.py provision --yes
	$(PY) deploy.py deploy --yes --unhealthy-ok
	$(PY) deploy.py status

lint: $(PY)
	$(VENV)/bin/ruff check .

test: $(PY)
	bash .ci/install-test-deps.sh
	$(VENV)/bin/ruff check .
	$(PY) -m tests.harness.prepare
	$(PY) -m tests.run_in_groups

bench: $(PY)
	$(PY) bench/provision_bench.py
