#!/usr/bin/env bash
# Verification swarm benchmark: Lightpanda vs headless Chromium at 10 / 50 / 100 checks.
# Installs Lightpanda (PyPI wheel, into .venv) and Debian's chromium if missing, then runs the
# release build of tests/src/bin/swarm-bench.rs. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-tools.sh
if ! command -v chromium >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || echo "chromium unavailable: Lightpanda only"
fi
export PATH="$PWD/.venv/bin:$PATH"
cargo run --release -q -p selfheal-tests --bin swarm-bench -- "$@"
