#!/usr/bin/env bash
# The same Choice/Pass loop (shared/benches/fixtures/loop.asl.json) on aws-local-stepfunctions,
# a Node.js ASL interpreter from the npm registry, for comparison with scripts/bench-engine-loop.sh.
# It is installed into a temporary directory (never into the repository) and runs in memory, in
# process (no persistence, no process start in the timing).
#
#   bash scripts/bench-engine-compare.sh [ROUNDS...]     # default: 500 5000
set -euo pipefail
cd "$(dirname "$0")/.."
version="${ALS_VERSION:-3.0.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp shared/benches/fixtures/loop.asl.json "$work/"
(cd "$work" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund "aws-local-stepfunctions@$version" >/dev/null)
cat >"$work/run.mjs" <<'JS'
import { StateMachine } from 'aws-local-stepfunctions';
import { readFileSync } from 'fs';
const def = JSON.parse(readFileSync(new URL('./loop.asl.json', import.meta.url), 'utf8'));
console.log('rounds\ttransitions\twall_s\tus_per_transition');
for (const n of process.argv.slice(2).map(Number)) {
  let best = Infinity;
  for (let k = 0; k < 3; k++) {
    const sm = new StateMachine(def);
    const t0 = process.hrtime.bigint();
    const out = await sm.run({ n }).result;
    const t = Number(process.hrtime.bigint() - t0) / 1e9;
    if (out.i !== n) throw new Error('wrong result ' + JSON.stringify(out));
    best = Math.min(best, t);
  }
  const tr = 2 * n + 3;
  console.log(`${n}\t${tr}\t${best.toFixed(3)}\t${(best * 1e6 / tr).toFixed(1)}`);
}
JS
rounds=("$@")
[[ ${#rounds[@]} -gt 0 ]] || rounds=(500 5000)
node "$work/run.mjs" "${rounds[@]}"
