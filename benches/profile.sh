#!/usr/bin/env bash
# benches/profile.sh — one modgate under h2load on a cached answer, for before/after figures and
# perf profiles (issue 11: "profile before optimising"). Not part of `make test`.
#
#   benches/profile.sh                          # CPU per request of a cached .info hit
#   PERF=1 benches/profile.sh                   # also a perf profile (call graphs) of the run
#   MODGATE_BIN=/path/to/old/modgate benches/profile.sh     # the same for another build
#   URLPATH=example.com/bench/@v/v1.1.0.zip benches/profile.sh
#
# Starts an nginx origin serving benches/gen_modules.py's module set and one modgate in front
# of it with the settings of benches/bench.sh's "logs on" mode (TLS 1.3, client certificates
# optional, one worker thread, audit log and access line to files, a disk cache). modgate runs
# on CPU 1, the origin and h2load on CPU 0. The answer is fetched three times (cached), then
# h2load -t1 -c32 -m8 runs WARMUP seconds (discarded) and DURATION seconds measured; it prints
# req/s, modgate's CPU time per request (utime+stime of its process from /proc over the measured
# run) and its peak RSS. With PERF=1, `perf record -e cpu-clock --call-graph dwarf` samples
# modgate during the measured run and `perf report` summaries are written next to it; the
# work directory is kept then. Settings: DURATION=8 WARMUP=2 LOGS=on|off PERF=0 KEEP=0
# PORT=18713 ORIGIN_PORT=18711.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
LOGS=${LOGS:-on}
PERF=${PERF:-0}
KEEP=${KEEP:-0}
PORT=${PORT:-18713}
ORIGIN_PORT=${ORIGIN_PORT:-18711}
URLPATH=${URLPATH:-example.com/bench/@v/v1.0.0.info}
CIPHER=TLS_AES_128_GCM_SHA256
export PATH="$PATH:/usr/sbin:/sbin"

for tool in nginx h2load curl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "profile.sh: $tool is missing (make bench installs it)" >&2; exit 2; }
done
[ "$PERF" = 1 ] && ! command -v perf >/dev/null && { echo "profile.sh: perf is missing" >&2; exit 2; }
if [ -z "${MODGATE_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -p modgate)
  MODGATE_BIN="$ROOT/target/release/modgate"
fi
[ "$(nproc)" -ge 2 ] || { echo "profile.sh: needs 2 CPUs (server and loader apart)" >&2; exit 2; }

W=$(mktemp -d /tmp/modgate-profile.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [ "$KEEP" = 1 ] || [ "$PERF" = 1 ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

python3 "$ROOT/benches/gen_modules.py" "$W/origin" example.com/bench 0 >/dev/null
"$MODGATE_BIN" certs --out "$W/certs" >/dev/null
mkdir -p "$W/tmp"
USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user root;"
cat >"$W/origin.conf" <<EOF
$USER_LINE
daemon off;
worker_processes 1;
pid $W/origin.pid;
error_log $W/origin-error.log warn;
events { worker_connections 4096; }
http {
  client_body_temp_path $W/tmp/b; proxy_temp_path $W/tmp/p; fastcgi_temp_path $W/tmp/f;
  uwsgi_temp_path $W/tmp/u; scgi_temp_path $W/tmp/s;
  access_log off;
  default_type application/octet-stream;
  types { application/json info; text/plain mod; application/zip zip; }
  server { listen 127.0.0.1:$ORIGIN_PORT; root $W/origin; location / { try_files \$uri =404; } }
}
EOF
taskset -c 0 nginx -p "$W" -e "$W/origin-startup.log" -c "$W/origin.conf" &
PIDS+=($!)

audit="$W/audit.log" level=info
[ "$LOGS" = off ] && audit=off level=warn
cat >"$W/modgate.yaml" <<EOF
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
    url: "http://127.0.0.1:$ORIGIN_PORT"
routes:
  - name: all
    match: { prefix: "" }
    chain: [origin]
cache:
  dir: $W/cache
  fsync: false
audit:
  output: $audit
log:
  level: $level
EOF
unset RUST_LOG
taskset -c 1 "$MODGATE_BIN" run -c "$W/modgate.yaml" >"$W/modgate.stdout" 2>"$W/modgate.log" &
MP=$!
PIDS+=("$MP")
URL="https://127.0.0.1:$PORT/$URLPATH"
for _ in $(seq 100); do
  curl -fsS -o /dev/null --cacert "$W/certs/ca.pem" "$URL" 2>/dev/null && break
  kill -0 "$MP" 2>/dev/null || { echo "modgate did not start: $(tail -3 "$W/modgate.log")" >&2; exit 1; }
  sleep 0.1
done
for _ in 1 2 3; do curl -fsS -o /dev/null --cacert "$W/certs/ca.pem" "$URL"; done

load() { # seconds
  timeout -k 5 $(($1 + 30)) taskset -c 0 h2load -t1 -c32 -m8 --tls13-ciphers="$CIPHER" -D "$1" "$URL"
}
load "$WARMUP" >/dev/null
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$MP/stat"; }
t0=$(ticks)
if [ "$PERF" = 1 ]; then
  perf record -q -e cpu-clock -F 400 --call-graph dwarf,32768 -p "$MP" -o "$W/perf.data" \
    -- sleep "$DURATION" 2>/dev/null &
  PERF_PID=$!
fi
out=$(load "$DURATION")
[ "$PERF" = 1 ] && wait "$PERF_PID"
t1=$(ticks)
n=$(awk '/^requests:/ { print $8 }' <<<"$out")
rps=$(awk '/^finished in/ { print $4 }' <<<"$out")
grep -q '^Application protocol: h2$' <<<"$out" || { echo "not HTTP/2: $out" >&2; exit 1; }
awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$n" -v r="$rps" \
  -v rss="$(awk '/VmHWM/ { print $2 }' "/proc/$MP/status")" -v logs="$LOGS" -v p="$URLPATH" \
  'BEGIN { printf "%s (logs %s): %s req/s, %.1f µs CPU per request, peak RSS %.1f MiB\n",
    p, logs, r, 1e6 * d / hz / n, rss / 1024 }'
if [ "$PERF" = 1 ]; then
  perf report -i "$W/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -60 >"$W/perf-self.txt"
  perf report -i "$W/perf.data" --children --sort symbol --stdio -g none --percent-limit 1 \
    2>/dev/null | grep '%' >"$W/perf-children.txt"
  echo "perf profile: $W/perf.data (summaries: $W/perf-self.txt, $W/perf-children.txt)"
fi
