#!/usr/bin/env bash
# The one command that runs every test on a fresh machine:
#   installs the test tools, checks formatting and lints, validates the SAM template and the
#   state machine, starts moto (DynamoDB / Secrets Manager / Step Functions APIs) and Lightpanda
#   on 127.0.0.1, and runs the whole Rust test suite against them.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/setup-test-tools.sh
export PATH="$root/.venv/bin:$root/.tools/node_modules/.bin:$PATH"

logs=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { # url, name
  for _ in $(seq 1 100); do
    if curl -fs -o /dev/null "$1"; then return 0; fi
    sleep 0.1
  done
  echo "error: $2 did not start; its log:" >&2; cat "$logs/$2.log" >&2; exit 1
}

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

if [ -x scripts/validate-infra.sh ]; then
  echo "== template and state machine validation"
  bash scripts/validate-infra.sh
fi

moto_port=$(free_port)
moto_server -H 127.0.0.1 -p "$moto_port" >"$logs/moto.log" 2>&1 &
pids+=($!)
export SELFHEAL_MOTO_ENDPOINT="http://127.0.0.1:$moto_port"

lp_port=$(free_port)
LIGHTPANDA_DISABLE_TELEMETRY=true lightpanda serve --host 127.0.0.1 --port "$lp_port" \
  --cdp-max-connections 128 >"$logs/lightpanda.log" 2>&1 &
pids+=($!)
export SELFHEAL_LIGHTPANDA_WS="ws://127.0.0.1:$lp_port/"
export SELFHEAL_LIGHTPANDA_PID=$!

wait_http "$SELFHEAL_MOTO_ENDPOINT/moto-api/" moto
wait_http "http://127.0.0.1:$lp_port/json/version" lightpanda

echo "== the shipped runbooks against real PostgreSQL and Redis"
bash scripts/runbook-targets.sh

echo "== cargo build --workspace --bins (the Lambda function binaries the deployed-shape tests run)"
cargo build --workspace --bins --quiet

echo "== cargo test (moto at $SELFHEAL_MOTO_ENDPOINT, lightpanda at $SELFHEAL_LIGHTPANDA_WS)"
cargo test --workspace --no-fail-fast 2>&1 | tee "$logs/cargo-test.log"
status=${PIPESTATUS[0]}

passed=$(grep -Eo '[0-9]+ passed' "$logs/cargo-test.log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$logs/cargo-test.log" | awk '{s+=$1} END {print s+0}')
echo "== total: $passed passed, $failed failed"
exit "$status"
