# hd fabric — `make run` starts the main job, `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= data/node

.PHONY: run demo test lint typecheck unit fuzz mutation bench clean venv browser-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Browser tests drive Debian's Chromium (never a downloaded browser build, ENV.md).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# The node creates its data directory itself (0700); `hd-node ui` prints the URL only
# once it has checked that the node answering is the one this directory started.
run: $(STAMP)
	@$(BIN)/hd-node run --data-dir $(DATA_DIR) & pid=$$!; \
	trap 'kill -INT $$pid 2>/dev/null; wait $$pid' INT TERM; \
	for i in $$(seq 100); do url=$$($(BIN)/hd-node ui --data-dir $(DATA_DIR) 2>/dev/null) \
	  && break; kill -0 $$pid 2>/dev/null || exit 1; sleep 0.2; done; \
	echo; echo "  hd fabric node is running. Open the UI:"; \
	echo "  $$url"; echo "  (Ctrl-C stops it)"; echo; \
	wait $$pid

demo: $(STAMP)
	$(BIN)/python examples/handshake_demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests fuzz examples bench tools

typecheck: $(STAMP)
	$(BIN)/mypy --strict src/hd_protocol

unit: $(STAMP) browser-deps
	$(BIN)/python -m pytest -q

test: lint typecheck unit

fuzz: $(STAMP)
	$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[fuzz]'
	for h in fuzz/fuzz_*.py; do echo "== $$h"; \
	  $(BIN)/python $$h -max_total_time=$(or $(FUZZ_SECONDS),60) -print_final_stats=1 \
	  || exit 1; done

# Mutation testing of the sans-IO core with the fast suites (unit, property, vectors;
# never the integration tests): one worker, niced. MUTANTS="hd_protocol.handshake*"
# limits a run to some mutants (mutmut keeps earlier results in ./mutants).
mutation: $(STAMP)
	$(BIN)/python -c 'import mutmut' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[mutation]'
	nice -n 10 $(BIN)/mutmut run --max-children $(or $(MUTATION_JOBS),1) $(MUTANTS)
	$(BIN)/python tools/mutation_score.py

bench: $(STAMP)
	$(BIN)/python bench/bench_codec.py
	$(BIN)/python bench/bench_link.py
	$(BIN)/python bench/bench_chat.py
	$(BIN)/python bench/bench_relay.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache mutants
