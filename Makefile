# Every target sets up what it needs, so a fresh clone works with `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
APT_STAMP := $(VENV)/.apt-tools
# Third-party peers the tests talk to: nginx (upstream), curl and h2load (clients), ss (socket census).
APT_TOOLS := nginx-light nghttp2-client curl iproute2 tmux openssl haproxy

.PHONY: run test chaos lint typecheck unit bench bench-matrix bench-matrix-quick bench-ping-hold bench-loopback bench-testbed bench-first-byte clean apt-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(STAMP)

# Installs the Debian tools only when one is missing; needs root (CI runs as root).
apt-tools: | $(BIN)/python
	@if ! command -v nginx >/dev/null || ! command -v h2load >/dev/null || ! command -v curl >/dev/null || ! command -v ss >/dev/null || ! command -v tmux >/dev/null || ! command -v openssl >/dev/null || ! command -v haproxy >/dev/null; then \
		echo "installing Debian tools: $(APT_TOOLS)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_TOOLS) >/dev/null; \
	fi

run: $(STAMP)
	$(BIN)/cwnd-proxy demo

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

unit: $(DEV_STAMP)
	$(BIN)/pytest -q tests/unit

test: $(DEV_STAMP) apt-tools lint typecheck
	$(BIN)/pytest -q -ra

# The chaos suite at full scale (tests/chaos; CI runs it smaller as part of make test).
chaos: $(DEV_STAMP) apt-tools
	CWND_CHAOS=long $(BIN)/pytest -q tests/chaos

bench-loopback: $(DEV_STAMP) apt-tools
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m cwndproxy.lab.bench.loopback

# The warm-up benchmark on the emulated WAN (root: namespaces, TUN). Writes
# bench/results/warmup/{results.json,cwnd.png,ttlb.png}.
bench: $(DEV_STAMP) apt-tools
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/cwnd-proxy bench

# The path matrix (root): every cell x every arm (cwnd-proxy strategies, HAProxy, nginx,
# cold curl), about 40-45 minutes (each warm-up arm in a block of its own). Writes
# bench/results/matrix/{results.json,matrix.md,*.png}.
bench-matrix: $(DEV_STAMP) apt-tools
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/cwnd-proxy bench --matrix

bench-matrix-quick: $(DEV_STAMP) apt-tools
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/cwnd-proxy bench --matrix --quick

# How long HTTP/2 PINGs hold a Linux server's window (root, 10 minutes).
bench-ping-hold: $(DEV_STAMP) apt-tools
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/cwnd-proxy bench --ping-hold

# Time to first and last byte from an origin that sends large frames (root, ~1 minute).
bench-first-byte: $(DEV_STAMP) apt-tools
	$(BIN)/python -m cwndproxy.lab.bench.first_byte

bench-testbed: $(DEV_STAMP) apt-tools
	$(BIN)/python -m cwndproxy.lab.bench.testbed_check

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
