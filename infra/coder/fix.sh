#!/usr/bin/env bash
# selfheal remediation runner: the start script of the workspace (main.tf, coder_script "fix").
#
# Every value arrives as an environment variable, set by the template from the workspace's
# parameters (coder_agent.runner.env). Nothing in this file is templated and no value is ever
# pasted into shell text: a service name, title or target full of quotes, $(...), backticks or
# newlines stays data. The fix itself is the decoded SELFHEAL_FIX_SCRIPT_B64, run only if its
# SHA-256 is the one selfheal approved (SELFHEAL_FIX_SCRIPT_SHA256).
set -euo pipefail

: "${SELFHEAL_INCIDENT:?selfheal: no incident id}"
: "${SELFHEAL_FIX_SCRIPT_B64:?selfheal: no fix script}"
: "${SELFHEAL_FIX_SCRIPT_SHA256:?selfheal: no fix script hash}"
export SELFHEAL_INCIDENT SELFHEAL_SERVICE="${SELFHEAL_SERVICE-}" SELFHEAL_SEVERITY="${SELFHEAL_SEVERITY-}" \
  SELFHEAL_TARGET="${SELFHEAL_TARGET-}"
# The service's credentials (main.tf mounts the secret selfheal-target-<service> here).
export SELFHEAL_TARGET_SECRETS="${SELFHEAL_TARGET_SECRETS:-/var/run/selfheal/target}"

workdir="$(mktemp -d)"
trap 'rm -rf -- "$workdir"' EXIT
fix="$workdir/fix.sh"

if ! printf '%s' "$SELFHEAL_FIX_SCRIPT_B64" | base64 -d >"$fix" 2>/dev/null; then
  echo "selfheal: the fix script is not valid base64; nothing was run" >&2
  exit 65
fi
actual="$(sha256sum -- "$fix")"
actual="${actual%% *}"
if [ "$actual" != "$SELFHEAL_FIX_SCRIPT_SHA256" ]; then
  echo "selfheal: the fix script's sha256 is $actual, not the approved $SELFHEAL_FIX_SCRIPT_SHA256; nothing was run" >&2
  exit 66
fi

# printf %s prints values as they are: nothing in them is interpreted.
printf 'selfheal: running the fix for %s on %s (script sha256 %s)\n' \
  "$SELFHEAL_INCIDENT" "$SELFHEAL_SERVICE" "$actual"
# The fix's exit status is the workspace's verdict: non-zero marks the agent start_error.
exec bash -- "$fix"
