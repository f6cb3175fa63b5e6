#!/usr/bin/env bash
# Quick-start command 2: every check and test, as CI runs them (.ci/run calls this script).
# Formatting, clippy per target, unit and integration tests (SQLite and PostgreSQL), bounded
# fuzzing, the site build (the release browser bundle beside the debug server binary the tests
# built: a cold release server build with LTO would add about 20 minutes), the Dockerfile's copy
# paths, API fuzzing from the OpenAPI
# document, and the Playwright suite in Debian's Chromium.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
trap print_phases EXIT

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Tests that need PostgreSQL use this server (trust auth); they create and drop their own schemas.
export CS_TEST_POSTGRES_URL="${CS_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

phase "install build tools" "$ROOT/scripts/setup.sh" build
phase "install e2e tools" "$ROOT/scripts/setup.sh" e2e
phase "cargo fmt --check" cargo fmt --all --check
phase "clippy: server + app (ssr)" cargo clippy -p server -p app --all-targets --locked -- -D warnings
phase "clippy: enforcer (native)" cargo clippy -p enforcer --all-targets --locked -- -D warnings
phase "clippy: enforcer (wasm32)" cargo clippy -p enforcer --target wasm32-unknown-unknown --locked -- -D warnings
phase "clippy: frontend (hydrate, wasm32)" cargo clippy -p frontend --target wasm32-unknown-unknown --locked -- -D warnings
phase "enforcer builds for wasm32" cargo build -p enforcer --target wasm32-unknown-unknown --locked
phase "cargo test" cargo test -p enforcer -p app -p server --locked
phase "fuzz enforcer (bounded)" "$ROOT/scripts/fuzz.sh" "${FUZZ_SECONDS:-20}"
phase "site build (release bundle, debug server)" "$ROOT/scripts/build-site.sh" --release --debug-server
phase "Dockerfile copy paths" "$ROOT/scripts/check-dockerfile.sh"
phase "API fuzzing (schemathesis, bounded)" "$ROOT/scripts/api-fuzz.sh" "${API_FUZZ_SECONDS:-60}" "$ROOT/target/debug/countersign"
# Free loopback ports for the server and the OpenID provider Playwright starts (and stops) itself.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
E2E_PORT="$(free_port)"
E2E_OIDC_PORT="$(free_port)"
while [ "$E2E_OIDC_PORT" = "$E2E_PORT" ]; do E2E_OIDC_PORT="$(free_port)"; done
export E2E_PORT E2E_OIDC_PORT
export E2E_BINARY="$ROOT/target/debug/countersign"
phase "playwright (chromium)" bash -c 'cd end2end && npx playwright test'
