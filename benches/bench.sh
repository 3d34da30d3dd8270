#!/usr/bin/env bash
# benches/bench.sh — modgate and nginx side by side over TLS 1.3 + HTTP/2 (issue 11's benchmark,
# in part). `make bench`, or:
#
#   benches/bench.sh
#   DURATION=5 ROUNDS=3 ZIPS=1 benches/bench.sh
#
# One static origin (an nginx serving benches/gen_modules.py's module set), and in front of it
# modgate (release build) and nginx with equivalent settings: TLS 1.3 only, the same generated
# server certificate (`modgate certs`), client certificates asked for and verified when
# presented (modgate `client_auth: optional`, nginx `ssl_verify_client optional`; h2load
# presents none), HTTP/2 by ALPN, a disk cache with concurrent misses coalesced (modgate's cache,
# nginx `proxy_cache_lock on`). Two logging modes, each with freshly started servers:
#   on:  modgate audit log to a file and its access line (log level info) to a file;
#        nginx access_log to a file
#   off: modgate `audit: { output: off }`, `log: { level: warn }`; nginx `access_log off`
#
# For each mode, ROUNDS rounds; in each round every case is measured on both servers, the
# server measured first alternating from round to round. A run is `h2load -t1 -cCONNS -mSTREAMS`
# for WARMUP seconds (discarded), then DURATION seconds measured:
#   req/s     h2load's "finished in ..., N req/s"
#   p99       99th percentile of the per-request times in h2load's --log-file (h2load itself
#             prints only min/max/mean/sd)
#   CPU/req   utime+stime of the server (all its processes: nginx master, workers, cache
#             manager) from /proc/<pid>/stat before and after the measured run, divided by the
#             requests h2load completed
#   CPU %     the same CPU time over the wall time (below ~95 % the server core was not the
#             limit: the loader was, and the req/s ratio understates the CPU/req ratio)
#   origin    requests the origin received during the measured run (0: all cache hits)
# The table gives the median of the rounds for each figure and the ratios modgate / nginx of
# the medians (req/s: above 1 is better for modgate; p99 and CPU/req: below 1 is better).
#
# Busy machine guard. Before every run the script records the 1-, 5- and 15-minute load
# averages, then measures how busy the server core was over BUSY_WINDOW seconds with both
# servers idle (/proc/stat, that core's line). The 1-minute load average itself cannot be the
# gate: it decays with a 60 s time constant, so it mostly shows this script's own previous runs
# (two busy cores), not what is running now. A run is refused when the server core was more than
# BUSY_MAX % busy before it: the script waits and retries (up to RETRIES times); a run still
# refused is left out of the medians and counted in the table ("refused"). It also warns loudly
# when the 1-minute load average is above LOAD_WARN, and after each run computes the server
# core's busy time not charged to the server ("foreign": other processes, interrupts) and
# warns when it exceeds FOREIGN_WARN % of the run.
#
# Pinning (taskset): on NCPU > THREADS, the servers on CPUs 1..THREADS, h2load and the origin on
# CPU 0 (and any others). On 2 cores keep THREADS=1 (modgate server.threads = nginx
# worker_processes).
#
# Settings (environment):
#   DURATION=5 WARMUP=2 ROUNDS=3 CONNS=32 STREAMS=8 THREADS=1
#   MODES="on off"     logging modes to run
#   ZIPS=1             also cached zips of 64 KiB and 1 MiB (logging on only)
#   BUSY_MAX=10 BUSY_WINDOW=1 RETRIES=3 LOAD_WARN=1.5 FOREIGN_WARN=10
#   CIPHER=TLS_AES_128_GCM_SHA256   the TLS 1.3 suite h2load offers (both servers then use it)
#   ORIGIN_PORT=18611 NGINX_PORT=18612 MODGATE_PORT=18613
#   KEEP=1             keep the work directory (configs, logs, h2load outputs)
#
# Everything listens on 127.0.0.1. Every process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
STREAMS=${STREAMS:-8}
THREADS=${THREADS:-1}
MODES=${MODES:-on off}
ZIPS=${ZIPS:-1}
BUSY_MAX=${BUSY_MAX:-10}
BUSY_WINDOW=${BUSY_WINDOW:-1}
RETRIES=${RETRIES:-3}
LOAD_WARN=${LOAD_WARN:-1.5}
FOREIGN_WARN=${FOREIGN_WARN:-10}
CIPHER=${CIPHER:-TLS_AES_128_GCM_SHA256}
ORIGIN_PORT=${ORIGIN_PORT:-18611}
NGINX_PORT=${NGINX_PORT:-18612}
MODGATE_PORT=${MODGATE_PORT:-18613}
KEEP=${KEEP:-0}
MODULE=example.com/bench

for m in $MODES; do case $m in on | off) ;; *) echo "MODES: on and/or off" >&2; exit 2 ;; esac; done
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] || { echo "ROUNDS: 1..20" >&2; exit 2; }
[ "$RETRIES" -ge 0 ] && [ "$RETRIES" -le 10 ] || { echo "RETRIES: 0..10" >&2; exit 2; }

log() { printf '== %s\n' "$*" >&2; }
warn() { printf '\n!! WARNING: %s\n\n' "$*" >&2; }
die() { printf 'bench.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Prerequisites (Debian): nginx and h2load (nghttp2-client) are installed if missing.
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export PATH="$PATH:/usr/sbin:/sbin"
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v taskset >/dev/null || need+=(util-linux)
command -v pgrep >/dev/null || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} with apt-get (needed by this benchmark only)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx)

log "building modgate (release)"
(cd "$ROOT" && cargo build --release -p modgate)
MODGATE="$ROOT/target/release/modgate"

for p in "$ORIGIN_PORT" "$NGINX_PORT" "$MODGATE_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "127.0.0.1:$p is already in use (set ORIGIN_PORT / NGINX_PORT / MODGATE_PORT)"
  fi
done

NCPU=$(nproc)
if [ "$NCPU" -gt "$THREADS" ]; then
  SERVER_CPUS=$(seq -s, 1 "$THREADS")
  LOADER_CPUS=0
  [ "$NCPU" -gt $((THREADS + 1)) ] && LOADER_CPUS="0,$(seq -s, $((THREADS + 1)) $((NCPU - 1)))"
  PINNING="servers on CPU $SERVER_CPUS, h2load and the origin on CPU $LOADER_CPUS"
else
  SERVER_CPUS=$(seq -s, 0 $((NCPU - 1)))
  LOADER_CPUS=$SERVER_CPUS
  PINNING="NOT pinned: $NCPU CPUs for $THREADS server threads plus the loader"
  warn "$PINNING: the busy-core guard and the CPU figures are meaningless"
fi
SERVER_CPU_LIST=${SERVER_CPUS//,/ }

# ---------------------------------------------------------------------------------------------
# Work directory; every process started is in PIDS and stopped on exit.
W=$(mktemp -d /tmp/modgate-bench.XXXXXX)
PIDS=()
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [ "$KEEP" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "generating the module set and certificates in $W"
python3 "$ROOT/benches/gen_modules.py" "$W/origin" "$MODULE" 0
"$MODGATE" certs --out "$W/certs" >/dev/null
CERT=$W/certs/server.pem KEY=$W/certs/server.key CA=$W/certs/ca.pem
for f in "$CERT" "$KEY" "$CA"; do [ -s "$f" ] || die "modgate certs wrote no $f"; done

mkdir -p "$W/tmp"
NGINX_USER=""
[ "$(id -u)" = 0 ] && NGINX_USER="user root;"
TEMP_PATHS="client_body_temp_path $W/tmp/body; proxy_temp_path $W/tmp/proxy;
  fastcgi_temp_path $W/tmp/fastcgi; uwsgi_temp_path $W/tmp/uwsgi; scgi_temp_path $W/tmp/scgi;"

# The origin logs every request, so a run can show that it was all cache hits.
cat >"$W/origin.conf" <<EOF
$NGINX_USER
daemon off;
worker_processes 1;
pid $W/origin.pid;
error_log $W/origin-error.log warn;
events { worker_connections 4096; }
http {
  $TEMP_PATHS
  log_format tiny '\$request';
  access_log $W/origin-access.log tiny;
  sendfile on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  types { application/json info; text/plain mod; application/zip zip; }
  server {
    listen 127.0.0.1:$ORIGIN_PORT;
    root $W/origin;
    location / { try_files \$uri =404; }
  }
}
EOF
"$NGINX" -t -q -p "$W" -e "$W/origin-startup.log" -c "$W/origin.conf"
taskset -c "$LOADER_CPUS" "$NGINX" -p "$W" -e "$W/origin-startup.log" -c "$W/origin.conf" &
ORIGIN_PID=$!
PIDS+=("$ORIGIN_PID")
ORIGIN="http://127.0.0.1:$ORIGIN_PORT"

wait_up() { # url pid [curl options]
  local url=$1 pid=$2
  shift 2
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "$@" "$url" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
wait_up "$ORIGIN/$MODULE/@v/list" "$ORIGIN_PID" || die "origin did not start ($W/origin-error.log)"
origin_count() { wc -l <"$W/origin-access.log"; }

# ---------------------------------------------------------------------------------------------
# Configurations for one logging mode.
write_configs() { # mode
  local mode=$1 d="$W/$1"
  mkdir -p "$d/nginx-cache" "$d/modgate-cache"
  local access="access_log $d/nginx-access.log;" audit="$d/modgate-audit.log" level=info
  if [ "$mode" = off ]; then access="access_log off;" audit=off level=warn; fi
  cat >"$d/nginx.conf" <<EOF
$NGINX_USER
daemon off;
worker_processes $THREADS;
pid $d/nginx.pid;
error_log $d/nginx-error.log warn;
events { worker_connections 4096; }
http {
  $TEMP_PATHS
  $access
  sendfile on;
  tcp_nopush off;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  ssl_protocols TLSv1.3;
  ssl_certificate $CERT;
  ssl_certificate_key $KEY;
  ssl_client_certificate $CA;
  ssl_verify_client optional;
  proxy_cache_path $d/nginx-cache levels=1:2 keys_zone=modules:16m max_size=10g inactive=365d
                   use_temp_path=off;
  upstream origin {
    server 127.0.0.1:$ORIGIN_PORT;
    keepalive 32;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT ssl http2;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_cache modules;
    proxy_cache_lock on;
    proxy_cache_lock_timeout 60s;
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
  cat >"$d/modgate.yaml" <<EOF
server:
  threads: $THREADS
  pid_file: $d/modgate.pid
  upgrade_sock: $d/modgate_upgrade.sock
  grace_period: 1s
  shutdown_timeout: 1s
listeners:
  - name: bench
    address: "127.0.0.1:$MODGATE_PORT"
    tls:
      cert: $CERT
      key: $KEY
      client_auth: optional
      client_ca: $CA
upstreams:
  origin:
    url: "http://127.0.0.1:$ORIGIN_PORT"
routes:
  - name: all
    match: { prefix: "" }
    chain: [origin]
cache:
  dir: $d/modgate-cache
  fsync: false          # throwaway bench cache: only the miss path is affected
audit:
  output: $audit
log:
  level: $level
EOF
  "$NGINX" -t -q -p "$W" -e "$d/nginx-startup.log" -c "$d/nginx.conf"
  "$MODGATE" check "$d/modgate.yaml" >/dev/null
}

unset RUST_LOG   # it would override log.level
NGINX_PID="" MODGATE_PID=""
start_servers() { # mode
  local d="$W/$1"
  taskset -c "$SERVER_CPUS" "$NGINX" -p "$W" -e "$d/nginx-startup.log" -c "$d/nginx.conf" &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  taskset -c "$SERVER_CPUS" "$MODGATE" run -c "$d/modgate.yaml" >"$d/modgate.stdout" 2>"$d/modgate.stderr" &
  MODGATE_PID=$!
  PIDS+=("$MODGATE_PID")
  wait_up "https://127.0.0.1:$NGINX_PORT/$MODULE/@v/list" "$NGINX_PID" --cacert "$CA" ||
    die "nginx did not start ($d/nginx-error.log)"
  wait_up "https://127.0.0.1:$MODGATE_PORT/healthz" "$MODGATE_PID" --cacert "$CA" ||
    die "modgate did not start: $(tail -5 "$d/modgate.stderr")"
}
stop_servers() {
  stop_pid "$MODGATE_PID"
  stop_pid "$NGINX_PID"
  local keep=()
  for p in "${PIDS[@]}"; do [ "$p" = "$MODGATE_PID" ] || [ "$p" = "$NGINX_PID" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------------------------------------
# Measurement helpers.
TICK=$(getconf CLK_TCK)
server_pids() { echo "$1"; pgrep -P "$1" || true; }
cpu_ticks() { # master -> utime+stime of it and its children, clock ticks
  local s=0 v
  for p in $(server_pids "$1"); do
    v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)
    s=$((s + ${v:-0}))
  done
  echo "$s"
}
core_ticks() { # -> "busy idle" summed over the server CPUs (/proc/stat: user nice system irq softirq steal / idle iowait)
  local a=0 b=0 x y
  for c in $SERVER_CPU_LIST; do
    read -r x y < <(awk -v c="cpu$c" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    a=$((a + x)) b=$((b + y))
  done
  echo "$a $b"
}
core_busy_pct() { # busy % of the server CPUs over BUSY_WINDOW seconds
  local a b
  a=$(core_ticks)
  sleep "$BUSY_WINDOW"
  b=$(core_ticks)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ")
    busy = y[1] - x[1]; idle = y[2] - x[2]; t = busy + idle
    printf "%.0f", (t > 0 ? 100 * busy / t : 0) }'
}
truncate_logs() { # both servers append (O_APPEND), so truncating between runs is safe
  for f in "$W"/*/nginx-access.log "$W"/*/modgate-audit.log "$W"/*/modgate.stderr; do
    [ -f "$f" ] && : >"$f"
  done
}

log_lines() { # files... -> lines in those that exist
  local n=0 f
  for f in "$@"; do [ -f "$f" ] && n=$((n + $(wc -l <"$f"))); done
  echo "$n"
}

# One measured run. Prints "rps p99_ms cpu_pct cpu_us_per_req errors origin_requests load1
# busy_before foreign_pct log_lines_per_request" or "REFUSED load1 busy".
run_one() { # name server-master url log-files...
  local name=$1 master=$2 url=$3 try busy load1 la out lf="$W/h2load-$1.log"
  shift 3
  local logs=("$@")
  truncate_logs
  for try in $(seq 0 "$RETRIES"); do
    la=$(cut -d' ' -f1-3 /proc/loadavg)
    load1=${la%% *}
    busy=$(core_busy_pct)
    [ "$busy" -le "$BUSY_MAX" ] && break
    warn "server core ${SERVER_CPUS} was ${busy}% busy before '$name' (load average $la); waiting ($((try + 1))/$((RETRIES + 1)))"
    [ "$try" -lt "$RETRIES" ] && sleep 5
  done
  echo "$name load=[$la] server-core-busy-before=${busy}%" >>"$W/runs.log"
  if [ "$busy" -gt "$BUSY_MAX" ]; then
    warn "REFUSED '$name': the server core was ${busy}% busy before it (> BUSY_MAX=$BUSY_MAX)"
    echo "REFUSED $load1 $busy"
    return
  fi
  awk -v l="$load1" -v m="$LOAD_WARN" 'BEGIN { exit !(l > m) }' &&
    warn "1-minute load average $load1 > LOAD_WARN=$LOAD_WARN before '$name' (partly this script's own previous runs; the server core itself was ${busy}% busy)"
  # h2load 1.52 in duration mode sometimes never exits on 1 MiB responses (seen once in a
  # warm-up against nginx: 7 minutes at 80 % CPU): every h2load is bounded by `timeout`.
  timeout -k 5 $((WARMUP + 30)) taskset -c "$LOADER_CPUS" h2load -t1 -c"$CONNS" -m"$STREAMS" \
    --tls13-ciphers="$CIPHER" -D "$WARMUP" "$url" >/dev/null ||
    warn "'$name': the warm-up h2load failed or was stopped after $((WARMUP + 30))s"
  local t0 t1 c0 c1 o0 o1 l0 l1
  sleep 0.1
  l0=$(log_lines "${logs[@]}")
  o0=$(origin_count)
  c0=$(core_ticks)
  t0=$(cpu_ticks "$master")
  if ! out=$(timeout -k 5 $((DURATION + 30)) taskset -c "$LOADER_CPUS" h2load -t1 -c"$CONNS" \
    -m"$STREAMS" --tls13-ciphers="$CIPHER" -D "$DURATION" --log-file="$lf" "$url"); then
    warn "TIMEOUT '$name': h2load did not finish within $((DURATION + 30))s; run left out"
    echo "TIMEOUT $load1 $busy"
    return
  fi
  t1=$(cpu_ticks "$master")
  c1=$(core_ticks)
  o1=$(origin_count)
  sleep 0.2   # modgate's audit writer flushes every 10 ms
  l1=$(log_lines "${logs[@]}")
  printf '%s\n' "$out" >"$W/h2load-$name.txt"
  grep -q '^TLS Protocol: TLSv1.3' <<<"$out" || die "$url: not TLS 1.3 ($W/h2load-$name.txt)"
  grep -q '^Application protocol: h2$' <<<"$out" || die "$url: not HTTP/2 ($W/h2load-$name.txt)"
  grep -q "^Cipher: ${CIPHER}\$" <<<"$out" || die "$url: cipher is not $CIPHER ($W/h2load-$name.txt)"
  local rps n errs p99 cpu per foreign
  rps=$(awk '/^finished in/ { print $4 }' <<<"$out")
  n=$(awk '/^requests:/ { print $8 }' <<<"$out")
  # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout" and
  # "status codes: N 2xx, N 3xx, N 4xx, N 5xx": failures and anything but 2xx are errors here
  errs=$(awk '/^requests:/ { e += $10 + $12 + $14 } /^status codes:/ { e += $5 + $7 + $9 }
    END { print e + 0 }' <<<"$out")
  p99=$(cut -f3 "$lf" | sort -n | awk '{ v[NR] = $1 } END {
    j = int(NR * 0.99); if (j < 1) j = 1; printf "%.3f", v[j] / 1000 }')
  rm -f "$lf"
  cpu=$(awk -v d=$((t1 - t0)) -v hz="$TICK" -v s="$DURATION" 'BEGIN { printf "%.0f", 100 * d / hz / s }')
  per=$(awk -v d=$((t1 - t0)) -v hz="$TICK" -v n="$n" 'BEGIN { printf "%.1f", (n > 0 ? 1e6 * d / hz / n : 0) }')
  foreign=$(awk -v a="$c0" -v b="$c1" -v s=$((t1 - t0)) -v w="$DURATION" -v hz="$TICK" -v k="$THREADS" 'BEGIN {
    split(a, x, " "); split(b, y, " "); f = (y[1] - x[1]) - s; if (f < 0) f = 0
    printf "%.0f", 100 * f / (hz * w * k) }')
  [ "$foreign" -gt "$FOREIGN_WARN" ] &&
    warn "'$name': ${foreign}% of the server core's time went to something other than the server (interrupts, softirq, another process)"
  echo "$rps $p99 $cpu $per $errs $((o1 - o0)) $load1 $busy $foreign $(awk -v l=$((l1 - l0)) -v n="$n" 'BEGIN { printf "%.2f", (n > 0 ? l / n : 0) }')"
}

median() { # numbers as arguments -> median ("-" if none)
  [ $# -eq 0 ] && { echo -; return; }
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && b != "-" && b > 0) printf "%.2f", a / b; else print "-" }'; }

# ---------------------------------------------------------------------------------------------
SMALL=("info|/$MODULE/@v/v1.0.0.info" "mod|/$MODULE/@v/v1.2.0.mod" "list|/$MODULE/@v/list")
ZIPCASES=("zip 64 KiB|/$MODULE/@v/v1.1.0.zip" "zip 1 MiB|/$MODULE/@v/v1.0.0.zip")

warm() { # base -> both caches hold every case; a third request does not reach the origin
  local base=$1 c path want got o0
  for c in "${SMALL[@]}" "${ZIPCASES[@]}"; do
    path=${c#*|}
    want=$(curl -fsS "$ORIGIN$path" | sha256sum)
    curl -fsS --http2 --cacert "$CA" -o /dev/null "$base$path"
    sleep 0.3
    curl -fsS --http2 --cacert "$CA" -o /dev/null "$base$path"
    o0=$(origin_count)
    got=$(curl -fsS --http2 --cacert "$CA" "$base$path" | sha256sum)
    [ "$got" = "$want" ] || die "$base$path: body differs from the origin's"
    [ "$(origin_count)" = "$o0" ] || die "$base$path: a warm request still reached the origin"
  done
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(cd "$ROOT" && git status --porcelain -- crates 2>/dev/null | head -1)" ] && REV="$REV+dirty"
declare -A RES
REFUSED=0
TABLE=()
for mode in $MODES; do
  write_configs "$mode"
  log "logging $mode: starting modgate and nginx"
  start_servers "$mode"
  MG="https://127.0.0.1:$MODGATE_PORT" NX="https://127.0.0.1:$NGINX_PORT"
  warm "$MG"
  warm "$NX"
  cases=("${SMALL[@]}")
  [ "$mode" = on ] && [ "$ZIPS" = 1 ] && cases+=("${ZIPCASES[@]}")
  for r in $(seq "$ROUNDS"); do
    order="modgate nginx"
    [ $((r % 2)) = 0 ] && order="nginx modgate"
    for c in "${cases[@]}"; do
      label=${c%%|*} path=${c#*|}
      for s in $order; do
        if [ "$s" = modgate ]; then
          master=$MODGATE_PID base=$MG logs=("$W/$mode/modgate-audit.log" "$W/$mode/modgate.stderr")
        else
          master=$NGINX_PID base=$NX logs=("$W/$mode/nginx-access.log")
        fi
        name="$mode-${label// /-}-$s-r$r"
        log "logs $mode, round $r/$ROUNDS, $label: $s"
        RES[$name]=$(run_one "$name" "$master" "$base$path" "${logs[@]}")
        log "  ${RES[$name]}"
      done
    done
  done
  stop_servers
  for c in "${cases[@]}"; do
    label=${c%%|*}
    declare -A col=()
    for s in modgate nginx; do
      rps=() p99=() cpu=() per=() errs=0 orig=0 ref=0 loads=() lpr=()
      for r in $(seq "$ROUNDS"); do
        read -r a b cc d e f g h i j <<<"${RES[$mode-${label// /-}-$s-r$r]}"
        if [ "$a" = REFUSED ] || [ "$a" = TIMEOUT ]; then ref=$((ref + 1)); REFUSED=$((REFUSED + 1)); continue; fi
        rps+=("$a") p99+=("$b") cpu+=("$cc") per+=("$d") errs=$((errs + e)) orig=$((orig + f)) loads+=("$g") lpr+=("$j")
      done
      col[$s.rps]=$(median "${rps[@]}") col[$s.p99]=$(median "${p99[@]}")
      col[$s.cpu]=$(median "${cpu[@]}") col[$s.per]=$(median "${per[@]}")
      col[$s.err]=$errs col[$s.orig]=$orig col[$s.ref]=$ref col[$s.n]=${#rps[@]}
      col[$s.load]=$(IFS=/; echo "${loads[*]:-}")
      col[$s.lpr]=$(median "${lpr[@]}")
    done
    note=""
    [ "${col[modgate.err]}${col[nginx.err]}" != 00 ] && note+=" errors ${col[modgate.err]} / ${col[nginx.err]};"
    [ "${col[modgate.ref]}${col[nginx.ref]}" != 00 ] && note+=" left out (refused or timed out) ${col[modgate.ref]} / ${col[nginx.ref]};"
    TABLE+=("| $mode | $label | $(printf '%.0f' "${col[modgate.rps]}") | $(printf '%.0f' "${col[nginx.rps]}") | **$(ratio "${col[modgate.rps]}" "${col[nginx.rps]}")** | ${col[modgate.p99]} / ${col[nginx.p99]} | $(ratio "${col[modgate.p99]}" "${col[nginx.p99]}") | ${col[modgate.per]} / ${col[nginx.per]} | **$(ratio "${col[modgate.per]}" "${col[nginx.per]}")** | ${col[modgate.cpu]} / ${col[nginx.cpu]} | ${col[modgate.lpr]} / ${col[nginx.lpr]} | ${col[modgate.orig]} / ${col[nginx.orig]} | ${col[modgate.load]} / ${col[nginx.load]} |${note}")
    unset col
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

cat <<EOF

Machine: $NCPU CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r).
Load average at start $LOAD_START, at end $LOAD_END. modgate $REV,
$($NGINX -v 2>&1 | sed 's/^nginx version: //'), $(h2load --version | head -1).
Pinning: $PINNING; THREADS=$THREADS (modgate server.threads = nginx worker_processes).
TLS 1.3 ($CIPHER), HTTP/2, client certificates optional (none presented).
h2load -t1 -c$CONNS -m$STREAMS: ${WARMUP}s warm-up, then ${DURATION}s measured; $ROUNDS rounds, servers
alternating; medians of the rounds. A run is refused when the server core was more than
${BUSY_MAX}% busy in the ${BUSY_WINDOW}s before it; runs refused or timed out: $REFUSED.

Ratios are modgate / nginx of the medians: req/s above 1 favours modgate, p99 and CPU/req below 1.
CPU % = server CPU time / wall time; log lines/req = lines the server added to its log files
per request (modgate: audit + access line; 0 = logging off); origin = requests the origin saw during the measured runs
(all rounds); load1 = 1-minute load average before each round's run.

| logs | case | modgate req/s | nginx req/s | req/s ratio | p99 ms modgate / nginx | p99 ratio | CPU µs/req modgate / nginx | CPU/req ratio | CPU % modgate / nginx | log lines/req modgate / nginx | origin reqs | load1 modgate / nginx |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${TABLE[@]}")
EOF
