# hd fabric — `make run` starts the main job, `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= data/node

.PHONY: run demo test check lint typecheck unit fuzz mutation bench clean venv browser-deps coturn \
	webrtc-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,webrtc,cluster]'
	touch $(STAMP)

venv: $(STAMP)

# The WebRTC tests run aiortc (the `webrtc` extra, part of the dev install): this adds
# it to a venv made before it was, and does nothing once it imports.
webrtc-deps: $(STAMP)
	@$(BIN)/python -c 'import aiortc' 2>/dev/null || \
	  $(BIN)/python -m pip install -q -e '.[dev,webrtc,cluster]'

# Browser tests drive Debian's Chromium (never a downloaded browser build, ENV.md) and
# check the page with axe-core from the npm registry, kept in the venv (make clean drops
# it). Both steps do nothing when already installed, so they work offline from then on.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BROWSER_DEPS := $(VENV)/browser-deps
AXE := $(BROWSER_DEPS)/node_modules/axe-core/axe.min.js
browser-deps: $(AXE)
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# The STUN tests run a real STUN server on loopback: Debian's coturn (`turnserver`,
# ENV.md). Installed only when missing, so this works offline from then on; the tests
# fail (never skip) without it. The package's service stays off (nothing starts it).
coturn:
	@command -v turnserver >/dev/null 2>&1 || { \
	  echo "installing Debian's coturn for the STUN tests"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn >/dev/null; }

$(AXE): | $(STAMP)
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing Debian's npm for axe-core"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq npm >/dev/null; }
	npm install --prefix $(BROWSER_DEPS) --no-audit --no-fund --no-save --loglevel=error axe-core@4
	@test -f $@

# `make run [NAME=alice] [DATA_DIR=dir] [UI_PORT=p] [PEER_PORT=p]`: the node creates its
# data directory itself, 0700 with any missing parent (default data/node); a default
# port (8765, 8766) that is taken is replaced by a free one, and the run says so; NAME names it (without NAME it keeps
# the name it was given last, from a tab or an earlier NAME). `hd-node ui` prints the
# URL only once it has checked that the node answering is the one this run started
# (node.json names its pid): a second `make run` on a directory in use stops with the
# node's one line. Ctrl-C reaches the node with the rest of the terminal's process
# group (and again from the recipe while it runs: one that came while Python was still
# starting, with SIGINT ignored as in any background job, would be lost); the recipe
# waits for the graceful stop and ends with the node's exit code (0), so make prints no
# error — GNU make itself still dies of the SIGINT it got, as it always does, which is
# how a calling shell knows it was interrupted. A SIGTERM to make is passed on.
# Whether HOST:PORT can be bound now (`make run` takes a free port when a default is taken).
FREE_PORT = $(BIN)/python -c 'import socket,sys; socket.socket().bind((sys.argv[1], int(sys.argv[2])))' 2>/dev/null

run: $(STAMP)
	@pid=; trap 'for i in 1 2 3 4 5 6 7 8 9 10; do kill -INT $$pid 2>/dev/null || break; \
	  sleep 0.5; done; wait $$pid; exit $$?' INT; \
	trap 'kill -TERM $$pid 2>/dev/null; wait $$pid; exit $$?' TERM; \
	set --; [ -z "$$NAME" ] || set -- --name "$$NAME"; \
	ui="$(UI_PORT)"; peer="$(PEER_PORT)"; \
	if [ -z "$$ui$$HD_UI_PORT" ] && ! $(FREE_PORT) "$${HD_UI_HOST:-127.0.0.1}" 8765; then ui=0; \
	  echo "port 8765 is in use: this node's UI takes a free port (or set UI_PORT=)"; fi; \
	if [ -z "$$peer$$HD_PEER_PORT" ] && ! $(FREE_PORT) "$${HD_PEER_HOST:-0.0.0.0}" 8766; then peer=0; \
	  echo "port 8766 is in use: this node's peer listener takes a free port (or set PEER_PORT=)"; fi; \
	[ -z "$$ui" ] || set -- "$$@" --ui-port "$$ui"; \
	[ -z "$$peer" ] || set -- "$$@" --peer-port "$$peer"; \
	$(BIN)/hd-node run --data-dir "$(DATA_DIR)" "$$@" & pid=$$!; \
	for i in $$(seq 150); do \
	  kill -0 $$pid 2>/dev/null || { wait $$pid; exit $$?; }; \
	  grep -qs "\"pid\": $$pid," "$(DATA_DIR)/node.json" \
	    && url=$$($(BIN)/hd-node ui --data-dir "$(DATA_DIR)" 2>/dev/null) && break; \
	  sleep 0.2; done; \
	[ -n "$$url" ] || url="(not answering yet; ask: $(BIN)/hd-node ui --data-dir $(DATA_DIR))"; \
	echo; echo "  hd fabric node is running. Open the UI:"; \
	echo "  $$url"; \
	peer_url=$$($(BIN)/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["peer_url"])' \
	  "$(DATA_DIR)/node.json" 2>/dev/null) && echo "  peers dial it at $$peer_url"; \
	echo "  (Ctrl-C stops it)"; echo; \
	wait $$pid

demo: $(STAMP)
	$(BIN)/python examples/handshake_demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests fuzz examples bench tools

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

# Three workers (most tests wait on sockets and timers, not the CPU) and, at the same
# time, the mDNS tests alone in a network namespace of their own: they share the host's
# multicast group with every node another test starts (tools/run_tests.sh).
unit: $(STAMP) browser-deps coturn webrtc-deps
	sh tools/run_tests.sh $(BIN)/python

test: lint typecheck unit

# The edit-test loop: lint, types and the suites that need no process, socket or
# server (the sans-IO core's unit and property tests, the vectors, the layer rules,
# the docs' examples) — under a minute. `make test` is still the one that runs all.
SANS_IO_SUITES := tests/unit tests/property tests/test_vectors.py tests/test_purity.py \
	tests/test_architecture.py tests/test_protocol_doc.py tests/test_module_paths.py \
	tests/test_readme.py
check: lint typecheck
	$(BIN)/python -m pytest -q -n 2 $(SANS_IO_SUITES)

fuzz: $(STAMP)
	$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[fuzz]'
	for h in fuzz/fuzz_*.py; do echo "== $$h"; \
	  $(BIN)/python $$h -max_total_time=$(or $(FUZZ_SECONDS),60) -print_final_stats=1 \
	  || exit 1; done

# Mutation testing of the sans-IO core with the fast suites (unit, property, vectors;
# never the integration tests): one worker, niced. MUTANTS="hd_protocol.peer.handshake*"
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
	$(BIN)/python bench/bench_relay_broker.py
	$(BIN)/python bench/bench_ladder.py
	$(BIN)/python bench/bench_lobby.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache mutants
