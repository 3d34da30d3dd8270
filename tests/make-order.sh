#!/usr/bin/env bash
# Checks the install order of `make test` as a fresh machine would see it: with no Go toolchain
# (GO_BIN points nowhere), no PostgreSQL (PG_BIN points nowhere), no Garage (GARAGE_BIN points
# nowhere) and no cargo (CARGO points nowhere), the Go toolchain, PostgreSQL and Garage installs
# must be planned before the first `cargo test`, and the Rust toolchain and the Debian
# prerequisites before the first cargo command (`cargo install garage` included). Run by
# `make test` itself.
set -euo pipefail
cd "$(dirname "$0")/.."
plan=$(make -n test GO_BIN=/nonexistent/go CARGO=/nonexistent/cargo PG_BIN=/nonexistent GARAGE_BIN=/nonexistent 2>&1 | grep -v '^make')
line_of() { { grep -n -m1 -e "$1" <<<"$plan" || true; } | cut -d: -f1; }
go_install=$(line_of 'install -y -qq -t bookworm-backports golang-1.23-go')
pg_install=$(line_of 'install -y -qq postgresql-15')
garage_install=$(line_of 'cargo install garage --version')
deps=$(line_of 'install -y -qq cmake curl git python3 systemd')
rust_install=$(line_of 'install -y -qq $(RUST_DEBIAN)\|install -y -qq cargo-web rustc-web')
first_cargo=$(line_of '^/nonexistent/cargo \(fmt\|clippy\|build\|test\|check\)')
first_test=$(line_of '^/nonexistent/cargo test\|cargo test')
fail() { echo "make-order: $*" >&2; echo "--- make -n test GO_BIN=/nonexistent/go CARGO=/nonexistent/cargo PG_BIN=/nonexistent GARAGE_BIN=/nonexistent:" >&2; echo "$plan" >&2; exit 1; }
[ -n "$go_install" ] || fail "no Go toolchain install step in the plan"
[ -n "$pg_install" ] || fail "no PostgreSQL install step in the plan"
[ -n "$garage_install" ] || fail "no Garage install step (cargo install garage) in the plan"
[ -n "$deps" ] || fail "no Debian prerequisites step in the plan"
[ -n "$rust_install" ] || fail "no Rust toolchain install step in the plan"
[ -n "$first_cargo" ] || fail "no cargo command in the plan"
[ -n "$first_test" ] || fail "no cargo test in the plan"
[ "$rust_install" -lt "$first_cargo" ] || fail "cargo (line $first_cargo) runs before the Rust toolchain is installed (line $rust_install)"
[ "$go_install" -lt "$first_test" ] || fail "cargo test (line $first_test) runs before the Go toolchain is installed (line $go_install)"
[ "$pg_install" -lt "$first_test" ] || fail "cargo test (line $first_test) runs before PostgreSQL is installed (line $pg_install)"
[ "$garage_install" -lt "$first_test" ] || fail "cargo test (line $first_test) runs before Garage is installed (line $garage_install)"
[ "$rust_install" -lt "$garage_install" ] || fail "cargo install garage (line $garage_install) runs before the Rust toolchain is installed (line $rust_install)"
[ "$deps" -lt "$garage_install" ] || fail "cargo install garage (line $garage_install) runs before the Debian prerequisites (line $deps)"
[ "$deps" -lt "$first_cargo" ] || fail "cargo (line $first_cargo) runs before the Debian prerequisites (line $deps)"
echo "make-order: Go toolchain (plan line $go_install), PostgreSQL (line $pg_install) and Garage (line $garage_install) installs precede the first cargo test (line $first_test)"
