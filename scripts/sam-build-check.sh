#!/usr/bin/env bash
# `sam build` exactly as a user runs it: a fresh clone of this checkout's HEAD, the shipped
# samconfig.toml, SAM CLI and cargo-lambda from PyPI, nothing reused from this working tree.
# Too slow for CI on 2 cores (nine release builds); run it before a release and write the time
# into BENCHMARKS.md.   Usage: bash scripts/sam-build-check.sh [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=$(mktemp -d /tmp/selfheal-sam-build.XXXXXX)
[ "${1:-}" = "--keep" ] || trap 'rm -rf "$work"' EXIT

git clone --quiet "$repo" "$work/selfheal"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check \
  "$(grep '^aws-sam-cli==' scripts/requirements-test.txt)" cargo-lambda==1.9.2
export PATH="$work/venv/bin:$PATH" SAM_CLI_TELEMETRY=0
# cargo-lambda installs the target itself, but nine parallel workers race on it: once first.
rustup target add aarch64-unknown-linux-gnu >/dev/null

cd "$work/selfheal"
start=$(date +%s)
if docker info >/dev/null 2>&1; then
  sam build
else
  # The verify function is a container image (Lightpanda inside), which needs a Docker engine;
  # without one, build every zip function exactly as `sam build` would, one resource each.
  echo "== no Docker engine: building the zip functions only (the verify image needs Docker)"
  for fn in IntakeFunction SlackCallbackFunction ClericFunction SensoFunction PlannerFunction \
            ApprovalFunction RemediateFunction PagerDutyFunction; do
    sam build "$fn"
    mkdir -p "$work/built" && cp -r ".aws-sam/build/$fn" "$work/built/"
  done
  rm -rf .aws-sam/build && mkdir -p .aws-sam/build && cp -r "$work/built/"* .aws-sam/build/
fi
end=$(date +%s)
echo "== sam build (shipped samconfig.toml, clean clone): $((end - start)) s"
for f in .aws-sam/build/*Function; do
  printf '%-28s %s\n' "$(basename "$f")" "$(du -h "$f/bootstrap" | cut -f1)"
done
file .aws-sam/build/IntakeFunction/bootstrap
