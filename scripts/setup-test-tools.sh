#!/usr/bin/env bash
# Install what the tests need into git-ignored folders: a Python virtualenv (.venv) with moto,
# Lightpanda, cfn-lint and the SAM CLI, the npm ASL validator (.tools/), and Debian's
# PostgreSQL and Redis for the runbook targets. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

req=scripts/requirements-test.txt
stamp=.venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing test tools into .venv (moto, lightpanda, cfn-lint, aws-sam-cli)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi

if [ ! -x .tools/node_modules/.bin/asl-validator ]; then
  echo "== installing asl-validator into .tools"
  mkdir -p .tools
  npm install --silent --no-audit --no-fund --prefix .tools asl-validator@4.0.0 >/dev/null
fi

# Real targets for the shipped runbooks (scripts/runbook-targets.sh): Debian's PostgreSQL and
# Redis, started on loopback by that script only (the packages' own services stay stopped).
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || ! command -v redis-server >/dev/null; then
  echo "== installing postgresql and redis-server (Debian packages)"
  sudo_cmd=""
  if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends postgresql redis-server >/dev/null
fi

for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component" || echo "warning: could not add $component"
  fi
done
