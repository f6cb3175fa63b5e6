#!/usr/bin/env bash
# Quick-start command 1: build the portal (release) and serve it on the embedded defaults:
# http://127.0.0.1:3000, SQLite file ./countersign.db. COUNTERSIGN_* variables still apply.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh" build
"$ROOT/scripts/build-site.sh" --release
exec "$ROOT/target/release/countersign" serve "$@"
