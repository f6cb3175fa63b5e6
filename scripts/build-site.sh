#!/usr/bin/env bash
# Build the portal: the wasm bundle, its JS glue, CSS and public assets into target/site, and
# the `countersign` server binary. Produces what `cargo leptos build` would, without needing
# cargo-leptos (a 27-minute install on 2 cores).
#   scripts/build-site.sh            debug build  -> target/debug/countersign
#   scripts/build-site.sh --release  release build (wasm-release profile + wasm-opt) -> target/release/countersign
#   scripts/build-site.sh --release --debug-server
#                                    the release bundle beside a debug server (target/debug/countersign):
#                                    what CI tests, with the server binary `cargo test` already built
#                                    (a cold release server build with LTO takes about 20 minutes here)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

release=0
debug_server=0
for arg in "$@"; do
  case "$arg" in
    --release) release=1 ;;
    --debug-server) debug_server=1 ;;
    *) die "unknown argument: $arg (expected --release and/or --debug-server)" ;;
  esac
done

SITE="$ROOT/target/site"
PKG="$SITE/pkg"
NAME="countersign"

if [ $release = 1 ]; then
  wasm_profile=wasm-release; wasm_dir=wasm-release; server_flags=(--release)
else
  wasm_profile=dev; wasm_dir=debug; server_flags=()
fi

log "building the frontend (wasm32, profile $wasm_profile)"
cargo build -p frontend --lib --target wasm32-unknown-unknown --profile "$wasm_profile"

rm -rf "$SITE"
mkdir -p "$PKG"
log "generating JS bindings"
wasm-bindgen --target web --no-typescript --out-dir "$PKG" --out-name "$NAME" \
  "target/wasm32-unknown-unknown/$wasm_dir/frontend.wasm"
mv "$PKG/${NAME}_bg.wasm" "$PKG/$NAME.wasm"

if [ $release = 1 ]; then
  log "optimising wasm ($(wasm-opt --version))"
  wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals -o "$PKG/$NAME.opt.wasm" "$PKG/$NAME.wasm"
  mv "$PKG/$NAME.opt.wasm" "$PKG/$NAME.wasm"
fi

cp style/main.css "$PKG/$NAME.css"
cp -r public/. "$SITE/"

[ $debug_server = 1 ] && server_flags=()
log "building the server (${server_flags[*]:-debug})"
cargo build -p server --bin countersign "${server_flags[@]}"

wasm_bytes=$(stat -c %s "$PKG/$NAME.wasm")
gz_bytes=$(gzip -9 -c "$PKG/$NAME.wasm" | wc -c)
log "site ready in target/site: $NAME.wasm $((wasm_bytes / 1024)) KiB, $((gz_bytes / 1024)) KiB gzip"
