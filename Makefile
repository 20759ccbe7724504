# The two commands: `make demo` and `make test`. Both set up .venv from requirements.txt first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8501
BUNDLES ?= bundles
export HF_HUB_OFFLINE ?= 1

.PHONY: venv demo demo-bundle dashboard test lint bench clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

demo-bundle: venv
	$(PY) -m precompute demo --out $(BUNDLES)/demo

demo: demo-bundle dashboard

dashboard: venv
	@echo "Dashboard: http://localhost:$(PORT)  (Ctrl-C to stop)"
	$(PY) -m dashboard --server.headless true --server.port $(PORT) --server.address 127.0.0.1 \
		-- --bundles $(BUNDLES)

test: venv
	$(PY) -m pytest -q -ra tests

lint: venv
	$(PY) -m ruff check vrf_core precompute dashboard benchmarks tests

bench: venv
	$(PY) -m benchmarks.bench

clean:
	rm -rf $(BUNDLES)/demo test-artifacts .pytest_cache
