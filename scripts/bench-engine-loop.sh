#!/usr/bin/env bash
# Cost per transition of the local engine on long executions, through the CLI as an operator
# runs it: `selfheal run-state-machine` (release build) with the durable SQLite store, on the
# Choice/Pass loop in shared/benches/fixtures/loop.asl.json (2N+3 transitions for {"n": N}).
#
#   cargo build --release -p selfheal-cli --bin selfheal
#   bash scripts/bench-engine-loop.sh [ROUNDS...]        # default: 500 1000 2000 4000 5000
#
# Prints one line per size: transitions, wall seconds (best of 3), µs per transition.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${SELFHEAL_BIN:-${CARGO_TARGET_DIR:-target}/release/selfheal}"
[[ -x "$bin" ]] || { echo "no $bin: cargo build --release -p selfheal-cli --bin selfheal" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rounds=("$@")
[[ ${#rounds[@]} -gt 0 ]] || rounds=(500 1000 2000 4000 5000)
printf '%-8s %-12s %-10s %s\n' rounds transitions wall_s us_per_transition
for n in "${rounds[@]}"; do
  echo "{\"n\": $n}" >"$work/input.json"
  best=""
  for _ in 1 2 3; do
    rm -f "$work"/db.sqlite*
    start=$(date +%s.%N)
    out=$("$bin" run-state-machine shared/benches/fixtures/loop.asl.json \
      --mock-config shared/benches/fixtures/loop.mock.json --test-case Loop --state-machine loop \
      --input "$work/input.json" --db "$work/db.sqlite")
    end=$(date +%s.%N)
    grep -q '"SUCCEEDED"' <<<"$out" || { echo "run of $n rounds did not succeed: ${out:0:400}" >&2; exit 1; }
    t=$(echo "$end - $start" | bc -l)
    if [[ -z "$best" ]] || (( $(echo "$t < $best" | bc -l) )); then best=$t; fi
  done
  transitions=$((2 * n + 3))
  printf '%-8s %-12s %-10.3f %.1f\n' "$n" "$transitions" "$best" "$(echo "$best * 1000000 / $transitions" | bc -l)"
done
