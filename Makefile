# The one entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3

.PHONY: help run build deps bench bench-peers bench-connections bench-security bench-cluster bench-micro sweep test test-core test-rust test-python test-tuning lint fmt doc fuzz ci

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

run: ## build and start the broker with its built-in defaults (0.0.0.0:1883, one shard per CPU)
	$(CARGO) run --release --bin shardmq

build: ## debug build of the broker and the load generator
	$(CARGO) build --workspace

deps: ## install what lint and the tests need when missing (rustfmt, clippy, Debian and Python packages)
	@$(CARGO) fmt --version >/dev/null 2>&1 && $(CARGO) clippy --version >/dev/null 2>&1 || \
		rustup component add rustfmt clippy
	@command -v mosquitto_pub >/dev/null && command -v mosquitto >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; }
	@$(PYTHON) -c 'import paho.mqtt, pytest, pytest_timeout, prometheus_client, cryptography' 2>/dev/null || \
		$(PYTHON) -m pip install -q 'paho-mqtt>=2,<3' pytest pytest-timeout prometheus-client cryptography
	@command -v node >/dev/null && command -v npm >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	@test -d tests/js/node_modules/mqtt || npm ci --prefix tests/js --no-audit --no-fund --silent

test: deps build test-rust test-python test-tuning ## everything: unit, property and integration tests (installs what it needs)

test-core: ## sans-IO unit and property tests, and the tidy rules; run anywhere, no io_uring needed
	$(CARGO) test --lib -- protocol:: session:: router:: message:: security::
	$(CARGO) test --test tidy

test-rust: ## cargo tests of the whole workspace
	$(CARGO) test --workspace

test-python: build ## black-box tests with paho-mqtt, mosquitto_pub/sub and raw sockets
	SHARDMQ_BIN=$(CURDIR)/target/debug/shardmq $(PYTHON) -m pytest tests/python -q

test-tuning: ## tuning/check against the real host and fake /proc trees
	bash tuning/test_check.sh

lint: ## formatting and clippy, warnings are errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

doc: ## API docs, warnings are errors
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

bench: ## the load suite vs shardmq and Mosquitto, same run (installs mosquitto; external generators when PEERS has them); results in target/bench/
	@command -v mosquitto >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }
	bash bench-harness/suite.sh

bench-peers: ## only the external-generator cases (nanomq_cli, emqtt-bench from PEERS: see bench-harness/README.md)
	BENCH_PARTS=peers $(MAKE) bench

bench-connections: ## only the device-fleet cases (8,000 and 19,000 connections, reconnect storm)
	BENCH_PARTS=connections $(MAKE) bench

bench-security: ## only the TLS and ACL cases (handshakes/s, fan-in over TLS, a 1,000-rule ACL): target/bench/security.md
	BENCH_PARTS=security $(MAKE) bench

bench-cluster: ## a 3-node loopback cluster vs one node: cross-node fan-in and pairs, QoS 0/1, per-node CPU/RSS, cluster counters; target/bench/cluster.md
	bash bench-harness/cluster.sh

bench-micro: ## micro-benchmarks of the codec, the trie and the ACL
	$(CARGO) bench --bench codec --bench trie --bench acl

sweep: ## scaling sweep over shard counts; results in target/sweep/
	bash tuning/sweep

fuzz: ## one minute of fuzzing per target (cargo install cargo-fuzz first)
	RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz decode_packet -- -max_total_time=60
	RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz topic -- -max_total_time=60
	RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz session_script -- -max_total_time=60
	RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz node_frame -- -max_total_time=60
	RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz log_replay -- -max_total_time=60

ci: deps lint test ## what CI runs: lint first (it fails fastest), then every test
