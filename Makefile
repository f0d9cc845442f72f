# detseg developer targets. `make test` and `make demo` on a fresh clone do all the setup.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR := runs/demo

.PHONY: install test demo lint bench weights clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check detseg cli tests bench

bench: $(STAMP)
	$(PY) bench/eval_speed.py --quick
	$(PY) bench/infer_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache build *.egg-info
