#!/usr/bin/env bash
# Install what the tests need into git-ignored folders: a Python virtualenv (.venv) with moto,
# Lightpanda, cfn-lint and the SAM CLI, and the npm ASL validator (.tools/). Idempotent.
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

for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component" || echo "warning: could not add $component"
  fi
done
