# modgate — build, run and test. `make run` and `make test` work on a fresh Debian machine.

CARGO    ?= cargo
GO_BIN   ?= /usr/lib/go-1.23/bin/go
PG_BIN   ?= /usr/lib/postgresql/15/bin
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT      := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get
BACKPORTS := /etc/apt/sources.list.d/bookworm-backports.sources


.PHONY: all run test order-check rust deps go-toolchain postgres garage cyclonedx-validator build build-release certs check lint fuzz-check fmt unit e2e bench bench-micro bench-cluster load clean

all: build

## rust: cargo, rustc, clippy and rustfmt. With none on PATH, Debian's own current toolchain is
## installed: bookworm's cargo-web/rustc-web (1.96 from its security updates; cargo-web installs
## /usr/bin/cargo). An older cargo than RUST_MIN stops here with the command that fixes it.
RUST_MIN := 1.85
RUST_DEBIAN := cargo-web rustc-web rust-web-clippy rustfmt-web
rust:
	@command -v $(CARGO) >/dev/null 2>&1 || { \
	  echo "make: no $(CARGO) on PATH: installing Debian's Rust toolchain ($(RUST_DEBIAN))"; \
	  $(APT) update -qq && $(APT) install -y -qq $(RUST_DEBIAN); }
	@v=$$($(CARGO) --version | cut -d' ' -f2); \
	  [ "$$(printf '%s\n%s\n' $(RUST_MIN) "$$v" | sort -V | head -n1)" = $(RUST_MIN) ] || { \
	  echo "make: $(CARGO) $$v is older than $(RUST_MIN); install a newer one:" >&2; \
	  echo "  sudo apt-get install -t bookworm-security $(RUST_DEBIAN)   (or: rustup update stable)" >&2; \
	  exit 2; }

## deps: build prerequisites (the Rust toolchain; cmake for zlib-ng; git, curl and python3 —
## whose `ssl` module resumes TLS sessions — and systemd-analyze, which checks the shipped unit,
## for tests) from Debian
deps: rust
	@command -v cmake >/dev/null && command -v curl >/dev/null && command -v python3 >/dev/null \
	  && command -v git >/dev/null && command -v systemd-analyze >/dev/null \
	  && [ -d /etc/ssl/certs ] || { \
	  $(APT) update -qq && $(APT) install -y -qq cmake curl git python3 systemd ca-certificates; }

## go-toolchain: the real `go` client (Go 1.23 from bookworm-backports) for end-to-end tests
go-toolchain:
	@[ -x $(GO_BIN) ] || { \
	  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
	    | $(SUDO) tee $(BACKPORTS) >/dev/null && \
	  $(APT) update -qq && $(APT) install -y -qq -t bookworm-backports golang-1.23-go; }
	@$(GO_BIN) version

## postgres: PostgreSQL 15 (Debian's postgresql-15) for the tests' throwaway servers
## (modgate_testkit::PgServer, which finds it in $$MODGATE_PG_BIN). Only the programs are used:
## the tests run their own clusters, never the package's.
postgres:
	@[ -x $(PG_BIN)/initdb ] || { \
	  $(APT) update -qq && $(APT) install -y -qq postgresql-15; }
	@$(PG_BIN)/postgres --version

## cyclonedx-validator: the official CycloneDX JSON schemas and a validator for them (PyPI
## cyclonedx-python-lib, which bundles the schemas, with its json-validation extra) in a venv
## kept between runs on this machine (under $$HOME/.cache/modgate, one venv per version), for the
## `modgate fetched --format cyclonedx` end-to-end test (which is given it in
## $$MODGATE_CYCLONEDX_PYTHON). python3-venv comes from Debian when missing.
CYCLONEDX_VERSION := 11.12.0
CYCLONEDX_LIB := cyclonedx-python-lib[json-validation]==$(CYCLONEDX_VERSION)
TOOLS_CACHE ?= $(HOME)/.cache/modgate
CYCLONEDX_VENV := $(TOOLS_CACHE)/cyclonedx-$(CYCLONEDX_VERSION)
cyclonedx-validator: deps
	@$(CYCLONEDX_VENV)/bin/python -c 'import cyclonedx.validation.json, jsonschema' 2>/dev/null || { \
	  rm -rf $(CYCLONEDX_VENV); \
	  python3 -m venv $(CYCLONEDX_VENV) 2>/dev/null || { rm -rf $(CYCLONEDX_VENV); \
	    $(APT) update -qq && $(APT) install -y -qq python3-venv && python3 -m venv $(CYCLONEDX_VENV); } && \
	  $(CYCLONEDX_VENV)/bin/pip install -q --disable-pip-version-check '$(CYCLONEDX_LIB)'; }
	@$(CYCLONEDX_VENV)/bin/python -c 'from cyclonedx.schema import SchemaVersion; from cyclonedx.validation.json import JsonStrictValidator; JsonStrictValidator(SchemaVersion.V1_6); print("cyclonedx validator: CycloneDX 1.6 JSON schema ready")'

## garage: the Garage S3-compatible server (crates.io `garage`, built with cargo) for the tests'
## throwaway object stores (modgate_testkit::GarageServer, which finds it in
## $$MODGATE_GARAGE_BIN). Slow to build (~13+ minutes the first time on a 2-core machine), so it
## is kept between runs on this machine under $$HOME/.cache/modgate, one directory per version,
## like the CycloneDX venv; `--locked` builds it with the dependency versions Garage released.
GARAGE_VERSION := 2.5.0
GARAGE_ROOT := $(TOOLS_CACHE)/garage-$(GARAGE_VERSION)
GARAGE_BIN ?= $(GARAGE_ROOT)/bin/garage
garage: rust deps
	@[ -x $(GARAGE_BIN) ] || \
	  $(CARGO) install garage --version $(GARAGE_VERSION) --locked --root $(GARAGE_ROOT)
	@$(GARAGE_BIN) --version 2>/dev/null || $(GARAGE_BIN) --help | head -n1

build: deps
	$(CARGO) build -p modgate

build-release: deps
	$(CARGO) build --release -p modgate

## certs: development PKI in certs/ (kept if present)
certs: build-release
	./target/release/modgate certs --out certs

## run: serve the shipped gateway.yaml
run: certs
	./target/release/modgate run -c gateway.yaml

## check: validate gateway.yaml
check: build
	./target/debug/modgate check gateway.yaml

fmt:
	$(CARGO) fmt --all

## lint: formatting, clippy, and the binary crate's imports running down its floors
## (scripts/check-floors.py; docs/architecture.md, "Floors of the binary crate")
lint: deps
	python3 scripts/check-floors.py
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## fuzz-check: the cargo-fuzz targets (a separate workspace, crates/modgate-protocol/fuzz) still
## compile, on stable: type-checked without linking libFuzzer, in their own target directory.
## Fuzzing itself is `cargo +nightly fuzz run parse_request` in crates/modgate-protocol.
FUZZ_DIR := crates/modgate-protocol/fuzz
fuzz-check: deps
	$(CARGO) check --manifest-path $(FUZZ_DIR)/Cargo.toml --no-default-features --bins \
	  --target-dir $(CURDIR)/target/fuzz-check

## Tests that need a real tool (`go`, `git`) fail when it is missing under CI=true (never skip
## silently) and tally themselves in $(TALLY_DIR); `tally` prints how many ran the real `go`.
TALLY_DIR := $(CURDIR)/target/tally

## unit: the testkit's and modgate-git's oracle tests run the real `go`, and tests run throwaway
## PostgreSQL and Garage servers, so the toolchain and the servers come first. Of the benches
## crate only mgload's tests (the criterion benchmarks are `bench-micro`).
unit: deps go-toolchain postgres garage
	rm -rf $(TALLY_DIR)/unit
	MODGATE_PG_BIN=$(PG_BIN) MODGATE_GARAGE_BIN=$(GARAGE_BIN) MODGATE_TALLY_DIR=$(TALLY_DIR)/unit $(CARGO) test --workspace --exclude modgate-e2e --exclude modgate-benches
	$(CARGO) test -p modgate-benches --bin mgload --test mgload
	@./tests/tally.sh $(TALLY_DIR)/unit unit

## e2e: the real modgate binary with the real go command, curl and fixture upstreams. Every
## fixture upstream logs each request it receives into $(CANARY_DIR); the canary test runs last
## and fails if any fixture not marked private saw a corp.example.com path.
CANARY_DIR := $(CURDIR)/target/canary
e2e: deps go-toolchain postgres garage cyclonedx-validator build
	rm -rf $(CANARY_DIR) $(TALLY_DIR)/e2e
	MODGATE_PG_BIN=$(PG_BIN) MODGATE_GARAGE_BIN=$(GARAGE_BIN) MODGATE_CYCLONEDX_PYTHON=$(CYCLONEDX_VENV)/bin/python MODGATE_TALLY_DIR=$(TALLY_DIR)/e2e MODGATE_CANARY_DIR=$(CANARY_DIR) $(CARGO) test -p modgate-e2e -- --skip canary_saw_no_private_path
	MODGATE_CANARY_DIR=$(CANARY_DIR) $(CARGO) test -p modgate-e2e --test canary -- --nocapture
	@./tests/tally.sh $(TALLY_DIR)/e2e e2e

## test: everything CI runs. order-check first: on a fresh machine every install step must come
## before the first test that needs it.
test: order-check lint fuzz-check unit e2e

## order-check: `make -n test` with no Go, no PostgreSQL and no Garage installed must install all
## three before any `cargo test` runs.
order-check:
	@./tests/make-order.sh

## bench: modgate and nginx side by side over TLS 1.3 + HTTP/2 (issue 11): cached small hits with
## logs on and off, with and without a client certificate and over HTTP/1.1 (issue 22, mgload), zips;
## medians of 3 alternating rounds. Installs nginx and h2load if missing, builds mgload.
## Not part of `test`. Settings at the top of benches/bench.sh; figures in docs/performance.md.
bench: deps
	./benches/bench.sh

## bench-micro: criterion micro-benchmarks (figures in docs/performance.md)
bench-micro: deps
	$(CARGO) bench -p modgate-benches --bench parse_and_route --bench access --bench audit \
	  --bench policy_scale --bench per_hit

## bench-cluster: three replicas on PostgreSQL and Garage (issue 23): cold fan-in, upstream
## fetches per object, first hits from the store, local hits; and the checksum database on
## SQLite and on PostgreSQL (appends, lookups, tiles) (figures in docs/performance.md;
## settings from the environment, see the top of benches/cluster.rs). Needs h2load.
bench-cluster: deps postgres garage build-release
	@command -v h2load >/dev/null || { $(APT) update -qq && $(APT) install -y -qq nghttp2-client; }
	MODGATE_PG_BIN=$(PG_BIN) MODGATE_GARAGE_BIN=$(GARAGE_BIN) $(CARGO) bench -p modgate-benches --bench cluster
	MODGATE_PG_BIN=$(PG_BIN) $(CARGO) bench -p modgate-benches --bench sumdb_store

## load: modgate and nginx (proxy_cache) side by side under wrk, and peak RSS while a 256 MiB
## zip passes through (figures in docs/performance.md; settings at the top of benches/load.sh)
load: deps
	./benches/load.sh

clean:
	$(CARGO) clean
