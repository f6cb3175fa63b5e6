#!/usr/bin/env bash
# There is no Docker engine here, so check what we can: every path the runtime stage copies out
# of the builder exists after the release build (builder WORKDIR /build = the repository root).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
missing=0 checked=0
while read -r src; do
  rel="${src#/build/}"
  checked=$((checked + 1))
  if [ -e "$rel" ]; then
    log "ok: $rel"
  elif [[ "$rel" == target/release/* ]] && [ -e "target/debug/${rel#target/release/}" ] \
    && grep -q 'build-site.sh --release' Dockerfile; then
    # CI builds the server in debug (scripts/test.sh); the image's `build-site.sh --release`
    # puts the same binary target under target/release.
    log "ok: $rel (built by the image's build-site.sh --release; target/debug/${rel#target/release/} here)"
  else
    log "MISSING: $rel (copied by the Dockerfile)"; missing=1
  fi
done < <(awk '/^COPY --from=builder/ { for (i = 3; i < NF; i++) if ($i !~ /^--/) print $i }' Dockerfile)
[ $checked -gt 0 ] || die "no COPY --from=builder lines found in the Dockerfile"
[ $missing = 0 ] || die "the Dockerfile copies paths the release build does not produce"
log "$checked Dockerfile copy sources exist"
