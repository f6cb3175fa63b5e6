#!/usr/bin/env bash
# API fuzzing from the OpenAPI document with schemathesis (PyPI, pinned in lib.sh, installed into
# .tools/schemathesis once): starts `countersign serve` on a free loopback port against a fresh
# SQLite file, with an API token that may ask for decisions, read jobs and export the trail, and
# runs every documented operation with generated and mutated inputs for a bounded time.
# Fails on any 5xx, on an answer that breaks the documented schema, or on a crash.
#   scripts/api-fuzz.sh [SECONDS] [BINARY]   (default 60 s; target/release/countersign, else debug)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
seconds="${1:-60}"
binary="${2:-}"
if [ -z "$binary" ]; then
  for candidate in "$ROOT/target/release/countersign" "$ROOT/target/debug/countersign"; do
    if [ -x "$candidate" ]; then binary="$candidate"; break; fi
  done
fi
[ -x "${binary:-}" ] || die "no countersign binary: build it first (cargo build -p server)"

venv="$TOOLS/schemathesis"
if [ "$("$venv/bin/st" --version 2>/dev/null | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ] \
    || [ "$("$venv/bin/python" -c 'import hypothesis; print(hypothesis.__version__)' 2>/dev/null)" != "$HYPOTHESIS_VERSION" ]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION (once)"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" "hypothesis==$HYPOTHESIS_VERSION" >&2
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
export COUNTERSIGN_DATABASE_URL="sqlite://$work/fuzz.db"
export COUNTERSIGN_LOG_LEVEL="${API_FUZZ_LOG:-warn}"
export COUNTERSIGN_ADMIN_PASSWORD="api fuzz admin password"
mkdir -p "$work/site/pkg" && : > "$work/site/pkg/countersign.js"
export COUNTERSIGN_SITE_ROOT="$work/site"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export COUNTERSIGN_BIND="127.0.0.1:$port"
# Generous limits: the fuzzer's volume is not an attack to throttle.
export COUNTERSIGN_API_RATE_LIMIT_PER_SEC=0

"$binary" migrate >&2
token="$("$binary" token create --name api-fuzz --role auditor \
  --capability ssh-linux --capability remote-exec --capability local-shell 2>/dev/null)"
"$binary" serve > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$work/server.log" >&2; die "the server did not start"; }

log "schemathesis for ${seconds}s against http://127.0.0.1:$port/api/v1/openapi.json"
status=0
# Run from the scratch folder: schemathesis keeps a `.schemathesis/` cache where it runs.
cd "$work"
# One worker: with two, hypothesis's lambda introspection ran Python 3.11's parser from two
# threads at once and failed inside the tool ("AST constructor recursion depth mismatch").
"$venv/bin/st" --no-color run "http://127.0.0.1:$port/api/v1/openapi.json" \
  --url "http://127.0.0.1:$port" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-time "$seconds" \
  --request-timeout 30 \
  --workers 1 \
  --suppress-health-check too_slow,filter_too_much >&2 || status=$?
if ! kill -0 "$server_pid" 2>/dev/null; then
  cat "$work/server.log" >&2
  die "the server died during the run"
fi
if grep -q "panicked" "$work/server.log"; then
  grep -B2 -A8 "panicked" "$work/server.log" >&2
  die "the server panicked during the run"
fi
[ "$status" -eq 0 ] || die "schemathesis found failures (above)"
log "API fuzzing passed"
