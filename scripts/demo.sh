#!/usr/bin/env bash
# The main job on embedded defaults: one incident end to end on this machine, no accounts.
# Installs the Lightpanda browser (PyPI wheel) into the git-ignored .venv if it is missing, then
# runs `selfheal demo` with any arguments given (e.g. --scenario approval --json).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v lightpanda >/dev/null && [ ! -x .venv/bin/lightpanda ]; then
  echo "installing the Lightpanda browser into .venv (once)…"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "$(grep '^lightpanda==' scripts/requirements-test.txt)"
fi
export PATH="$PWD/.venv/bin:$PATH"
exec cargo run --quiet -p selfheal-cli -- demo "$@"
