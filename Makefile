# Fresh-machine entry points (see README):
#   make demo   set up .venv and run the bouncing-ball demo (quick run, CPU)
#   make test   set up .venv and run the test suite
#   make docs   build the API reference into docs/_build/html
PYTHON ?= python3
VENV ?= .venv
# A CPU build of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
BIN = $(VENV)/bin

.PHONY: setup demo test lint docs bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/python examples/bouncing_ball.py --resume

# the suite on every core (pytest-xdist; each worker gets its share of torch's threads)
test: setup
	$(BIN)/python -m pytest -q -n auto --dist worksteal

# the API reference from the docstrings (Sphinx, autodoc + napoleon); any warning fails the build
docs: setup
	$(BIN)/pip install --quiet -e ".[docs]"
	$(BIN)/sphinx-build -W --keep-going -q -b html docs/api docs/_build/html

lint: setup
	$(BIN)/ruff check pyro_kvae tests examples benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_kalman.py

clean:
	rm -rf $(VENV) *.egg-info
