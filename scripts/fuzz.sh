#!/usr/bin/env bash
# Bounded fuzzing of the enforcer (shell reader + decision, policy loader, the decision API's
# request decoding) with cargo-fuzz on the nightly toolchain. `scripts/fuzz.sh [SECONDS]` runs each target for SECONDS (default 20).
# Crashes are saved under enforcer/fuzz/artifacts/ and fail the run; turn each into a regression
# case in enforcer/tests/.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT/enforcer/fuzz"
seconds="${1:-20}"

if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain (minimal profile) for cargo-fuzz"
  rustup toolchain install nightly --profile minimal >&2 || { log "SKIPPED fuzzing: no nightly toolchain can be installed here"; exit 0; }
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz 0.13.2 (once)"
  cargo install cargo-fuzz --version 0.13.2 --locked >&2
fi
for target in shell_parser policy_loader api_decoding; do
  mkdir -p "corpus/$target"
  log "fuzzing $target for ${seconds}s"
  cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=4096 >&2
done
