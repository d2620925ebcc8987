# qhybrid: `make demo` runs the main job, `make test` the test suite; both set up .venv first.
PY ?= python3
VENV ?= .venv
# Empty: pip's configured index (a local CPU wheel on the project machines). Users pick a build with e.g.
# TORCH_INDEX=https://download.pytorch.org/whl/cpu or .../whl/cu130
TORCH_INDEX ?=
EXTRAS ?= fl,falcon,llm,dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all lint bench bench-check clean constraints

setup: $(STAMP)

# Re-install only when the package metadata changes; the venv itself is created once.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "torch==2.13.0" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
	$(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: setup
	$(BIN)/qhybrid reproduce --preset quick

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q --runslow

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

# Fails while a row of docs/benchmarks.md rests on a result made before the code it depends on changed.
bench-check:
	python3 benchmarks/check_fresh.py

# Pin the versions now installed (after changing dependencies in pyproject.toml).
constraints: setup
	{ sed -n '1,3p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^torch=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info
