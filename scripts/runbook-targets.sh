#!/usr/bin/env bash
# The shipped runbooks against real targets on loopback: PostgreSQL 15 with a query that really
# blocks a writer, and Redis 7 at maxmemory with noeviction, both from Debian packages
# (`apt-get install postgresql redis-server`). Each fix is rendered from infra/runbooks the way
# the catalog renders it and run through the workspace's runner (infra/coder/fix.sh: base64,
# SHA-256 check), with the target's credentials in a secrets directory as the workspace mounts
# them (SELFHEAL_TARGET_SECRETS). Exits non-zero when a fix does not fix.
#
#   bash scripts/runbook-targets.sh            # needs PostgreSQL 15 and redis-server (scripts/test.sh runs it)
#
# Servers bind 127.0.0.1 on free ports and are stopped on exit. PostgreSQL refuses to run as
# root: as root the server runs as the `postgres` user.
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d /tmp/selfheal-targets.XXXXXX)"
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
pg_pids=()
cleanup() {
  for p in "${pg_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "${pg_started:-}" ]; then as_pg "$pg_bin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true; fi
  if [ -n "${redis_pid:-}" ]; then kill "$redis_pid" 2>/dev/null || true; fi
  rm -rf -- "$work"
}
trap cleanup EXIT

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# render RUNBOOK ACTION NAME=VALUE...: the action's script with its {{placeholders}} filled.
# (Integers only: the catalog single-quotes strings; the Redis part below quotes its own.)
render() {
  python3 - "$@" <<'EOF'
import re, sys, tomllib
path, action, *pairs = sys.argv[1:]
values = dict(p.split("=", 1) for p in pairs)
front = open(path).read().split("+++")[1]
script = next(a["script"] for a in tomllib.loads(front)["actions"] if a["name"] == action)
for k, v in values.items():
    assert v.isdigit(), f"{k} must be an integer here"
print(re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], script), end="")
EOF
}

# run_fix SCRIPT_FILE: through the workspace runner, as the Coder agent runs it.
run_fix() {
  local b64 sha
  b64="$(base64 -w0 <"$1")"
  sha="$(sha256sum <"$1")"; sha="${sha%% *}"
  SELFHEAL_INCIDENT=QTARGETS SELFHEAL_SERVICE=targets SELFHEAL_TARGET= \
    SELFHEAL_FIX_SCRIPT_B64="$b64" SELFHEAL_FIX_SCRIPT_SHA256="$sha" \
    SELFHEAL_TARGET_SECRETS="$work/secrets" bash infra/coder/fix.sh
}

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
mkdir -p "$work/secrets"

# ------------------------------------------------------------------ PostgreSQL
if [ -z "$pg_bin" ]; then
  fail "PostgreSQL is not installed (apt-get install postgresql)"
else
  pg_port="$(free_port)"
  mkdir -p "$work/pg" "$work/sock"
  [ "$(id -u)" = 0 ] && chown postgres "$work" "$work/pg" "$work/sock"
  as_pg "$pg_bin/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
  as_pg "$pg_bin/pg_ctl" -D "$work/pg" -w -l "$work/sock/log" \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $work/sock" start >/dev/null
  pg_started=1
  printf '[target]\nhost=127.0.0.1\nport=%s\ndbname=postgres\nuser=postgres\n' "$pg_port" >"$work/secrets/pg_service.conf"
  q() { psql -X -q -t -A -h 127.0.0.1 -p "$pg_port" -U postgres -c "$1"; }
  q "CREATE TABLE orders (id int)"

  for action in postgres.cancel_query postgres.terminate_backend; do
    # The blocker holds a lock in an open transaction; the writer waits behind it.
    psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres \
      -c "BEGIN; LOCK TABLE orders; SELECT pg_sleep(60);" >/dev/null 2>&1 &
    pg_pids+=($!)
    sleep 0.5
    psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -c "INSERT INTO orders VALUES (1)" >/dev/null 2>&1 &
    writer=$!
    sleep 0.5
    blocker="$(q "SELECT pid FROM pg_stat_activity WHERE query LIKE 'BEGIN; LOCK%' LIMIT 1")"
    blocked="$(q "SELECT pid FROM pg_stat_activity WHERE query LIKE 'INSERT%' LIMIT 1")"
    [ -n "$blocker" ] && [ -n "$blocked" ] || fail "$action: no blocking situation"

    # The wrong PID (the writer, which blocks nobody) is refused and nothing happens.
    render infra/runbooks/postgres-blocking-query.md "$action" "pid=$blocked" >"$work/wrong.sh"
    if run_fix "$work/wrong.sh" >/dev/null 2>&1; then fail "$action acted on a backend that blocks nobody"; fi

    render infra/runbooks/postgres-blocking-query.md "$action" "pid=$blocker" >"$work/fix.sh"
    run_fix "$work/fix.sh" || fail "$action: the fix failed"
    if timeout 10 tail --pid="$writer" -f /dev/null; then
      echo "ok: $action unblocked the writer"
    else
      fail "$action: the writer is still blocked"
    fi
    q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'BEGIN; LOCK%'" >/dev/null
  done
  rows="$(q "SELECT count(*) FROM orders")"
  [ "$rows" = 2 ] || fail "expected both writes to land, found $rows"
fi

# ------------------------------------------------------------------ Redis
if ! command -v redis-server >/dev/null; then
  fail "redis-server is not installed (apt-get install redis-server; scripts/setup-test-tools.sh does)"
else
  redis_port="$(free_port)"
  redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --maxmemory 2mb --maxmemory-policy noeviction --requirepass targets-secret >"$work/redis.log" 2>&1 &
  redis_pid=$!
  printf 'targets-secret' >"$work/secrets/redis_password"
  r() { REDISCLI_AUTH=targets-secret redis-cli -p "$redis_port" "$@"; }
  for _ in $(seq 50); do r PING >/dev/null 2>&1 && break; sleep 0.1; done
  big="$(head -c 65536 /dev/zero | tr '\0' x)"
  for action in redis.raise_maxmemory redis.set_eviction_policy; do
    # Back to the incident: 2 MB, noeviction, full until writes are refused with OOM.
    r CONFIG SET maxmemory 2mb >/dev/null
    r CONFIG SET maxmemory-policy noeviction >/dev/null
    for i in $(seq 200); do r SET "k$i" "$big" >/dev/null 2>&1 || true; done
    r SET probe "$big" 2>&1 | grep -q OOM || fail "$action: writes are not refused before the fix"
    # host is a string parameter the catalog would quote; port an integer it would not.
    python3 - "$action" "$redis_port" >"$work/fix.sh" <<'EOF'
import sys, tomllib
action, port = sys.argv[1:]
front = open("infra/runbooks/redis-maxmemory.md").read().split("+++")[1]
script = next(a["script"] for a in tomllib.loads(front)["actions"] if a["name"] == action)
script = script.replace("{{host}}", "'127.0.0.1'").replace("{{port}}", port).replace("{{policy}}", "'allkeys-lru'")
script = script.replace("{{megabytes}}", "256")
print(script, end="")
EOF
    run_fix "$work/fix.sh" || fail "$action: the fix failed"
    if r SET probe "$big" | grep -q OK; then echo "ok: $action: writes succeed again"; else fail "$action: still OOM"; fi
  done
fi

[ "$failures" = 0 ] || { echo "$failures failure(s)" >&2; exit 1; }
echo "runbook targets: all fixes fixed"
