#!/usr/bin/env bash
# Validate the SAM template and the state machine with independent tools.
# Expects the tools installed by scripts/setup-test-tools.sh on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

# sam/cfn-lint need a region; fake credentials keep them from looking for real ones.
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export SAM_CLI_TELEMETRY=0

echo "-- sam validate --lint"
sam validate --lint --template template.yaml
echo "-- cfn-lint"
cfn-lint template.yaml
echo "-- asl-validator"
asl-validator --json-path statemachine/incident.asl.json
echo "-- placeholder cross-check"
python scripts/check_placeholders.py
