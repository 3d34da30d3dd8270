#!/usr/bin/env bash
# benches/load.sh — modgate and nginx (proxy_cache) side by side, in front of one static origin.
#
#   make load                                # or: benches/load.sh
#   DURATION=10 CONNS=32 LOGS=off benches/load.sh
#
# 1. Cached hits over HTTP/1.1 keep-alive (wrk): a small `.info`, a 64 KiB zip and a 1 MiB zip,
#    against modgate and against nginx, one server under load at a time; prints a Markdown table
#    of requests/s, p50 and p99 latency, the server's CPU use and the ratio modgate/nginx, then
#    each server's resident memory. With H2C=1 (the default) the same cases again over h2c
#    (h2load).
# 2. A large zip (BIG_MIB, default 256 MiB) through modgate and nginx with curl: a miss, a hit,
#    and a miss read by a slow client; the peak RSS (VmHWM) of each server during each transfer.
#
# Everything listens on 127.0.0.1; every wrk, h2load and curl is bounded by a timeout. The origin is a second nginx serving generated fixture files.
# Pinning (taskset): the server under test on CPUs 1..THREADS, wrk / h2load / curl and the origin
# on the others; with no spare CPU nothing is pinned. On a 2-core machine use THREADS=1.
# Settings (environment):
#   DURATION=10   seconds per measured wrk run (each is preceded by a WARMUP-second run)
#   WARMUP=3
#   CONNS=32      wrk connections (one wrk thread)
#   THREADS=1     modgate server.threads = nginx worker_processes
#   LOGS=file     file: modgate's audit log and its per-request log line go to files, and nginx
#                 writes an access_log; off: modgate audit off and RUST_LOG=warn, nginx access_log off
#   BIG_MIB=256   size of the large zip (0 skips part 2)
#   SLOW_RATE=32M curl --limit-rate for the slow-client miss
#   H2C=1         also measure the hits over h2c (HTTP/2 prior knowledge, h2load -c H2_CONNS
#   H2_CONNS=4    -m H2_STREAMS); modgate's plaintext listener and an nginx `listen ... http2`
#   H2_STREAMS=8  port both speak it
#   ORIGIN_PORT=18601 NGINX_PORT=18602 MODGATE_PORT=18603 NGINX_H2C_PORT=18604
#   KEEP=1        keep the work directory (configs, logs, caches)
#   BUILD=0       use target/release/modgate as it is (no cargo build)
#
# The modgate cache runs with `fsync: false` (a throwaway cache; it only changes the cost of a
# miss, never of a hit). nginx serves cached files with `sendfile on` and `tcp_nopush off`
# (Debian's nginx.conf has `tcp_nopush on`, which on these machines holds every 64 KiB keep-alive
# response for a 40 ms delayed ACK: 800 req/s instead of 60 000), and keepalive_requests raised
# to match modgate's unlimited keep-alive.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
LOGS=${LOGS:-file}
BIG_MIB=${BIG_MIB:-256}
SLOW_RATE=${SLOW_RATE:-32M}
ORIGIN_PORT=${ORIGIN_PORT:-18601}
NGINX_PORT=${NGINX_PORT:-18602}
MODGATE_PORT=${MODGATE_PORT:-18603}
NGINX_H2C_PORT=${NGINX_H2C_PORT:-18604}
H2C=${H2C:-1}
H2_CONNS=${H2_CONNS:-4}
H2_STREAMS=${H2_STREAMS:-8}
KEEP=${KEEP:-0}
MODULE=example.com/bench

case $LOGS in file | off) ;; *) echo "LOGS must be file or off" >&2; exit 2 ;; esac

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"   # log/die, need_tools, build_modgate, pinning, PIDS and cleanup, /proc

# ---------------------------------------------------------------------------------------------
# Prerequisites, build, pinning (the servers under test on their own core(s), wrk and the origin
# on the rest), work directory (removed and every started process stopped on exit).
need_tools "${COMMON_TOOLS[@]}" wrk:wrk
build_modgate
check_ports "$ORIGIN_PORT" "$NGINX_PORT" "$MODGATE_PORT" "$NGINX_H2C_PORT"
compute_pinning wrk
make_workdir modgate-load

# ---------------------------------------------------------------------------------------------
# Fixture origin: a module with a few versions, each a valid module zip.
log "generating fixture module in $W/origin"
python3 "$ROOT/benches/gen_modules.py" "$W/origin" "$MODULE" "$BIG_MIB"

mkdir -p "$W/nginx-cache" "$W/modgate-cache"
nginx_common

write_origin_conf "access_log off;" "tcp_nopush on;"

if [ "$LOGS" = file ]; then
  NGINX_ACCESS="access_log $W/nginx-access.log;"
  AUDIT_OUTPUT="$W/modgate-audit.log"
  export RUST_LOG=${RUST_LOG:-info}
else
  NGINX_ACCESS="access_log off;"
  AUDIT_OUTPUT=off
  export RUST_LOG=warn
fi

cat >"$W/nginx.conf" <<EOF
$NGINX_USER
daemon off;
worker_processes $THREADS;
pid $W/nginx.pid;
error_log $W/nginx-error.log warn;
events { worker_connections 4096; }
http {
  $TEMP_PATHS
  $NGINX_ACCESS
  sendfile on;
  tcp_nopush off;   # on: 64 KiB keep-alive answers wait 40 ms for a delayed ACK
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  proxy_cache_path $W/nginx-cache levels=1:2 keys_zone=modules:16m max_size=10g inactive=365d
                   use_temp_path=off;
  upstream origin {
    server 127.0.0.1:$ORIGIN_PORT;
    keepalive 32;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    listen 127.0.0.1:$NGINX_H2C_PORT http2;   # h2c, prior knowledge only
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_cache modules;
    proxy_cache_lock on;
    proxy_cache_lock_timeout 60s;
    add_header X-Cache-Status \$upstream_cache_status always;
    # list and @latest change: briefly. Exact versions never change: a year.
    location ~ (/@v/list|/@latest)\$ {
      proxy_cache_valid 200 60s;
      proxy_cache_valid 404 410 30s;
      proxy_pass http://origin;
    }
    location / {
      proxy_cache_valid 200 1y;
      proxy_cache_valid 404 410 30s;
      proxy_pass http://origin;
    }
  }
}
EOF

write_modgate_conf "$W/modgate.yaml" "$W" "$MODGATE_PORT" "$AUDIT_OUTPUT" "" \
  "    debug_headers: true   # X-Modgate-Cache: the warm-up checks that the second request is a hit" ""

# ---------------------------------------------------------------------------------------------
# Start the three servers.
"$NGINX" -t -q -p "$W" -e "$W/origin-startup.log" -c "$W/origin.conf"
"$NGINX" -t -q -p "$W" -e "$W/nginx-startup.log" -c "$W/nginx.conf"
"$MODGATE" check "$W/modgate.yaml" >/dev/null

taskset -c "$LOADER_CPUS" "$NGINX" -p "$W" -e "$W/origin-startup.log" -c "$W/origin.conf" &
ORIGIN_PID=$!
PIDS+=("$ORIGIN_PID")
taskset -c "$SERVER_CPUS" "$NGINX" -p "$W" -e "$W/nginx-startup.log" -c "$W/nginx.conf" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
taskset -c "$SERVER_CPUS" "$MODGATE" run -c "$W/modgate.yaml" >"$W/modgate.stdout" 2>"$W/modgate.stderr" &
MODGATE_PID=$!
PIDS+=("$MODGATE_PID")

ORIGIN="http://127.0.0.1:$ORIGIN_PORT"
MG="http://127.0.0.1:$MODGATE_PORT"
NX="http://127.0.0.1:$NGINX_PORT"
wait_up "$ORIGIN/$MODULE/@v/list" "$ORIGIN_PID" || die "origin nginx did not start ($W/origin-error.log)"
wait_up "$NX/$MODULE/@v/list" "$NGINX_PID" || die "nginx did not start ($W/nginx-error.log)"
wait_up "$MG/healthz" "$MODGATE_PID" || die "modgate did not start: $(tail -5 "$W/modgate.stderr")"

# ---------------------------------------------------------------------------------------------
# Helpers (server_pids, status_kib, sum/max_status_kib, reset_hwm, cpu_ticks, mib, ratio: lib.sh).
sum_pss_kib() { # master
  local s=0 v
  for p in $(server_pids "$1"); do
    v=$(awk '$1 == "Pss:" { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
    s=$((s + ${v:-0}))
  done
  echo "$s"
}

# ---------------------------------------------------------------------------------------------
# Warm both caches and check that both serve the origin's bytes from cache.
CASES=(
  "info|/$MODULE/@v/v1.0.0.info"
  "zip 64 KiB|/$MODULE/@v/v1.1.0.zip"
  "zip 1 MiB|/$MODULE/@v/v1.0.0.zip"
)
log "warming both caches"
for c in "${CASES[@]}" "mod|/$MODULE/@v/v1.2.0.mod" "list|/$MODULE/@v/list"; do
  path=${c#*|}
  want=$(curl -fsS --max-time 60 "$ORIGIN$path" | sha256sum)
  for base in "$MG" "$NX"; do
    curl -fsS --max-time 60 -o /dev/null "$base$path"
    sleep 0.2
    got=$(curl -fsS --max-time 60 -D "$W/h" "$base$path" | sha256sum)
    [ "$got" = "$want" ] || die "$base$path: body differs from the origin's"
    state=$(tr -d '\r' <"$W/h" | awk -F': ' 'tolower($1) == "x-modgate-cache" || tolower($1) == "x-cache-status" { print $2 }')
    case $state in hit | HIT) ;; *) die "$base$path: second request was not a cache hit (${state:-no header})" ;; esac
  done
done
size_of() { stat -c %s "$W/origin$1"; }

# ---------------------------------------------------------------------------------------------
# wrk runs
lat_ms() { # "250.00us" -> ms
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n }'
}
run_wrk() { # name master url -> "rps p50 p99 cpu% cpu-us-per-request errors"
  local name=$1 master=$2 url=$3 out t0 t1
  timeout -k 5 $((WARMUP + 30)) taskset -c "$LOADER_CPUS" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null ||
    die "wrk (warm-up) failed or was stopped after $((WARMUP + 30))s on $url"
  t0=$(cpu_ticks "$master")
  out=$(timeout -k 5 $((DURATION + 30)) taskset -c "$LOADER_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url") ||
    die "wrk failed or was stopped after $((DURATION + 30))s on $url"
  t1=$(cpu_ticks "$master")
  printf '%s\n' "$out" >"$W/wrk-$name.txt"
  local rps p50 p99 errs cpu n per
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  n=$(awk '/ requests in / { print $1 }' <<<"$out")
  p50=$(lat_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(lat_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  errs=$(awk '/Non-2xx/ { e += $NF } /Socket errors/ { gsub(/[^0-9 ]/, " "); for (i = 1; i <= NF; i++) e += $i } END { print e + 0 }' <<<"$out")
  cpu=$(awk -v d=$((t1 - t0)) -v hz="$TICK" -v s="$DURATION" 'BEGIN { printf "%.0f", 100 * d / hz / s }')
  per=$(awk -v d=$((t1 - t0)) -v hz="$TICK" -v n="$n" 'BEGIN { printf "%.1f", (n > 0 ? 1e6 * d / hz / n : 0) }')
  echo "$rps $p50 $p99 $cpu $per $errs"
}

run_h2load() { # name master url -> "rps p50 p99 cpu% cpu-us-per-request errors"
  local name=$1 master=$2 url=$3 out t0 t1 lf="$W/h2load-$1.log"
  timeout -k 5 $((WARMUP + 30)) taskset -c "$LOADER_CPUS" h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$WARMUP" "$url" >/dev/null ||
    die "h2load (warm-up) failed or was stopped after $((WARMUP + 30))s on $url"
  t0=$(cpu_ticks "$master")
  out=$(timeout -k 5 $((DURATION + 30)) taskset -c "$LOADER_CPUS" h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$DURATION" --log-file="$lf" "$url") ||
    die "h2load failed or was stopped after $((DURATION + 30))s on $url"
  t1=$(cpu_ticks "$master")
  printf '%s\n' "$out" >"$W/h2load-$name.txt"
  grep -q 'Application protocol: h2c' <<<"$out" || die "$url: h2load did not speak h2c"
  local rps p50 p99 errs cpu n per
  rps=$(awk '/^finished in/ { print $4 }' <<<"$out")
  n=$(awk '/^requests:/ { print $8 }' <<<"$out")
  errs=$(awk '/^requests:/ { print $2 - $8 }' <<<"$out")
  read -r p50 p99 < <(cut -f3 "$lf" | sort -n | awk '{ v[NR] = $1 } END {
    i = int(NR * 0.5); if (i < 1) i = 1; j = int(NR * 0.99); if (j < 1) j = 1
    printf "%.3f %.3f\n", v[i] / 1000, v[j] / 1000 }')
  rm -f "$lf"
  cpu=$(awk -v d=$((t1 - t0)) -v hz="$TICK" -v s="$DURATION" 'BEGIN { printf "%.0f", 100 * d / hz / s }')
  per=$(awk -v d=$((t1 - t0)) -v hz="$TICK" -v n="$n" 'BEGIN { printf "%.1f", (n > 0 ? 1e6 * d / hz / n : 0) }')
  echo "$rps $p50 $p99 $cpu $per $errs"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
cpu_busy() { # percent of all CPUs busy over one second (the load average lags a previous run)
  local a b
  a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat)
  sleep 1
  b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ")
    busy = y[1] - x[1]; idle = y[2] - x[2]; printf "%.0f", 100 * busy / (busy + idle) }'
}
BUSY_BEFORE=$(cpu_busy)
[ "$BUSY_BEFORE" -gt 10 ] &&
  log "warning: the CPUs were ${BUSY_BEFORE}% busy before the runs: other work will add noise"
REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(cd "$ROOT" && git status --porcelain 2>/dev/null | head -1)" ] && REV="$REV+dirty"
log "measuring: ${DURATION}s per run after ${WARMUP}s warm-up, $CONNS connections, $PINNING"

NX2="http://127.0.0.1:$NGINX_H2C_PORT"
ROWS=() H2_ROWS=()
for c in "${CASES[@]}"; do
  label=${c%%|*} path=${c#*|}
  log "$label ($path): modgate"
  res=$(run_wrk "modgate-${label// /-}" "$MODGATE_PID" "$MG$path")
  read -r m_rps m_p50 m_p99 m_cpu m_per m_err <<<"$res"
  log "$label ($path): nginx"
  res=$(run_wrk "nginx-${label// /-}" "$NGINX_PID" "$NX$path")
  read -r n_rps n_p50 n_p99 n_cpu n_per n_err <<<"$res"
  errs=""
  [ "$m_err" != 0 ] && errs+=" modgate errors: $m_err"
  [ "$n_err" != 0 ] && errs+=" nginx errors: $n_err"
  ROWS+=("| $label ($(size_of "$path") B) | $(printf '%.0f' "$m_rps") | $(printf '%.0f' "$n_rps") | **$(ratio "$m_rps" "$n_rps")** | $m_p50 / $m_p99 | $n_p50 / $n_p99 | $(ratio "$m_p50" "$n_p50") / $(ratio "$m_p99" "$n_p99") | $m_cpu / $n_cpu | $m_per / $n_per | $(ratio "$m_per" "$n_per") | $(mib "$(sum_pss_kib "$MODGATE_PID")") / $(mib "$(sum_pss_kib "$NGINX_PID")") |$errs")
done
if [ "$H2C" = 1 ]; then
  for c in "${CASES[@]}"; do
    label=${c%%|*} path=${c#*|}
    log "$label ($path) over h2c: modgate"
    res=$(run_h2load "modgate-${label// /-}" "$MODGATE_PID" "$MG$path")
    read -r m_rps m_p50 m_p99 m_cpu m_per m_err <<<"$res"
    log "$label ($path) over h2c: nginx"
    res=$(run_h2load "nginx-${label// /-}" "$NGINX_PID" "$NX2$path")
    read -r n_rps n_p50 n_p99 n_cpu n_per n_err <<<"$res"
    errs=""
    [ "$m_err" != 0 ] && errs+=" modgate errors: $m_err"
    [ "$n_err" != 0 ] && errs+=" nginx errors: $n_err"
    H2_ROWS+=("| $label ($(size_of "$path") B) | $(printf '%.0f' "$m_rps") | $(printf '%.0f' "$n_rps") | **$(ratio "$m_rps" "$n_rps")** | $m_p50 / $m_p99 | $n_p50 / $n_p99 | $(ratio "$m_p50" "$n_p50") / $(ratio "$m_p99" "$n_p99") | $m_cpu / $n_cpu | $m_per / $n_per | $(ratio "$m_per" "$n_per") |$errs")
  done
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

M_RSS=$(status_kib "$MODGATE_PID" VmRSS) M_HWM=$(status_kib "$MODGATE_PID" VmHWM)
M_PSS=$(sum_pss_kib "$MODGATE_PID") M_THR=$(status_kib "$MODGATE_PID" Threads)
N_RSS=$(sum_status_kib "$NGINX_PID" VmRSS) N_PSS=$(sum_pss_kib "$NGINX_PID")
N_PROCS=$(server_pids "$NGINX_PID" | wc -l)
N_WORKER_RSS=$(max_status_kib "$NGINX_PID" VmRSS)

# ---------------------------------------------------------------------------------------------
# Large zip: peak RSS while it passes through (miss, hit, slow-client miss).
BIG_ROWS=()
if [ "$BIG_MIB" -gt 0 ]; then
  big_fetch() { # label master base path [curl options] -> table row
    local label=$1 master=$2 base=$3 path=$4
    shift 4
    local before out state code size speed hwm hdr="$W/big-headers"
    reset_hwm "$master"
    before=$(max_status_kib "$master" VmRSS)
    out=$(taskset -c "$LOADER_CPUS" curl -sS --max-time 600 "$@" -o /dev/null -D "$hdr" \
      -w '%{http_code} %{size_download} %{speed_download}' "$base$path")
    read -r code size speed <<<"$out"
    hwm=$(max_status_kib "$master" VmHWM)
    state=$(tr -d '\r' <"$hdr" | awk -F': ' 'tolower($1) == "x-modgate-cache" || tolower($1) == "x-cache-status" { print $2 }')
    [ "$code" = 200 ] && [ "$size" = "$(size_of "$path")" ] || state="$state, HTTP $code, $size bytes"
    BIG_ROWS+=("| $label | ${state:--} | $(awk -v s="$speed" 'BEGIN { printf "%.0f", s / 1048576 }') | $(mib "$before") | **$(mib "$hwm")** |")
  }
  BIG=/$MODULE/@v/v0.9.0.zip
  SLOW=/$MODULE/@v/v0.9.1.zip
  log "large zip ($BIG_MIB MiB): modgate"
  big_fetch "modgate, first request" "$MODGATE_PID" "$MG" "$BIG"
  sleep 1
  big_fetch "modgate, second request" "$MODGATE_PID" "$MG" "$BIG"
  big_fetch "modgate, first request, client at $SLOW_RATE/s" "$MODGATE_PID" "$MG" "$SLOW" --limit-rate "$SLOW_RATE"
  log "large zip ($BIG_MIB MiB): nginx"
  big_fetch "nginx, first request" "$NGINX_PID" "$NX" "$BIG"
  sleep 1
  big_fetch "nginx, second request" "$NGINX_PID" "$NX" "$BIG"
  big_fetch "nginx, first request, client at $SLOW_RATE/s" "$NGINX_PID" "$NX" "$SLOW" --limit-rate "$SLOW_RATE"
fi

# ---------------------------------------------------------------------------------------------
cat <<EOF

Machine: $NCPU CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r), ${BUSY_BEFORE}% busy just
before the runs (load average before $LOAD_BEFORE, after $LOAD_AFTER; the bench itself keeps 2 busy).
modgate $REV, $($NGINX -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -1 | awk '{ print "wrk " $2 }'), $(h2load --version | head -1).
Pinning: $PINNING. THREADS=$THREADS (modgate server.threads = nginx worker_processes),
wrk -t1 -c$CONNS, ${WARMUP}s warm-up then ${DURATION}s per run, HTTP/1.1 keep-alive, LOGS=$LOGS.

Cached hits. Ratios are modgate / nginx: above 1 is better for req/s, below 1 is better for
latency and CPU. CPU % = server CPU time / wall time (below ~95 % the server was not the
bottleneck: the loader core was); CPU µs/req = server CPU time per request; PSS after = the
server's proportional set size after that case (nginx: master, worker and cache manager).

| case | modgate req/s | nginx req/s | req/s ratio | modgate p50 / p99 ms | nginx p50 / p99 ms | latency ratio p50 / p99 | CPU % modgate / nginx | CPU µs/req modgate / nginx | CPU/req ratio | PSS after, MiB modgate / nginx |
|---|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${ROWS[@]}")
EOF
if [ ${#H2_ROWS[@]} -gt 0 ]; then
  cat <<EOF

The same over h2c (h2load -t1 -c$H2_CONNS -m$H2_STREAMS; p50 / p99 from its per-request log):

| case | modgate req/s | nginx req/s | req/s ratio | modgate p50 / p99 ms | nginx p50 / p99 ms | latency ratio p50 / p99 | CPU % modgate / nginx | CPU µs/req modgate / nginx | CPU/req ratio |
|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${H2_ROWS[@]}")
EOF
fi
cat <<EOF

Memory after the runs: modgate VmRSS $(mib "$M_RSS") MiB (peak $(mib "$M_HWM") MiB, PSS $(mib "$M_PSS") MiB, $M_THR threads);
nginx $N_PROCS processes VmRSS $(mib "$N_RSS") MiB in total (largest $(mib "$N_WORKER_RSS") MiB), PSS $(mib "$N_PSS") MiB in total.
EOF
if [ ${#BIG_ROWS[@]} -gt 0 ]; then
  cat <<EOF

Large zip ($(size_of "$BIG") bytes) with curl to /dev/null; peak RSS = VmHWM during that request
(reset before it; for nginx the largest of its processes):

| request | cache | MiB/s | RSS before, MiB | peak RSS, MiB |
|---|---|---|---|---|
$(printf '%s\n' "${BIG_ROWS[@]}")
EOF
fi
