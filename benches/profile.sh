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
# PORT=18713 ORIGIN_PORT=18711 BUILD=1 (0: target/release/modgate as it is), CACHE_YAML (lines
# added to modgate's cache: section, e.g. CACHE_YAML='  memory_object_max: 2MiB'), WORK_STEALING
# (modgate's server.work_stealing, default true), PERF_HZ=400. benches/lib.sh
# holds what it shares with bench.sh and load.sh.
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

THREADS=1
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"   # log/warn/die, build_modgate, pinning, PIDS and cleanup, nginx config
for tool in nginx h2load curl python3 taskset; do
  command -v "$tool" >/dev/null || die "$tool is missing (make bench installs it)"
done
[ "$PERF" = 1 ] && ! command -v perf >/dev/null && die "perf is missing"
if [ -n "${MODGATE_BIN:-}" ]; then
  MODGATE=$MODGATE_BIN
else
  build_modgate
fi
check_ports "$PORT" "$ORIGIN_PORT"
compute_pinning h2load
[ "$PINNED" = 1 ] || die "needs 2 CPUs (server and loader apart)"
[ "$PERF" = 1 ] && KEEP=1
make_workdir modgate-profile

python3 "$ROOT/benches/gen_modules.py" "$W/origin" example.com/bench 0 >/dev/null
"$MODGATE" certs --out "$W/certs" >/dev/null
nginx_common
write_origin_conf "access_log off;" ""
taskset -c "$LOADER_CPUS" "$NGINX" -p "$W" -e "$W/origin-startup.log" -c "$W/origin.conf" &
PIDS+=($!)

audit="$W/audit.log" level=info
[ "$LOGS" = off ] && audit=off level=warn
write_modgate_conf "$W/modgate.yaml" "$W" "$PORT" "$audit" "$level" \
  "$(tls_listener_yaml "$W/certs/server.pem" "$W/certs/server.key" "$W/certs/ca.pem")" \
  "${CACHE_YAML:-}"
unset RUST_LOG
taskset -c "$SERVER_CPUS" "$MODGATE" run -c "$W/modgate.yaml" >"$W/modgate.stdout" 2>"$W/modgate.log" &
MP=$!
PIDS+=("$MP")
URL="https://127.0.0.1:$PORT/$URLPATH"
wait_up "$URL" "$MP" --cacert "$W/certs/ca.pem" || die "modgate did not start: $(tail -3 "$W/modgate.log")"
for _ in 1 2 3; do curl -fsS -o /dev/null --cacert "$W/certs/ca.pem" "$URL"; done

load() { # seconds
  timeout -k 5 $(($1 + 30)) taskset -c "$LOADER_CPUS" h2load -t1 -c32 -m8 --tls13-ciphers="$CIPHER" -D "$1" "$URL"
}
load "$WARMUP" >/dev/null
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$MP/stat"; }
t0=$(ticks)
if [ "$PERF" = 1 ]; then
  perf record -q -e cpu-clock -F "${PERF_HZ:-400}" --call-graph dwarf,32768 -p "$MP" -o "$W/perf.data" \
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
  log "perf profile: $W/perf.data (summaries: $W/perf-self.txt, $W/perf-children.txt)"
fi
