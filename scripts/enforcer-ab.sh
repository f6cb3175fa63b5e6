#!/usr/bin/env bash
# Compare two builds of the enforcer's `evaluate_loop` example by wall clock on a noisy machine:
# they run alternately, A–B–A–B, ROUNDS times each, COUNT evaluations per run, and the minimum,
# first quartile and median of the nanoseconds per evaluation are printed for each.
#
#   cargo build --release -p enforcer --example evaluate_loop && cp target/release/examples/evaluate_loop /tmp/a
#   (change, build again) && cp target/release/examples/evaluate_loop /tmp/b
#   scripts/enforcer-ab.sh /tmp/a /tmp/b script 5000 30
#
# CASE is one the example knows (typical, script, file:PATH, with /parse or /analysis).
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: $0 BINARY_A BINARY_B [CASE [COUNT [ROUNDS]]]" >&2
  exit 2
fi
a="$1" b="$2" case="${3:-script}" count="${4:-5000}" rounds="${5:-30}"
times="$(mktemp)"
trap 'rm -f "$times"' EXIT
for _ in $(seq "$rounds"); do
  for which in A B; do
    binary="$a"
    [ "$which" = B ] && binary="$b"
    start="$(date +%s%N)"
    "$binary" "$case" "$count" >/dev/null
    end="$(date +%s%N)"
    echo "$which $(((end - start) / count))" >>"$times"
  done
done
for which in A B; do
  grep "^$which " "$times" | cut -d' ' -f2 | sort -n | awk -v which="$which" '
    { ns[NR] = $1 }
    END { printf "%s: min %d ns  q1 %d ns  median %d ns per evaluation (%d runs)\n",
          which, ns[1], ns[int(NR / 4) + 1], ns[int(NR / 2) + 1], NR }'
done
