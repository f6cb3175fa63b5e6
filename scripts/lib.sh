# Shared helpers for Countersign's scripts. Source it; do not run it.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
export PATH="$HOME/.cargo/bin:$TOOLS/npm/node_modules/.bin:$PATH"

# Versions pinned here and nowhere else (wasm-bindgen must equal the crate in Cargo.lock).
BINARYEN_NPM_VERSION="132.0.0"
SCHEMATHESIS_VERSION="4.32.5"
HYPOTHESIS_VERSION="6.170.17"
CHROMIUM="/usr/bin/chromium"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# phase NAME CMD...: run a step and print how long it took.
PHASES=()
phase() {
  local name="$1"; shift
  local start=$SECONDS
  log "$name"
  "$@"
  local took=$((SECONDS - start))
  PHASES+=("$(printf '%-34s %4dm%02ds' "$name" $((took / 60)) $((took % 60)))")
  log "$name done in ${took}s"
}
print_phases() {
  printf '\nphase timings:\n' >&2
  local p
  for p in "${PHASES[@]}"; do printf '  %s\n' "$p" >&2; done
}

wasm_bindgen_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 || die "apt-get install $* failed"
}
