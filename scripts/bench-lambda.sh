#!/usr/bin/env bash
# Lambda packaging and cold start. Each function is built on its own
# (`cargo lambda build --release --output-format zip -p NAME`), so cargo's feature unification
# cannot give one function another's adapters (shared/Cargo.toml [features]); then zip sizes, and
# the init time of each x86_64 release binary against a Runtime API emulator and moto on
# loopback (median of 20).   Usage: bash scripts/bench-lambda.sh [x86_64|arm64 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-tools.sh
[ -x .venv/bin/cargo-lambda ] || .venv/bin/pip install --quiet cargo-lambda==1.9.2
export PATH="$PWD/.venv/bin:$PATH"
functions=(intake slack-callback cleric senso planner approval verify remediate pagerduty)
archs=("$@"); [ ${#archs[@]} -gt 0 ] || archs=(x86_64 arm64)

for arch in "${archs[@]}"; do
  flag=(); [ "$arch" = arm64 ] && flag=(--arm64)
  [ "$arch" = arm64 ] && rustup target add aarch64-unknown-linux-gnu >/dev/null
  echo "| function | zip ($arch) | binary | build |"
  echo "|---|---|---|---|"
  for f in "${functions[@]}"; do
    start=$(date +%s)
    cargo lambda build --quiet --release --output-format zip --lambda-dir "target/lambda-zips-$arch" "${flag[@]}" -p "$f" >/dev/null
    end=$(date +%s)
    python3 - "$f" "target/lambda-zips-$arch/$f/bootstrap.zip" "$((end - start))" <<'PY'
import os, sys, zipfile
name, path, secs = sys.argv[1], sys.argv[2], sys.argv[3]
size = zipfile.ZipFile(path).getinfo("bootstrap").file_size
print("| %s | %.2f MB | %.1f MB | %s s |" % (name, os.path.getsize(path) / 1e6, size / 1e6, secs))
PY
  done
  echo
done

# Init times: x86_64 release binaries, each built on its own too.
mkdir -p target/release-own
for f in "${functions[@]}"; do cargo build --release -q -p "$f"; cp "target/release/$f" "target/release-own/$f"; done
cargo build --release -q -p selfheal-tests --bin lambda-init
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$port/moto-api/" && break; sleep 0.1; done
bins=(); for f in "${functions[@]}"; do bins+=("target/release-own/$f"); done
target/release/lambda-init --moto "http://127.0.0.1:$port" --runs 20 "${bins[@]}"
