#!/usr/bin/env bash
# Before/after the per-function cargo features (issue 19), for all nine functions.
# "before" = the function built with `--features selfheal/full` (every adapter, what every
# function linked before the split); "after" = the function's own features. Same commit, same
# toolchain, same release profile, system linker, x86_64. Prints binary and zip size (bootstrap
# deflated at level 9), then init time (median/p90 of 20 starts against the Runtime API emulator
# with Secrets Manager and DynamoDB on moto), run twice in both orders.
#   Usage: bash scripts/bench-lambda-features.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# The release builds may share a target directory with other work (CARGO_TARGET_DIR).
target="${CARGO_TARGET_DIR:-target}"
bash scripts/setup-test-tools.sh
export PATH="$PWD/.venv/bin:$PATH"
functions=(intake slack-callback cleric senso planner approval verify remediate pagerduty)
out=target/zipbench
mkdir -p "$out/before" "$out/after"
# Every function's "before" links the same whole library, so by default only three are built
# before (an HTTP entry point, a plain stage, the browser one); BEFORE="..." picks others.
# Binaries already built are kept: the script resumes where it stopped.
read -r -a before_set <<<"${BEFORE:-intake slack-callback verify}"
for f in "${functions[@]}"; do
  if [[ " ${before_set[*]} " == *" $f "* ]] && [ ! -x "$out/before/$f" ]; then
    cargo build --release -q -p "$f" --features selfheal/full
    cp "$target/release/$f" "$out/before/$f"
  fi
  if [ ! -x "$out/after/$f" ]; then
    cargo build --release -q -p "$f"
    cp "$target/release/$f" "$out/after/$f"
  fi
done
echo "| function | binary before | binary after | zip before | zip after |"
echo "|---|---|---|---|---|"
for f in "${functions[@]}"; do
  python3 - "$f" "$out/before/$f" "$out/after/$f" <<'PY'
import io, os, sys, zipfile
def zipped(path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.write(path, "bootstrap")
    return len(buf.getvalue())
name, before, after = sys.argv[1:4]
mb = lambda n: "%.2f MB" % (n / 1e6)
size = lambda p, f: mb(f(p)) if os.path.exists(p) else "(not built)"
print("| %s | %s | %s | %s | %s |" % (name, size(before, os.path.getsize), size(after, os.path.getsize), size(before, zipped), size(after, zipped)))
PY
done
# The emulator that times the starts (LAMBDA_INIT=path reuses one already built: the figures
# compare within one run, so its own speed cancels out).
init="${LAMBDA_INIT:-}"
if [ -z "$init" ]; then cargo build --release -q -p selfheal-tests --bin lambda-init; init="$target/release/lambda-init"; fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$port/moto-api/" && break; sleep 0.1; done
for order in "before after" "after before"; do
  bins=()
  for f in "${functions[@]}"; do for side in $order; do [ -x "$out/$side/$f" ] && bins+=("$out/$side/$f"); done; done
  echo "# order: $order"
  "$init" --moto "http://127.0.0.1:$port" --runs 20 "${bins[@]}"
done
