# Every target creates .venv and installs wframe with the extras it needs; nothing by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS := jax,examples,viz,test
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: $(STAMP)
	$(PY) examples/train_digits.py

test: $(STAMP)
	$(PY) -m ruff check wframe tests benchmarks examples
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_mlp.py

lint: $(STAMP)
	$(PY) -m ruff check wframe tests benchmarks examples

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
