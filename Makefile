# One command each for the two things a new user does: `make demo` and `make test`.
# Both create the virtual environment they need (CPU PyTorch on a machine without a GPU).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_SPEC ?= torch==2.13.0

.PHONY: test lint pytest docs doctest demo bench clean

$(STAMP): pyproject.toml examples/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,examples,docs]"
	$(PY) -m pip install -q --no-deps -e examples
	$(PY) -m pip install -q --no-deps "mmsa==2.2.1"
	touch $(STAMP)

test: $(STAMP) lint pytest docs doctest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

pytest: $(STAMP)
	$(PY) -m pytest -q

docs: $(STAMP)
	$(VENV)/bin/sphinx-build -q -W --keep-going -b html docs docs/_build/html

doctest: $(STAMP)
	$(VENV)/bin/sphinx-build -q -W --keep-going -b doctest docs docs/_build/doctest

demo: $(STAMP)
	$(PY) examples/dmmsa/train.py --config synthetic --out runs/demo

bench: $(STAMP)
	$(PY) benchmarks/bench_contrastive.py
	$(PY) benchmarks/bench_objective.py

clean:
	rm -rf docs/_build runs .pytest_cache .ruff_cache
