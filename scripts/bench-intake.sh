#!/usr/bin/env bash
# Intake under load on loopback: p50/p99 at 100 and 500 req/s, then a 10,000-delivery storm
# (30 % duplicates, shuffled, 64 concurrent). Release build of tests/src/bin/intake-load.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-tools.sh
export PATH="$PWD/.venv/bin:$PATH"
cargo run --release -q -p selfheal-tests --bin intake-load -- "$@"
