#!/usr/bin/env bash
# Lambda packaging and cold start: `cargo lambda build --release --output-format zip` per function
# (arm64 when the aarch64 standard library is installed, else x86_64), zip sizes, then the init
# time of each release binary against a Runtime API emulator and moto on loopback (median of 20).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-tools.sh
[ -x .venv/bin/cargo-lambda ] || .venv/bin/pip install --quiet cargo-lambda
export PATH="$PWD/.venv/bin:$PATH"
functions=(intake slack-callback cleric senso planner approval verify remediate pagerduty)
pkgs=(); for f in "${functions[@]}"; do pkgs+=(-p "$f"); done

arch=()
if rustup target list --installed | grep -q aarch64-unknown-linux-gnu; then arch=(--arm64); fi
cargo lambda build --release --output-format zip --lambda-dir target/lambda-zips "${arch[@]}" "${pkgs[@]}"
echo "| function | zip ($([ ${#arch[@]} -gt 0 ] && echo arm64 || echo x86_64)) |"
echo "|---|---|"
for f in "${functions[@]}"; do
  python3 -c 'import os,sys; print("| %s | %.2f MB |" % (sys.argv[1], os.path.getsize(sys.argv[2]) / 1e6))' "$f" "target/lambda-zips/$f/bootstrap.zip"
done
echo

cargo build --release -q "${pkgs[@]}" -p selfheal-tests --bin lambda-init
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$port/moto-api/" && break; sleep 0.1; done
bins=(); for f in "${functions[@]}"; do bins+=("target/release/$f"); done
target/release/lambda-init --moto "http://127.0.0.1:$port" --runs 20 "${bins[@]}"
