#!/usr/bin/env bash
# benches/startup.sh — modgate's start-up with a large disk cache (issue 22): process start to the
# first `200` of /healthz, RSS and VmHWM, and how long the background reconciliation of the
# cache index takes. A targeted companion of benches/scale.sh (which makes the data).
#
#   CACHE=/path/to/modgate-cache MODGATE_BIN=target/release/modgate benches/startup.sh
#
# CACHE is a cache directory (objects/, eviction/, ledger.sqlite) that this script may change:
# the gateway cleans it up, writes its index snapshot there and rewrites the ledger. Make one
# from benches/scale.sh's data without copying the objects (hard links; every change the
# gateway makes replaces or unlinks files, never writes into one):
#   mkdir -p W/modgate-cache && cp -al DATA/n1000000/modgate-cache/objects W/modgate-cache/ &&
#   cp DATA/n1000000/modgate-cache/ledger.sqlite W/modgate-cache/
#
# Each run (RUNS of them, default 1): start the gateway (one worker thread, TLS listener, on
# SERVER_CPUS), time /healthz (curl every 10 ms), read VmRSS and VmHWM at that moment, wait for
# the cache's "index reconciled" log line (RECONCILE_WAIT s at most) and read them again, then
# SIGTERM (which saves the snapshot). MODE=cold drops the page cache first (root only);
# MODE=kill9 ends the run with SIGKILL instead (no snapshot saved at exit); NO_SNAPSHOT=1
# deletes the snapshot before the start (the first start after an upgrade, or a lost one).
# Needs curl; prints one line per run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${CACHE:?set CACHE to a writable cache directory}
MODGATE=${MODGATE_BIN:-$ROOT/target/release/modgate}
RUNS=${RUNS:-1}
MODE=${MODE:-warm}
NO_SNAPSHOT=${NO_SNAPSHOT:-0}
PORT=${PORT:-18791}
SERVER_CPUS=${SERVER_CPUS:-1}
RECONCILE_WAIT=${RECONCILE_WAIT:-900}
STARTUP_LIMIT=${STARTUP_LIMIT:-900}
W=$(mktemp -d /tmp/modgate-startup.XXXXXX)
trap 'rm -rf "$W"' EXIT

"$MODGATE" certs --out "$W/certs" >/dev/null
cat >"$W/gw.yaml" <<EOF
server:
  threads: 1
  pid_file: $W/modgate.pid
  upgrade_sock: $W/modgate_upgrade.sock
  grace_period: 1s
  shutdown_timeout: 1s
listeners:
  - name: bench
    address: "127.0.0.1:$PORT"
    tls:
      cert: $W/certs/server.pem
      key: $W/certs/server.key
      client_auth: optional
      client_ca: $W/certs/ca.pem
upstreams:
  origin:
    url: "http://127.0.0.1:1"
routes:
  - name: all
    match: { prefix: "" }
    chain: [origin]
cache:
  dir: $CACHE
  fsync: false
audit:
  output: $W/audit.log
log:
  level: info
EOF

now_ns() { date +%s%N; }
kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

for run in $(seq "$RUNS"); do
  [ "$NO_SNAPSHOT" = 1 ] && rm -f "$CACHE/eviction/index.snapshot"
  if [ "$MODE" = cold ]; then
    sync
    echo 3 >/proc/sys/vm/drop_caches
  fi
  log=$W/modgate-$run.log
  t0=$(now_ns)
  taskset -c "$SERVER_CPUS" "$MODGATE" run -c "$W/gw.yaml" >"$log.stdout" 2>"$log" &
  pid=$!
  deadline=$((t0 + STARTUP_LIMIT * 1000000000))
  until curl -fsS --max-time 2 -o /dev/null --cacert "$W/certs/ca.pem" "https://127.0.0.1:$PORT/healthz" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "modgate exited: $(tail -3 "$log")" >&2; exit 1; }
    [ "$(now_ns)" -lt "$deadline" ] || { kill -KILL "$pid"; echo "no /healthz" >&2; exit 1; }
    sleep 0.01
  done
  t1=$(now_ns)
  up=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
  rss_up=$(kib "$pid" VmRSS)
  hwm_up=$(kib "$pid" VmHWM)
  line=$(grep -o 'disk cache [^ ]*: [0-9]* objects, [0-9]* bytes ([^)]*)' "$log" | tail -1 || true)
  # the reconciliation, in the background
  rec=""
  for _ in $(seq $((RECONCILE_WAIT * 10))); do
    rec=$(grep -o 'index reconciled with the directory in [0-9.]* s: .*' "$log" | head -1 || true)
    [ -n "$rec" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  rss_rec=$(kib "$pid" VmRSS)
  hwm_rec=$(kib "$pid" VmHWM)
  t2=$(now_ns)
  if [ "$MODE" = kill9 ]; then
    kill -KILL "$pid"
  else
    kill -TERM "$pid"
  fi
  wait "$pid" 2>/dev/null || true
  stop=$(awk -v a="$t2" -v b="$(now_ns)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  echo "run $run ($MODE, no_snapshot=$NO_SNAPSHOT): /healthz after $up s; RSS $(mib "$rss_up") MiB," \
    "VmHWM $(mib "$hwm_up") MiB at /healthz; after the reconciliation RSS $(mib "$rss_rec") MiB," \
    "VmHWM $(mib "$hwm_rec") MiB; stop $stop s"
  echo "  $line"
  echo "  ${rec:-no reconciliation line (older binary, or still running)}"
done
