#!/usr/bin/env bash
# Install what building (and, with `e2e`, end-to-end testing) needs; skip what is there.
#   scripts/setup.sh build   wasm32 target, wasm-bindgen-cli (pinned to Cargo.lock), wasm-opt (npm binaryen),
#                            pdftotext (Debian's poppler-utils, for the report tests)
#   scripts/setup.sh e2e     Debian's Chromium and the Playwright npm packages
set -euo pipefail
source "$(dirname "$0")/lib.sh"

setup_build() {
  command -v cargo >/dev/null || die "cargo is not installed (install Rust with rustup)"
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown >&2
  fi
  local want; want="$(wasm_bindgen_version)"
  [ -n "$want" ] || die "cannot read the wasm-bindgen version from Cargo.lock"
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$want" ]; then
    log "installing wasm-bindgen-cli $want (a few minutes, once)"
    cargo install wasm-bindgen-cli --version "$want" --force >&2
  fi
  if [ "$(wasm-opt --version 2>/dev/null | awk '{print $3}')" != "${BINARYEN_NPM_VERSION%%.*}" ] \
      || [ "$(command -v wasm-opt)" != "$TOOLS/npm/node_modules/.bin/wasm-opt" ]; then
    command -v npm >/dev/null || apt_install nodejs npm
    log "installing wasm-opt from npm binaryen@$BINARYEN_NPM_VERSION (Debian's breaks hydration)"
    mkdir -p "$TOOLS/npm"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS/npm" "binaryen@$BINARYEN_NPM_VERSION" >&2
  fi
  # The report tests read the PDF summary's text with pdftotext.
  if ! command -v pdftotext >/dev/null; then
    log "installing poppler-utils (pdftotext)"
    apt_install poppler-utils
  fi
}

setup_e2e() {
  if [ ! -x "$CHROMIUM" ]; then
    log "installing Debian's chromium"
    apt_install chromium
  fi
  command -v npm >/dev/null || apt_install nodejs npm
  local e2e="$ROOT/end2end"
  if [ ! -d "$e2e/node_modules/@playwright/test" ] \
      || ! cmp -s "$e2e/package-lock.json" "$e2e/node_modules/.package-lock.json.installed" 2>/dev/null; then
    log "installing end2end npm packages"
    (cd "$e2e" && npm ci --silent --no-audit --no-fund >&2)
    cp "$e2e/package-lock.json" "$e2e/node_modules/.package-lock.json.installed"
  fi
}

case "${1:-build}" in
  build) setup_build ;;
  e2e) setup_e2e ;;
  all) setup_build; setup_e2e ;;
  *) die "usage: scripts/setup.sh build|e2e|all" ;;
esac
