#!/usr/bin/env bash
# The reliability and security proof in one command: the fault tests and the attack suite on the
# real binary, the cargo-fuzz targets, and schemathesis against the OpenAPI document.
#   scripts/reliability.sh          bounded, as CI runs them (scripts/test.sh runs each of these)
#   scripts/reliability.sh --long   longer fuzzing (5 min per target, 10 min of API fuzzing) and
#                                   the mixed load run on SQLite and PostgreSQL (release build)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
trap print_phases EXIT
export CS_TEST_POSTGRES_URL="${CS_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
fuzz_seconds=20 api_seconds=60 long=""
if [ "${1:-}" = "--long" ]; then fuzz_seconds=300 api_seconds=600 long=1; fi

phase "faults and attacks on the real binary" cargo test -p server --locked --test faults --test attacks
phase "fuzz enforcer and request decoding" "$ROOT/scripts/fuzz.sh" "$fuzz_seconds"
phase "build the binary" cargo build -p server --locked
phase "API fuzzing (schemathesis)" "$ROOT/scripts/api-fuzz.sh" "$api_seconds" "$ROOT/target/debug/countersign"
if [ -n "$long" ]; then
  phase "mixed load run" cargo bench -p server --locked --bench mixed_load
fi
