# Every target creates .venv and installs wframe with the extras it needs; nothing by hand.
# The demo installs only what it runs (no test oracles: torch alone is ~750 MB).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench docs lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[$*]"
	touch $@

demo: $(VENV)/.installed-examples
	$(PY) examples/train_digits.py

# The suite's Python processes (two pytest workers, the examples and CLI runs they start)
# share wframe's and the tests' compiled bytecode; where the environment sets
# PYTHONDONTWRITEBYTECODE each compiled them again (collection: 9.8 -> 6.3 s a worker).
test: export PYTHONDONTWRITEBYTECODE =
test: $(VENV)/.installed-jax,examples,viz,test
	$(PY) -m ruff check wframe tests benchmarks examples
	$(PY) -m ruff format --check wframe tests benchmarks examples
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n 2 --dist worksteal

bench: $(VENV)/.installed-jax,examples,bench
	$(PY) -m wframe bench --out benchmarks/results

# The documentation site into site/: broken links, references and examples fail the build.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: $(VENV)/.installed-jax,examples,viz,test
	$(PY) -m ruff check wframe tests benchmarks examples
	$(PY) -m ruff format --check wframe tests benchmarks examples
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .ruff_cache
