#!/usr/bin/env bash
# benches/bench.sh — modgate and nginx side by side over TLS 1.3 (issue 11's benchmark).
# `make bench`, or:
#
#   benches/bench.sh
#   DURATION=5 ROUNDS=3 SECTIONS="small zips" benches/bench.sh
#   DURATION=1 WARMUP=1 ROUNDS=1 MODES=on MEM_REQUESTS=20000 benches/bench.sh    # a quick look
#
# One static origin (an nginx serving benches/gen_modules.py's module set), and in front of it
# modgate (release build) and nginx with equivalent settings: TLS 1.3 only, the same generated
# server certificate (`modgate certs`), client certificates asked for and verified when
# presented (modgate `client_auth: optional`, nginx `ssl_verify_client optional`; h2load
# presents none), HTTP/2 and HTTP/1.1 by ALPN, a disk cache with concurrent misses coalesced
# (modgate's cache lock, nginx `proxy_cache_lock on`). Two logging modes, each with freshly
# started servers and empty caches:
#   on:  modgate audit log to a file and its access line (log level info) to a file;
#        nginx access_log to a file
#   off: modgate `audit: { output: off }`, `log: { level: warn }`; nginx `access_log off`
#
# Each server also has a second listener that requires a client certificate (modgate
# `client_auth: required`, nginx `ssl_verify_client on`; same CA, same caches), which the mtls
# section loads with mgload (benches/mgload, built here in release mode), the one loader here
# that presents a client certificate (`modgate certs`' client.pem).
#
# Sections (SECTIONS, all by default; all but small also have a switch of their own, shown on
# the right, 0 turns the section off). "small" and "mtls" run in every logging mode; the others
# only in the first mode of MODES (default: on).
#   small   cached .info, .mod and list over HTTP/2 (h2load -cCONNS -mSTREAMS)
#   mtls    the cached .info with mgload, four ways: HTTP/2 (-cCONNS -mSTREAMS) and HTTP/1.1
#           (--h1 -cCONNS: keep-alive, one request in flight per connection), each without a
#           client certificate (the optional listener) and with one (the required listener),
#           so that the cost of the certificate and of HTTP/1.1 show against one loader
#                                                                                   (MTLS=1)
#   zips    cached zips over HTTP/2: 64 KiB and 1 MiB (-cCONNS -mSTREAMS) and BIG_MIB MiB
#           (-cBIG_CONNS -m1: a few large transfers at once); MiB/s column       (ZIPS=1)
#   h1      the same zips over HTTP/1.1 over TLS (h2load --h1, -m1)                  (H1=1)
#   fanin   FANIN_N concurrent requests on one 100 KiB zip, all in flight at once (h2load
#           -cFANIN_CONNS -mFANIN_STREAMS -nFANIN_N): the wall time until all are answered
#           (h2load's "finished in"), warm (cached) and cold (a version neither cache has seen:
#           v1.4.<round-1>, one per round), the origin requests the cold run caused (1 when
#           concurrent misses are coalesced), and the origin's own latency for that object (one
#           curl straight to it), so that "cold <= origin + warm + 50 ms" can be checked    (FANIN=1)
#   memory  resident memory of each server (VmRSS summed over its processes: nginx master,
#           workers and cache manager; modgate is one process): before and after MEM_REQUESTS
#           cached .info requests (h2load -cMEM_CONNS -mMEM_STREAMS -nMEM_REQUESTS), and the
#           peak while MEM_CLIENTS clients download the cached BIG_MIB MiB zip at once (h2load
#           -cMEM_CLIENTS -m1 -nMEM_CLIENTS; VmRSS sampled every 50 ms, plus VmHWM of the
#           largest process); one run per server, not timed                              (MEMORY=1)
#   gomod   `go mod download all` of a main module requiring GO_DEPS small modules
#           (example.com/dep/m000 ..), from an empty module cache, through modgate, through nginx
#           and straight from the origin (plain http): wall time, median of ROUNDS. Both
#           gateways are warmed by one run first, and the origin run's go.sum is kept, so every
#           later run also checks that the gateways serve the origin's bytes. go runs pinned
#           with the loader, GOMAXPROCS=GO_PROCS (go fetches up to GOMAXPROCS modules at once),
#           GOTOOLCHAIN=local GOSUMDB=off GOFLAGS="-mod=mod -modcacherw", SSL_CERT_FILE = the
#           bench CA; skipped with a message when GO_BIN is missing                        (GOMOD=1)
#
# For each mode, ROUNDS rounds; in each round every small/zip case is measured on both
# servers, the server measured first alternating from round to round. A run is `h2load -t1`
# for WARMUP seconds (discarded), then DURATION seconds measured:
#   req/s     h2load's (or mgload's, which prints the same lines) "finished in ..., N req/s"
#   MiB/s     h2load's "..., X MB/s" (h2load's MB are 2^20 bytes: all bytes it received)
#   p99       99th percentile of the per-request times in h2load's --log-file (h2load itself
#             prints only min/max/mean/sd)
#   CPU/req   utime+stime of the server (all its processes: nginx master, workers, cache
#             manager) from /proc/<pid>/stat before and after the measured run, divided by the
#             requests h2load completed
#   CPU %     the same CPU time over the wall time (below ~95 % the server core was not the
#             limit: the loader was, and the req/s ratio understates the CPU/req ratio)
#   origin    requests the origin received during the measured run (0: all cache hits)
# The tables give the median of the rounds for each figure and the ratios modgate / nginx of
# the medians (req/s, MiB/s: above 1 is better for modgate; times, CPU/req, memory: below 1).
#   loader    mgload runs only: the loader's own CPU time (getrusage) per answer, to tell how
#             close the loader core was to being the limit
# Every run checks TLS 1.3, the cipher and the application protocol (h2, or http/1.1 for h1).
#
# Busy machine guard. Before every timed run (small, mtls, zips, h1, fanin, gomod) the script records
# the 1-, 5- and 15-minute load averages, then measures how busy the server core was over
# BUSY_WINDOW seconds with both servers idle (/proc/stat, that core's line). The 1-minute load
# average itself cannot be the gate: it decays with a 60 s time constant, so it mostly shows
# this script's own previous runs (two busy cores), not what is running now. A run is refused
# when the server core was more than BUSY_MAX % busy before it: the script waits and retries
# (up to RETRIES times); a run still refused is left out of the medians and counted ("refused").
# It also warns loudly when the 1-minute load average is above LOAD_WARN, and after each
# duration run computes the server core's busy time not charged to the server ("foreign":
# other processes, interrupts) and warns when it exceeds FOREIGN_WARN % of the run.
#
# Pinning (taskset): on NCPU > THREADS, the servers on CPUs 1..THREADS, h2load, curl, go and
# the origin on CPU 0 (and any others; mgload too). On 2 cores keep THREADS=1 (modgate server.threads =
# nginx worker_processes).
#
# Settings (environment):
#   DURATION=5 WARMUP=2 ROUNDS=3 CONNS=32 STREAMS=8 THREADS=1
#   MODES="on off"     logging modes to run (the sections other than small and mtls: first one only)
#   SECTIONS="small mtls zips h1 fanin memory gomod"      MTLS=1 ZIPS=1 H1=1 FANIN=1 MEMORY=1 GOMOD=1
#   BIG_MIB=100        the large zip (0: no large-zip cases, no memory download peak)
#   BIG_CONNS=4        h2load -c for the large zip (-m1)
#   FANIN_CONNS=10 FANIN_STREAMS=100 FANIN_N=1000     (modgate allows 100 streams/connection)
#   FANIN_ORIGIN_MS=200  how long the origin takes to answer a cold fan-in zip (DELAY_PORT=18616)
#   MEM_REQUESTS=1000000 MEM_CONNS=32 MEM_STREAMS=8 MEM_CLIENTS=64
#   GO_BIN=$(command -v go || echo /usr/lib/go-1.23/bin/go) GO_DEPS=200 GO_PROCS=8
#   GO_TIMEOUT=300     seconds, per go run
#   BUSY_MAX=10 BUSY_WINDOW=1 RETRIES=3 LOAD_WARN=1.5 FOREIGN_WARN=10
#   CIPHER=TLS_AES_128_GCM_SHA256   the TLS 1.3 suite h2load offers (both servers then use it)
#   ORIGIN_PORT=18611 NGINX_PORT=18612 MODGATE_PORT=18613
#   NGINX_MTLS_PORT=18614 MODGATE_MTLS_PORT=18615      the listeners requiring a certificate
#   KEEP=1             keep the work directory (configs, logs, h2load, mgload and go outputs)
#   BUILD=0            use target/release/modgate and target/release/mgload as they are
#   WORK_STEALING=false modgate's server.work_stealing (true: the work-stealing scheduler)
#
# Everything listens on 127.0.0.1. Every h2load, curl and go is bounded by a timeout, every loop
# by a count. Every process started here is stopped on exit (benches/lib.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
STREAMS=${STREAMS:-8}
THREADS=${THREADS:-1}
MODES=${MODES:-on off}
SECTIONS=${SECTIONS:-small mtls zips h1 fanin memory gomod}
MTLS=${MTLS:-1}
ZIPS=${ZIPS:-1}
H1=${H1:-1}
FANIN=${FANIN:-1}
MEMORY=${MEMORY:-1}
GOMOD=${GOMOD:-1}
BIG_MIB=${BIG_MIB:-100}
BIG_CONNS=${BIG_CONNS:-4}
FANIN_CONNS=${FANIN_CONNS:-10}
FANIN_STREAMS=${FANIN_STREAMS:-100}
FANIN_N=${FANIN_N:-1000}
FANIN_ORIGIN_MS=${FANIN_ORIGIN_MS:-200}
MEM_REQUESTS=${MEM_REQUESTS:-1000000}
MEM_CONNS=${MEM_CONNS:-32}
MEM_STREAMS=${MEM_STREAMS:-8}
MEM_CLIENTS=${MEM_CLIENTS:-64}
GO_BIN=${GO_BIN:-$(command -v go || echo /usr/lib/go-1.23/bin/go)}
GO_DEPS=${GO_DEPS:-200}
GO_PROCS=${GO_PROCS:-8}
GO_TIMEOUT=${GO_TIMEOUT:-300}
BUSY_MAX=${BUSY_MAX:-10}
BUSY_WINDOW=${BUSY_WINDOW:-1}
RETRIES=${RETRIES:-3}
LOAD_WARN=${LOAD_WARN:-1.5}
FOREIGN_WARN=${FOREIGN_WARN:-10}
CIPHER=${CIPHER:-TLS_AES_128_GCM_SHA256}
ORIGIN_PORT=${ORIGIN_PORT:-18611}
NGINX_PORT=${NGINX_PORT:-18612}
MODGATE_PORT=${MODGATE_PORT:-18613}
NGINX_MTLS_PORT=${NGINX_MTLS_PORT:-18614}
MODGATE_MTLS_PORT=${MODGATE_MTLS_PORT:-18615}
DELAY_PORT=${DELAY_PORT:-18616}
KEEP=${KEEP:-0}
MODULE=example.com/bench

for m in $MODES; do case $m in on | off) ;; *) echo "MODES: on and/or off" >&2; exit 2 ;; esac; done
[ -n "${MODES// /}" ] || { echo "MODES: on and/or off" >&2; exit 2; }
for s in $SECTIONS; do
  case $s in small | mtls | zips | h1 | fanin | memory | gomod) ;;
    *) echo "SECTIONS: some of small mtls zips h1 fanin memory gomod" >&2; exit 2 ;; esac
done
int_in() { # name value min max
  [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge "$3" ] && [ "$2" -le "$4" ] || { echo "$1: $3..$4" >&2; exit 2; }
}
int_in ROUNDS "$ROUNDS" 1 20
int_in RETRIES "$RETRIES" 0 10
int_in DURATION "$DURATION" 1 3600
int_in WARMUP "$WARMUP" 1 3600
int_in BIG_MIB "$BIG_MIB" 0 500
int_in BIG_CONNS "$BIG_CONNS" 1 256
int_in FANIN_CONNS "$FANIN_CONNS" 1 1000
int_in FANIN_STREAMS "$FANIN_STREAMS" 1 100
int_in FANIN_N "$FANIN_N" 1 1000000
int_in FANIN_ORIGIN_MS "$FANIN_ORIGIN_MS" 1 10000
int_in MEM_REQUESTS "$MEM_REQUESTS" 1 100000000
int_in MEM_CLIENTS "$MEM_CLIENTS" 1 1000
int_in GO_DEPS "$GO_DEPS" 1 1000
int_in GO_PROCS "$GO_PROCS" 1 256
int_in GO_TIMEOUT "$GO_TIMEOUT" 10 3600
# shellcheck disable=SC2086
set -- $MODES
EXTRA_MODE=$1
set --

# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"   # log/warn/die, need_tools, build_modgate, pinning, PIDS and cleanup, /proc

enabled() { # section -> true when it is in SECTIONS and its switch is not 0
  case " $SECTIONS " in *" $1 "*) ;; *) return 1 ;; esac
  case $1 in
    mtls) [ "$MTLS" != 0 ] ;;
    zips) [ "$ZIPS" != 0 ] ;;
    h1) [ "$H1" != 0 ] ;;
    fanin) [ "$FANIN" != 0 ] ;;
    memory) [ "$MEMORY" != 0 ] ;;
    gomod) [ "$GOMOD" != 0 ] ;;
    *) return 0 ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Prerequisites (Debian: nginx and h2load are installed if missing), build, pinning, work dir.
need_tools "${COMMON_TOOLS[@]}"
build_modgate
enabled mtls && build_mgload
check_ports "$ORIGIN_PORT" "$NGINX_PORT" "$MODGATE_PORT" "$NGINX_MTLS_PORT" "$MODGATE_MTLS_PORT" "$DELAY_PORT"
compute_pinning "h2load, mgload, curl, go"
[ "$PINNED" = 1 ] || warn "$PINNING: the busy-core guard and the CPU figures are meaningless"
make_workdir modgate-bench

GO_NOTE=""
if enabled gomod && ! [ -x "$GO_BIN" ]; then
  GO_NOTE="skipped: no go toolchain at '$GO_BIN' (set GO_BIN; \`make go-toolchain\` installs Go 1.23)"
  warn "go mod download section $GO_NOTE"
fi
gomod_on() { enabled gomod && [ -z "$GO_NOTE" ]; }

COLD_N=$((ROUNDS > 10 ? ROUNDS : 10))
GOMAIN=$W/gomain
log "generating the module set and certificates in $W"
gen_args=("$W/origin" "$MODULE" "$BIG_MIB" --cold "$COLD_N")
gomod_on && gen_args+=(--deps "$GO_DEPS" --main "$GOMAIN")
python3 "$ROOT/benches/gen_modules.py" "${gen_args[@]}"
"$MODGATE" certs --out "$W/certs" >/dev/null
CERT=$W/certs/server.pem KEY=$W/certs/server.key CA=$W/certs/ca.pem
CCERT=$W/certs/client.pem CKEY=$W/certs/client.key   # what mgload presents
for f in "$CERT" "$KEY" "$CA" "$CCERT" "$CKEY"; do [ -s "$f" ] || die "modgate certs wrote no $f"; done

nginx_common
# The origin logs every request, so a run can show that it was all cache hits.
# The cold fan-in's zips (v1.4.*) come from an origin that takes FANIN_ORIGIN_MS to answer: nginx
# passes them to a small Python server that waits that long first (nginx has no delay of its
# own, and its limit_rate lets a first second's worth through at once); nginx's access log still
# counts every request. Every other object is answered at once.
python3 - "$W/origin" "$DELAY_PORT" "$FANIN_ORIGIN_MS" <<'PY' &
import functools, http.server, sys, time
root, port, ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
class Slow(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        time.sleep(ms / 1000.0)
        super().do_GET()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Slow, directory=root)).serve_forever()
PY
DELAY_PID=$!
PIDS+=("$DELAY_PID")
write_origin_conf "log_format tiny '\$request'; access_log $W/origin-access.log tiny;" "" \
  "location ~ /@v/v1\\.4\\.[0-9]+\\.zip\$ { proxy_pass http://127.0.0.1:$DELAY_PORT; }"
"$NGINX" -t -q -p "$W" -e "$W/origin-startup.log" -c "$W/origin.conf"
taskset -c "$LOADER_CPUS" "$NGINX" -p "$W" -e "$W/origin-startup.log" -c "$W/origin.conf" &
ORIGIN_PID=$!
PIDS+=("$ORIGIN_PID")
wait_up "http://127.0.0.1:$DELAY_PORT/$MODULE/@v/list" "$DELAY_PID" || die "the delaying origin did not start"
ORIGIN="http://127.0.0.1:$ORIGIN_PORT"
wait_up "$ORIGIN/$MODULE/@v/list" "$ORIGIN_PID" || die "origin did not start ($W/origin-error.log)"
origin_count() { wc -l <"$W/origin-access.log"; }
origin_hits() { grep -cF "GET $1 " "$W/origin-access.log" || true; } # path -> requests for it

# ---------------------------------------------------------------------------------------------
# Configurations for one logging mode.
MAX_OBJECT_MIB=$((BIG_MIB + 100 > 600 ? BIG_MIB + 100 : 600))
write_configs() { # mode
  local mode=$1 d="$W/$1"
  mkdir -p "$d/nginx-cache" "$d/modgate-cache"
  local access="access_log $d/nginx-access.log;" audit="$d/modgate-audit.log" level=info
  if [ "$mode" = off ]; then access="access_log off;" audit=off level=warn; fi
  # Both nginx servers (client certificate optional / required) proxy and cache alike.
  local locations
  locations=$(cat <<EOF
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
EOF
)
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
$locations
  }
  server {   # client certificate required (a missing one: 400 after the handshake)
    listen 127.0.0.1:$NGINX_MTLS_PORT ssl http2;
    ssl_verify_client on;
$locations
  }
}
EOF
  # modgate: the same two listeners (a missing certificate: 403 after the handshake).
  local listeners
  listeners="$(tls_listener_yaml "$CERT" "$KEY" "$CA")
  - name: mtls
    address: \"127.0.0.1:$MODGATE_MTLS_PORT\"
$(tls_listener_yaml "$CERT" "$KEY" "$CA" required)"
  write_modgate_conf "$d/modgate.yaml" "$d" "$MODGATE_PORT" "$audit" "$level" "$listeners" \
    "  max_object_size: ${MAX_OBJECT_MIB}MiB   # the default (600MiB) unless BIG_MIB needs more"
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
  forget_pid "$MODGATE_PID"
  stop_pid "$NGINX_PID"
  forget_pid "$NGINX_PID"
}

# ---------------------------------------------------------------------------------------------
# Measurement helpers.
core_ticks() { # -> "busy idle" summed over the server CPUs (/proc/stat: user nice system irq softirq steal / idle iowait)
  local a=0 b=0 x y c
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
# Prints "load1 busy%"; fails when the server core stayed busier than BUSY_MAX % (after RETRIES
# waits).
busy_guard() { # name
  local name=$1 try busy load1 la
  for try in $(seq 0 "$RETRIES"); do
    la=$(cut -d' ' -f1-3 /proc/loadavg)
    load1=${la%% *}
    busy=$(core_busy_pct)
    [ "$busy" -le "$BUSY_MAX" ] && break
    warn "server core ${SERVER_CPUS} was ${busy}% busy before '$name' (load average $la); waiting ($((try + 1))/$((RETRIES + 1)))"
    [ "$try" -lt "$RETRIES" ] && sleep 5
  done
  echo "$name load=[$la] server-core-busy-before=${busy}%" >>"$W/runs.log"
  echo "$load1 $busy"
  if [ "$busy" -gt "$BUSY_MAX" ]; then
    warn "REFUSED '$name': the server core was ${busy}% busy before it (> BUSY_MAX=$BUSY_MAX)"
    return 1
  fi
  awk -v l="$load1" -v m="$LOAD_WARN" 'BEGIN { exit !(l > m) }' &&
    warn "1-minute load average $load1 > LOAD_WARN=$LOAD_WARN before '$name' (partly this script's own previous runs; the server core itself was ${busy}% busy)"
  return 0
}
truncate_logs() { # both servers append (O_APPEND), so truncating between runs is safe
  local f
  for f in "$W"/*/nginx-access.log "$W"/*/modgate-audit.log "$W"/*/modgate.stderr; do
    [ -f "$f" ] && : >"$f"
  done
  return 0
}
log_lines() { # files... -> lines in those that exist
  local n=0 f
  for f in "$@"; do [ -f "$f" ] && n=$((n + $(wc -l <"$f"))); done
  echo "$n"
}
check_h2load() { # output url protocol(h2|h1) file: TLS 1.3, the cipher, the application protocol
  local alpn=h2
  [ "$3" = h1 ] && alpn=http/1.1
  grep -q '^TLS Protocol: TLSv1.3' <<<"$1" || die "$2: not TLS 1.3 ($4)"
  grep -q "^Application protocol: ${alpn}\$" <<<"$1" || die "$2: not $alpn ($4)"
  grep -q "^Cipher: ${CIPHER}\$" <<<"$1" || die "$2: cipher is not $CIPHER ($4)"
}
h2load_errors() { # output -> failed + errored + timed out + non-2xx
  # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout" and
  # "status codes: N 2xx, N 3xx, N 4xx, N 5xx"
  awk '/^requests:/ { e += $10 + $12 + $14 } /^status codes:/ { e += $5 + $7 + $9 }
    END { print e + 0 }' <<<"$1"
}
h2load_ms() { # output -> "finished in" in ms
  awk '/^finished in/ { v = $3; sub(/,$/, "", v); n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "s") n *= 1000; else if (u == "us") n /= 1000
    printf "%.1f\n", n }' <<<"$1"
}
h2load_mibps() { # output -> the B/s column of "finished in" in MiB/s (h2load's units are binary)
  awk '/^finished in/ { v = $6; sub(/B\/s$/, "", v); n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "") n /= 1048576; else if (u == "K") n /= 1024; else if (u == "G") n *= 1024
    printf "%.1f\n", n }' <<<"$1"
}

# One measured duration run. Prints "rps p99_ms cpu_pct cpu_us_per_req errors origin_requests
# load1 busy_before foreign_pct log_lines_per_request mib_per_s loader_us_per_req", or
# "REFUSED load1 busy" / "TIMEOUT load1 busy" (also when the loader failed). The loader is
# h2load, or mgload (which prints the same lines, p99 included, and its own CPU time) with a
# client certificate when cert is 1.
run_one() { # name server-master url conns streams proto(h2|h1) timeout-slack loader(h2load|mgload) cert(0|1) log-files...
  local name=$1 master=$2 url=$3 conns=$4 streams=$5 proto=$6 slack=$7 loader=$8 cert=$9 g load1 busy out rc
  local lf="$W/$loader-$1.log" cmd=(h2load -t1 -c"$4" -m"$5" --tls13-ciphers="$CIPHER")
  shift 9
  local logs=("$@")
  if [ "$loader" = mgload ]; then
    cmd=("$MGLOAD" -t1 -c"$conns" -m"$streams" --tls13-ciphers="$CIPHER" --cacert "$CA")
    [ "$cert" = 1 ] && cmd+=(--cert "$CCERT" --key "$CKEY")
  fi
  [ "$proto" = h1 ] && cmd+=(--h1)
  truncate_logs
  if ! g=$(busy_guard "$name"); then echo "REFUSED $g"; return; fi
  read -r load1 busy <<<"$g"
  # h2load 1.52 in duration mode sometimes never exits on 1 MiB responses (seen once in a
  # warm-up against nginx: 7 minutes at 80 % CPU): every loader run is bounded by `timeout`.
  timeout -k 5 $((WARMUP + slack)) taskset -c "$LOADER_CPUS" "${cmd[@]}" -D "$WARMUP" "$url" >/dev/null ||
    warn "'$name': the warm-up $loader failed or was stopped after $((WARMUP + slack))s"
  [ "$loader" = h2load ] && cmd+=(--log-file="$lf")
  local t0 t1 c0 c1 o0 o1 l0 l1
  sleep 0.1
  l0=$(log_lines "${logs[@]}")
  o0=$(origin_count)
  c0=$(core_ticks)
  t0=$(cpu_ticks "$master")
  rc=0
  out=$(timeout -k 5 $((DURATION + slack)) taskset -c "$LOADER_CPUS" "${cmd[@]}" -D "$DURATION" "$url") || rc=$?
  if [ "$rc" != 0 ]; then
    printf '%s\n' "$out" >"$W/$loader-$name.txt"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      warn "TIMEOUT '$name': $loader did not finish within $((DURATION + slack))s; run left out"
    else
      warn "FAILED '$name': $loader exited with $rc ($W/$loader-$name.txt: $(grep -A3 '^errors:' <<<"$out" | tail -3 | tr '\n' ' ')); run left out"
    fi
    echo "TIMEOUT $load1 $busy"
    return
  fi
  t1=$(cpu_ticks "$master")
  c1=$(core_ticks)
  o1=$(origin_count)
  sleep 0.2   # modgate's audit writer flushes every 10 ms
  l1=$(log_lines "${logs[@]}")
  printf '%s\n' "$out" >"$W/$loader-$name.txt"
  check_h2load "$out" "$url" "$proto" "$W/$loader-$name.txt"
  local rps n errs p99 cpu per foreign mibps lper=-
  rps=$(awk '/^finished in/ { print $4 }' <<<"$out")
  mibps=$(h2load_mibps "$out")
  n=$(awk '/^requests:/ { print $8 }' <<<"$out")
  errs=$(h2load_errors "$out")
  if [ "$loader" = mgload ]; then
    # "latency ms: min A mean B p50 C p90 D p99 E max F (N answers)";
    # "client CPU: 1.690s (user ..., system ...), 5.53 us/req, ..."
    p99=$(awk '/^latency ms:/ { for (i = 3; i < NF; i++) if ($i == "p99") print $(i + 1) }' <<<"$out")
    lper=$(sed -n 's/^client CPU: .*, \([0-9.]*\) us\/req,.*/\1/p' <<<"$out")
    if [ "$cert" = 1 ]; then
      grep -qxF "Client certificate: $CCERT" <<<"$out" || die "$url: mgload presented no client certificate ($W/$loader-$name.txt)"
    fi
  else
    p99=$(cut -f3 "$lf" | sort -n | awk '{ v[NR] = $1 } END {
      j = int(NR * 0.99); if (j < 1) j = 1; printf "%.3f", v[j] / 1000 }')
    rm -f "$lf"
  fi
  cpu=$(awk -v d=$((t1 - t0)) -v hz="$TICK" -v s="$DURATION" 'BEGIN { printf "%.0f", 100 * d / hz / s }')
  per=$(awk -v d=$((t1 - t0)) -v hz="$TICK" -v n="$n" 'BEGIN { printf "%.1f", (n > 0 ? 1e6 * d / hz / n : 0) }')
  foreign=$(awk -v a="$c0" -v b="$c1" -v s=$((t1 - t0)) -v w="$DURATION" -v hz="$TICK" -v k="$THREADS" 'BEGIN {
    split(a, x, " "); split(b, y, " "); f = (y[1] - x[1]) - s; if (f < 0) f = 0
    printf "%.0f", 100 * f / (hz * w * k) }')
  [ "$foreign" -gt "$FOREIGN_WARN" ] &&
    warn "'$name': ${foreign}% of the server core's time went to something other than the server (interrupts, softirq, another process)"
  echo "$rps $p99 $cpu $per $errs $((o1 - o0)) $load1 $busy $foreign $(awk -v l=$((l1 - l0)) -v n="$n" 'BEGIN { printf "%.2f", (n > 0 ? l / n : 0) }') $mibps ${lper:--}"
}

# One fan-in run: FANIN_N requests for one object, all in flight at once. Prints "ms errors
# origin_requests load1 busy" or "REFUSED load1 busy" / "TIMEOUT load1 busy".
FANIN_TIMEOUT=60
fanin_one() { # name url path
  local name=$1 url=$2 path=$3 g out o0 o1
  if ! g=$(busy_guard "$name"); then echo "REFUSED $g"; return; fi
  o0=$(origin_hits "$path")
  if ! out=$(timeout -k 5 "$FANIN_TIMEOUT" taskset -c "$LOADER_CPUS" h2load -t1 -c"$FANIN_CONNS" \
    -m"$FANIN_STREAMS" -n"$FANIN_N" --tls13-ciphers="$CIPHER" "$url"); then
    warn "TIMEOUT '$name': h2load did not finish within ${FANIN_TIMEOUT}s; run left out"
    echo "TIMEOUT $g"
    return
  fi
  sleep 0.2
  o1=$(origin_hits "$path")
  printf '%s\n' "$out" >"$W/h2load-$name.txt"
  check_h2load "$out" "$url" h2 "$W/h2load-$name.txt"
  echo "$(h2load_ms "$out") $(h2load_errors "$out") $((o1 - o0)) $g"
}

# VmRSS of a server (summed over its processes) sampled every 50 ms in the background, on the
# loader CPU; the largest sample is kept in a file.
SAMPLER_PID=""
sampler_start() { # master file max-seconds
  local master=$1 file=$2 n=$(($3 * 20 + 100))
  echo 0 >"$file"
  rm -f "$file.stop"
  (
    taskset -cp "$LOADER_CPUS" "$BASHPID" >/dev/null 2>&1 || true
    pids=$(server_pids "$master")
    max=0
    for _ in $(seq "$n"); do
      [ -f "$file.stop" ] && break
      s=$(for p in $pids; do cat "/proc/$p/status" 2>/dev/null || true; done |
        awk '$1 == "VmRSS:" { s += $2 } END { print s + 0 }')
      if [ "$s" -gt "$max" ]; then max=$s; echo "$max" >"$file"; fi
      sleep 0.05
    done
  ) &
  SAMPLER_PID=$!
  PIDS+=("$SAMPLER_PID")
}
sampler_stop() { # file -> the peak in kB
  touch "$1.stop"
  stop_pid "$SAMPLER_PID"
  forget_pid "$SAMPLER_PID"
  cat "$1"
}

# One `go mod download all` in GOMAIN from an empty module cache. Prints "seconds modules zips
# extracted origin_requests load1 busy" or "REFUSED load1 busy" / "FAILED load1 busy".
gomod_one() { # name proxy-url [guard: 1 (default) or 0]
  local name=$1 url=$2 guarded=${3:-1} g="- -" tmp t0 t1 o0 o1 rc=0 n z x dl
  if [ "$guarded" = 1 ] && ! g=$(busy_guard "$name"); then echo "REFUSED $g"; return; fi
  tmp=$(mktemp -d "$W/go.XXXXXX")
  o0=$(origin_count)
  t0=$EPOCHREALTIME
  (cd "$GOMAIN" && env GOPROXY="$url" GOFLAGS="-mod=mod -modcacherw" GOSUMDB=off GONOSUMDB='*' \
    GOPRIVATE= GONOPROXY= GOTOOLCHAIN=local GOENV=off GOPATH="$tmp/gopath" \
    GOMODCACHE="$tmp/gopath/pkg/mod" GOCACHE="$tmp/gocache" XDG_CONFIG_HOME="$tmp/config" \
    GOMAXPROCS="$GO_PROCS" SSL_CERT_FILE="$CA" \
    timeout -k 5 "$GO_TIMEOUT" taskset -c "$LOADER_CPUS" "$GO_BIN" mod download all) \
    >"$W/go-$name.log" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  o1=$(origin_count)
  dl="$tmp/gopath/pkg/mod/cache/download/example.com/dep"
  n=$(find "$dl" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)
  z=$(find "$dl" -mindepth 3 -maxdepth 3 -name v1.0.0.zip 2>/dev/null | wc -l)
  x=$(find "$tmp/gopath/pkg/mod/example.com/dep" -mindepth 1 -maxdepth 1 -type d -name '*@v1.0.0' 2>/dev/null | wc -l)
  chmod -R u+w "$tmp" 2>/dev/null || true
  rm -rf "$tmp"
  if [ "$rc" != 0 ]; then
    warn "'$name': go mod download failed (exit $rc$([ "$rc" = 124 ] && echo ": timed out after ${GO_TIMEOUT}s")): $(tail -3 "$W/go-$name.log")"
    echo "FAILED $g"
    return
  fi
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') $n $z $x $((o1 - o0)) $g"
}

# ---------------------------------------------------------------------------------------------
# Cases: "group|label|path|conns|streams|proto|timeout slack (s)|loader|client certificate (0|1)".
V=/$MODULE/@v
SMALL=("small|info|$V/v1.0.0.info|$CONNS|$STREAMS|h2|30|h2load|0"
  "small|mod|$V/v1.2.0.mod|$CONNS|$STREAMS|h2|30|h2load|0"
  "small|list|$V/list|$CONNS|$STREAMS|h2|30|h2load|0")
MTLS_CASES=("mtls|info|$V/v1.0.0.info|$CONNS|$STREAMS|h2|30|mgload|0"
  "mtls|info|$V/v1.0.0.info|$CONNS|$STREAMS|h2|30|mgload|1"
  "mtls|info|$V/v1.0.0.info|$CONNS|1|h1|30|mgload|0"
  "mtls|info|$V/v1.0.0.info|$CONNS|1|h1|30|mgload|1")
zip_cases() { # proto streams
  echo "zip|zip 64 KiB|$V/v1.1.0.zip|$CONNS|$2|$1|30|h2load|0"
  echo "zip|zip 1 MiB|$V/v1.0.0.zip|$CONNS|$2|$1|30|h2load|0"
  [ "$BIG_MIB" -gt 0 ] && echo "zip|zip $BIG_MIB MiB|$V/v0.9.0.zip|$BIG_CONNS|1|$1|120|h2load|0"
  return 0
}
case_tag() { # proto label loader cert -> the case's part of run names ("h2-info", "h1-info-mgload-cert")
  local t="$1-${2// /-}"
  [ "$3" = mgload ] && t+="-mgload"
  [ "$4" = 1 ] && t+="-cert"
  echo "$t"
}
mapfile -t ZIP_H2 < <(zip_cases h2 "$STREAMS")
mapfile -t ZIP_H1 < <(zip_cases h1 1)
FANIN_WARM=$V/v1.3.0.zip
BIG=$V/v0.9.0.zip
INFO=$V/v1.0.0.info

warm() { # base paths... -> both caches hold every path; a third request does not reach the origin
  local base=$1 path want got o0 c=(curl -fsS --http2 --max-time 120 --cacert "$CA")
  # The listeners requiring a client certificate: curl presents mgload's.
  [ "$base" = "$MG_MTLS" ] || [ "$base" = "$NX_MTLS" ] && c+=(--cert "$CCERT" --key "$CKEY")
  shift
  for path in "$@"; do
    want=$(curl -fsS --max-time 120 "$ORIGIN$path" | sha256sum)
    "${c[@]}" -o /dev/null "$base$path"
    sleep 0.3
    "${c[@]}" -o /dev/null "$base$path"
    o0=$(origin_count)
    got=$("${c[@]}" "$base$path" | sha256sum)
    [ "$got" = "$want" ] || die "$base$path: body differs from the origin's"
    [ "$(origin_count)" = "$o0" ] || die "$base$path: a warm request still reached the origin"
  done
}
check_requires_cert() { # base status -> dies unless a request without a certificate gets that status
  local code
  code=$(curl -sS --http2 --max-time 30 --cacert "$CA" -o /dev/null -w '%{http_code}' "$1$INFO" 2>/dev/null || true)
  [ "$code" = "$2" ] ||
    die "$1$INFO without a client certificate: HTTP ${code:-(no answer)}, not $2: the listener does not require one"
}
same_as_origin() { # base path -> dies unless the gateway serves the origin's bytes
  local want got
  want=$(curl -fsS --max-time 120 "$ORIGIN$2" | sha256sum)
  got=$(curl -fsS --http2 --max-time 120 --cacert "$CA" "$1$2" | sha256sum)
  [ "$got" = "$want" ] || die "$1$2: body differs from the origin's"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(cd "$ROOT" && git status --porcelain -- crates 2>/dev/null | head -1)" ] && REV="$REV+dirty"
declare -A RES FRES GRES MRES
REFUSED=0
TABLE=() CTABLE=() ZTABLE=() FTABLE=() FCHECK=() MTABLE=() GTABLE=()
MG="https://127.0.0.1:$MODGATE_PORT" NX="https://127.0.0.1:$NGINX_PORT"
MG_MTLS="https://127.0.0.1:$MODGATE_MTLS_PORT" NX_MTLS="https://127.0.0.1:$NGINX_MTLS_PORT"
server_of() { # modgate|nginx mode -> sets master, base, mbase (certificate required), logs
  if [ "$1" = modgate ]; then
    master=$MODGATE_PID base=$MG mbase=$MG_MTLS logs=("$W/$2/modgate-audit.log" "$W/$2/modgate.stderr")
  else
    master=$NGINX_PID base=$NX mbase=$NX_MTLS logs=("$W/$2/nginx-access.log")
  fi
}
round_order() { if [ $(($1 % 2)) = 0 ]; then echo "nginx modgate"; else echo "modgate nginx"; fi; }
fmt0() { [ "$1" = - ] && echo - || printf '%.0f' "$1"; }

# ---------------------------------------------------------------------------------------------
# Sections after the duration runs, in the first logging mode (servers up, caches warm).
run_fanin() { # mode
  local r s order ms=() path o a
  log "fan-in: $FANIN_N requests at once (h2load -c$FANIN_CONNS -m$FANIN_STREAMS), warm and cold"
  for r in $(seq "$ROUNDS"); do
    order=$(round_order "$r")
    path=$V/v1.4.$((r - 1)).zip
    for s in $order; do
      server_of "$s" "$1"
      FRES[warm-$s-r$r]=$(fanin_one "fanin-warm-$s-r$r" "$base$FANIN_WARM" "$FANIN_WARM")
      log "  warm $s round $r: ${FRES[warm-$s-r$r]}"
    done
    for s in $order; do
      server_of "$s" "$1"
      FRES[cold-$s-r$r]=$(fanin_one "fanin-cold-$s-r$r" "$base$path" "$path")
      log "  cold $s round $r ($path): ${FRES[cold-$s-r$r]}"
      read -r a _ o _ <<<"${FRES[cold-$s-r$r]}"
      # (a run left out prints REFUSED or TIMEOUT and no origin count)
      [[ $a =~ ^[0-9.]+$ ]] && [[ $o =~ ^[0-9]+$ ]] && [ "$o" != 1 ] &&
        warn "cold fan-in, $s, round $r: the origin received $o requests for $path (1 when the misses are coalesced)"
    done
    # The origin's own latency for that object: one request, a fresh connection.
    ms+=("$(taskset -c "$LOADER_CPUS" curl -fsS --max-time 30 -o /dev/null -w '%{time_total}' "$ORIGIN$path" |
      awk '{ printf "%.2f", $1 * 1000 }')")
    same_as_origin "$MG" "$path"
    same_as_origin "$NX" "$path"
  done
  local kind a b cc d e origin_ms
  local -A col=()
  origin_ms=$(median "${ms[@]}")
  for kind in warm cold; do
    for s in modgate nginx; do
      local t=() errs=0 orig=() ref=0
      for r in $(seq "$ROUNDS"); do
        read -r a b cc d e <<<"${FRES[$kind-$s-r$r]}"
        if [ "$a" = REFUSED ] || [ "$a" = TIMEOUT ]; then ref=$((ref + 1)); REFUSED=$((REFUSED + 1)); continue; fi
        t+=("$a") errs=$((errs + b)) orig+=("$cc")
      done
      col[$s.ms]=$(median "${t[@]}") col[$s.err]=$errs col[$s.ref]=$ref
      col[$s.orig]=$(IFS=,; echo "${orig[*]:-}")
      col[$kind.$s]=${col[$s.ms]}
    done
    local note=""
    [ "${col[modgate.err]}${col[nginx.err]}" != 00 ] && note+=" errors ${col[modgate.err]} / ${col[nginx.err]};"
    [ "${col[modgate.ref]}${col[nginx.ref]}" != 00 ] && note+=" left out ${col[modgate.ref]} / ${col[nginx.ref]};"
    FTABLE+=("| $kind | ${col[modgate.ms]} | ${col[nginx.ms]} | **$(ratio "${col[modgate.ms]}" "${col[nginx.ms]}")** | ${col[modgate.orig]:--} / ${col[nginx.orig]:--} |${note}")
  done
  FCHECK+=("Origin latency for one 100 KiB zip (curl straight to the origin, time_total, median): **$origin_ms ms**.")
  for s in modgate nginx; do
    FCHECK+=("$(awk -v s="$s" -v c="${col[cold.$s]}" -v w="${col[warm.$s]}" -v o="$origin_ms" 'BEGIN {
      if (c == "-" || w == "-" || o == "-") { printf "%s: cold - (no figure)", s; exit }
      b = o + w + 50; printf "%s: cold %.1f ms %s origin %.1f + warm %.1f + 50 = %.1f ms: **%s**", s, c,
        (c <= b ? "<=" : ">"), o, w, b, (c <= b ? "yes" : "NO") }')")
  done
}

run_memory() { # mode
  local s out before after peak hwm errs t n
  log "memory: $MEM_REQUESTS cached .info requests, then $MEM_CLIENTS clients on the $BIG_MIB MiB zip"
  for s in modgate nginx; do
    server_of "$s" "$1"
    truncate_logs
    t=$((MEM_REQUESTS / 2000 + 60))
    before=$(sum_status_kib "$master" VmRSS)
    errs=-
    if out=$(timeout -k 5 "$t" taskset -c "$LOADER_CPUS" h2load -t1 -c"$MEM_CONNS" -m"$MEM_STREAMS" \
      -n"$MEM_REQUESTS" --tls13-ciphers="$CIPHER" "$base$INFO"); then
      printf '%s\n' "$out" >"$W/h2load-memory-small-$s.txt"
      check_h2load "$out" "$base$INFO" h2 "$W/h2load-memory-small-$s.txt"
      errs=$(h2load_errors "$out")
      n=$(awk '/^requests:/ { print $8 }' <<<"$out")
    else
      warn "memory, $s: h2load on $MEM_REQUESTS requests did not finish within ${t}s"
      n=-
    fi
    sleep 1
    after=$(sum_status_kib "$master" VmRSS)
    MRES[small-$s]="$before $after $errs $n"
    log "  $s small: RSS before $before kB, after $after kB, errors $errs"
    truncate_logs
    if [ "$BIG_MIB" -gt 0 ]; then
      t=$((BIG_MIB * MEM_CLIENTS / 20 + 120))
      before=$(sum_status_kib "$master" VmRSS)
      reset_hwm "$master"
      sampler_start "$master" "$W/rss-peak-$s" "$t"
      errs=-
      if out=$(timeout -k 5 "$t" taskset -c "$LOADER_CPUS" h2load -t1 -c"$MEM_CLIENTS" -m1 \
        -n"$MEM_CLIENTS" --tls13-ciphers="$CIPHER" "$base$BIG"); then
        printf '%s\n' "$out" >"$W/h2load-memory-big-$s.txt"
        check_h2load "$out" "$base$BIG" h2 "$W/h2load-memory-big-$s.txt"
        errs=$(h2load_errors "$out")
      else
        warn "memory, $s: $MEM_CLIENTS downloads of the $BIG_MIB MiB zip did not finish within ${t}s"
      fi
      peak=$(sampler_stop "$W/rss-peak-$s")
      hwm=$(max_status_kib "$master" VmHWM)
      sleep 1
      after=$(sum_status_kib "$master" VmRSS)
      MRES[big-$s]="$before $peak $after $hwm $errs"
      log "  $s big: RSS before $before kB, peak $peak kB, after $after kB, largest VmHWM $hwm kB, errors $errs"
      truncate_logs
    fi
  done
  local mb ma me nb na ne
  read -r mb ma me _ <<<"${MRES[small-modgate]}"
  read -r nb na ne _ <<<"${MRES[small-nginx]}"
  MTABLE+=("| $MEM_REQUESTS cached .info requests (h2load -c$MEM_CONNS -m$MEM_STREAMS) | before | $(mib "$mb") | $(mib "$nb") | $(ratio "$mb" "$nb") | |")
  MTABLE+=("| | after | $(mib "$ma") | $(mib "$na") | $(ratio "$ma" "$na") | errors $me / $ne |")
  MTABLE+=("| | **growth** | **$(mib $((ma - mb)))** | **$(mib $((na - nb)))** | | |")
  if [ "$BIG_MIB" -gt 0 ]; then
    local mp mh np nh
    read -r mb mp ma mh me <<<"${MRES[big-modgate]}"
    read -r nb np na nh ne <<<"${MRES[big-nginx]}"
    MTABLE+=("| $MEM_CLIENTS clients at once on the cached $BIG_MIB MiB zip (h2load -c$MEM_CLIENTS -m1 -n$MEM_CLIENTS) | before | $(mib "$mb") | $(mib "$nb") | $(ratio "$mb" "$nb") | |")
    MTABLE+=("| | **peak** (VmRSS every 50 ms) | **$(mib "$mp")** | **$(mib "$np")** | **$(ratio "$mp" "$np")** | errors $me / $ne |")
    MTABLE+=("| | peak VmHWM, largest process | $(mib "$mh") | $(mib "$nh") | $(ratio "$mh" "$nh") | |")
    MTABLE+=("| | after | $(mib "$ma") | $(mib "$na") | $(ratio "$ma" "$na") | |")
  fi
}

run_gomod() { # mode
  local r s order targets=(origin modgate nginx) url res
  declare -A URL=([origin]=$ORIGIN [modgate]=$MG [nginx]=$NX)
  log "go mod download all ($GO_DEPS modules): origin run (go.sum), then one run through each gateway to warm it"
  rm -f "$GOMAIN/go.sum"
  for s in origin modgate nginx; do
    res=$(gomod_one "gomod-warm-$s" "${URL[$s]}" 0)
    log "  warm-up $s: $res"
    read -r a b _ <<<"$res"
    [ "$a" != FAILED ] && [ "$b" = "$GO_DEPS" ] || die "go mod download through $s did not fetch $GO_DEPS modules ($res; $W/go-gomod-warm-$s.log)"
  done
  [ -s "$GOMAIN/go.sum" ] || die "go mod download wrote no go.sum"
  for r in $(seq "$ROUNDS"); do
    order=("${targets[@]:$(((r - 1) % 3))}" "${targets[@]:0:$(((r - 1) % 3))}")
    for s in "${order[@]}"; do
      GRES[$s-r$r]=$(gomod_one "gomod-$s-r$r" "${URL[$s]}")
      log "  round $r $s: ${GRES[$s-r$r]}"
    done
  done
  local a b cc d e
  local -A col=()
  for s in origin modgate nginx; do
    local t=() mods=() orig=() bad=0 ref=0
    for r in $(seq "$ROUNDS"); do
      read -r a b cc d e _ <<<"${GRES[$s-r$r]}"
      if [ "$a" = REFUSED ] || [ "$a" = FAILED ]; then ref=$((ref + 1)); REFUSED=$((REFUSED + 1)); continue; fi
      t+=("$a") orig+=("$e")
      [ "$b" = "$GO_DEPS" ] && [ "$cc" = "$GO_DEPS" ] && [ "$d" = "$GO_DEPS" ] || bad=$((bad + 1))
      mods+=("$b/$cc/$d")
    done
    col[$s]=$(median "${t[@]}")
    [ "${col[$s]}" = - ] || col[$s]=$(printf '%.3f' "${col[$s]}")
    local note=""
    [ "$bad" != 0 ] && note+=" $bad run(s) without all $GO_DEPS modules;"
    [ "$ref" != 0 ] && note+=" $ref run(s) refused or failed;"
    GTABLE+=("| $s | ${URL[$s]} | **${col[$s]}** | $(IFS=' '; echo "${t[*]:-}") | $(IFS=' '; echo "${mods[*]:-}") | $(IFS=,; echo "${orig[*]:-}") | $(ratio "${col[$s]}" "${col[origin]}") |${note}")
  done
  GTABLE+=("" "modgate / nginx (median wall time): **$(ratio "${col[modgate]}" "${col[nginx]}")**.")
}

# ---------------------------------------------------------------------------------------------
for mode in $MODES; do
  cases=()
  enabled small && cases+=("${SMALL[@]}")
  enabled mtls && cases+=("${MTLS_CASES[@]}")
  extras=()
  if [ "$mode" = "$EXTRA_MODE" ]; then
    enabled zips && cases+=("${ZIP_H2[@]}")
    enabled h1 && cases+=("${ZIP_H1[@]}")
    enabled fanin && extras+=(fanin)
    enabled memory && extras+=(memory)
    gomod_on && extras+=(gomod)
  fi
  [ ${#cases[@]} -eq 0 ] && [ ${#extras[@]} -eq 0 ] && continue
  write_configs "$mode"
  log "logging $mode: starting modgate and nginx"
  start_servers "$mode"
  paths=()
  for c in "${cases[@]}"; do IFS='|' read -r _ _ p _ <<<"$c"; paths+=("$p"); done
  [[ " ${extras[*]} " == *" fanin "* ]] && paths+=("$FANIN_WARM")
  [[ " ${extras[*]} " == *" memory "* ]] && paths+=("$INFO") && [ "$BIG_MIB" -gt 0 ] && paths+=("$BIG")
  mapfile -t paths < <(printf '%s\n' "${paths[@]}" | awk 'NF && !seen[$0]++')
  if [ ${#paths[@]} -gt 0 ]; then
    log "warming both caches (${#paths[@]} objects)"
    warm "$MG" "${paths[@]}"
    warm "$NX" "${paths[@]}"
  fi
  if enabled mtls; then
    # The second listeners answer a request without a certificate with an error (modgate 403,
    # nginx 400) and one with mgload's certificate from the cache.
    check_requires_cert "$MG_MTLS" 403
    check_requires_cert "$NX_MTLS" 400
    warm "$MG_MTLS" "$INFO"
    warm "$NX_MTLS" "$INFO"
  fi
  for r in $(seq "$ROUNDS"); do
    order=$(round_order "$r")
    for c in "${cases[@]}"; do
      IFS='|' read -r group label path conns streams proto slack loader cert <<<"$c"
      for s in $order; do
        server_of "$s" "$mode"
        name="$mode-$(case_tag "$proto" "$label" "$loader" "$cert")-$s-r$r"
        url=$base$path
        [ "$cert" = 1 ] && url=$mbase$path
        log "logs $mode, round $r/$ROUNDS, $label over $proto (-c$conns -m$streams, $loader$([ "$cert" = 1 ] && echo ", client certificate")): $s"
        RES[$name]=$(run_one "$name" "$master" "$url" "$conns" "$streams" "$proto" "$slack" "$loader" "$cert" "${logs[@]}")
        log "  ${RES[$name]}"
      done
    done
  done
  for x in "${extras[@]}"; do "run_$x" "$mode"; done
  stop_servers
  for c in "${cases[@]}"; do
    IFS='|' read -r group label path conns streams proto slack loader cert <<<"$c"
    declare -A col=()
    for s in modgate nginx; do
      rps=() p99=() cpu=() per=() errs=0 orig=0 ref=0 loads=() lpr=() mbs=() lper=()
      for r in $(seq "$ROUNDS"); do
        read -r a b cc d e f g h i j k l <<<"${RES[$mode-$(case_tag "$proto" "$label" "$loader" "$cert")-$s-r$r]}"
        if [ "$a" = REFUSED ] || [ "$a" = TIMEOUT ]; then ref=$((ref + 1)); REFUSED=$((REFUSED + 1)); continue; fi
        rps+=("$a") p99+=("$b") cpu+=("$cc") per+=("$d") errs=$((errs + e)) orig=$((orig + f)) loads+=("$g") lpr+=("$j") mbs+=("$k")
        [ "$l" != - ] && lper+=("$l")
      done
      col[$s.rps]=$(median "${rps[@]}") col[$s.p99]=$(median "${p99[@]}")
      col[$s.cpu]=$(median "${cpu[@]}") col[$s.per]=$(median "${per[@]}")
      col[$s.err]=$errs col[$s.orig]=$orig col[$s.ref]=$ref col[$s.n]=${#rps[@]}
      col[$s.load]=$(IFS=/; echo "${loads[*]:-}")
      col[$s.lpr]=$(median "${lpr[@]}") col[$s.mbs]=$(median "${mbs[@]}")
      col[$s.lper]=$(median "${lper[@]}")
    done
    note=""
    [ "${col[modgate.err]}${col[nginx.err]}" != 00 ] && note+=" errors ${col[modgate.err]} / ${col[nginx.err]};"
    [ "${col[modgate.ref]}${col[nginx.ref]}" != 00 ] && note+=" left out (refused or timed out) ${col[modgate.ref]} / ${col[nginx.ref]};"
    if [ "$group" = mtls ]; then
      pname=HTTP/2 certname=none listener=optional
      [ "$proto" = h1 ] && pname=HTTP/1.1
      [ "$cert" = 1 ] && certname=presented listener=required
      CTABLE+=("| $mode | $pname | -c$conns -m$streams | $certname ($listener) | $(fmt0 "${col[modgate.rps]}") | $(fmt0 "${col[nginx.rps]}") | **$(ratio "${col[modgate.rps]}" "${col[nginx.rps]}")** | ${col[modgate.p99]} / ${col[nginx.p99]} | $(ratio "${col[modgate.p99]}" "${col[nginx.p99]}") | ${col[modgate.per]} / ${col[nginx.per]} | **$(ratio "${col[modgate.per]}" "${col[nginx.per]}")** | ${col[modgate.cpu]} / ${col[nginx.cpu]} | ${col[modgate.lper]} / ${col[nginx.lper]} | ${col[modgate.lpr]} / ${col[nginx.lpr]} | ${col[modgate.orig]} / ${col[nginx.orig]} | ${col[modgate.load]} / ${col[nginx.load]} |${note}")
    elif [ "$group" = small ]; then
      TABLE+=("| $mode | $label | $(fmt0 "${col[modgate.rps]}") | $(fmt0 "${col[nginx.rps]}") | **$(ratio "${col[modgate.rps]}" "${col[nginx.rps]}")** | ${col[modgate.p99]} / ${col[nginx.p99]} | $(ratio "${col[modgate.p99]}" "${col[nginx.p99]}") | ${col[modgate.per]} / ${col[nginx.per]} | **$(ratio "${col[modgate.per]}" "${col[nginx.per]}")** | ${col[modgate.cpu]} / ${col[nginx.cpu]} | ${col[modgate.lpr]} / ${col[nginx.lpr]} | ${col[modgate.orig]} / ${col[nginx.orig]} | ${col[modgate.load]} / ${col[nginx.load]} |${note}")
    else
      pname=HTTP/2
      [ "$proto" = h1 ] && pname=HTTP/1.1
      ZTABLE+=("| $pname | $label | -c$conns -m$streams | ${col[modgate.mbs]} | ${col[nginx.mbs]} | **$(ratio "${col[modgate.mbs]}" "${col[nginx.mbs]}")** | $(fmt0 "${col[modgate.rps]}") / $(fmt0 "${col[nginx.rps]}") | ${col[modgate.p99]} / ${col[nginx.p99]} | $(ratio "${col[modgate.p99]}" "${col[nginx.p99]}") | ${col[modgate.per]} / ${col[nginx.per]} | **$(ratio "${col[modgate.per]}" "${col[nginx.per]}")** | ${col[modgate.cpu]} / ${col[nginx.cpu]} | ${col[modgate.orig]} / ${col[nginx.orig]} | ${col[modgate.load]} / ${col[nginx.load]} |${note}")
    fi
    unset col
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
cat <<EOF

Machine: $NCPU CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r).
Load average at start $LOAD_START, at end $LOAD_END. modgate $REV,
$($NGINX -v 2>&1 | sed 's/^nginx version: //'), $(h2load --version | head -1)$(gomod_on && echo ", $("$GO_BIN" version | awk '{ print $3 }')")$(enabled mtls && echo ", mgload (benches/mgload, release)").
Pinning: $PINNING; THREADS=$THREADS (modgate server.threads = nginx worker_processes); modgate server.work_stealing: ${WORK_STEALING:-false}.
TLS 1.3 ($CIPHER), client certificates optional (none presented) except in the mtls section's
"presented" rows (listeners requiring one). Sections: $SECTIONS
(all but small and mtls in logging mode $EXTRA_MODE only).
h2load / mgload -t1: ${WARMUP}s warm-up, then ${DURATION}s measured; $ROUNDS rounds, servers alternating;
medians of the rounds. A timed run is refused when the server core was more than ${BUSY_MAX}%
busy in the ${BUSY_WINDOW}s before it; runs refused, timed out or failed: $REFUSED.

Ratios are modgate / nginx of the medians: req/s and MiB/s above 1 favour modgate; times,
CPU/req and memory below 1. CPU % = server CPU time / wall time; log lines/req = lines the
server added to its log files per request (modgate: audit + access line; 0 = logging off);
origin = requests the origin saw during the measured runs (all rounds); load1 = 1-minute load
average before each round's run.
EOF
if [ ${#TABLE[@]} -gt 0 ]; then
  cat <<EOF

### Cached small answers, HTTP/2 (h2load -c$CONNS -m$STREAMS)

| logs | case | modgate req/s | nginx req/s | req/s ratio | p99 ms modgate / nginx | p99 ratio | CPU µs/req modgate / nginx | CPU/req ratio | CPU % modgate / nginx | log lines/req modgate / nginx | origin reqs | load1 modgate / nginx |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${TABLE[@]}")
EOF
fi
if [ ${#CTABLE[@]} -gt 0 ]; then
  cat <<EOF

### Cached .info with and without a client certificate, HTTP/2 and HTTP/1.1 (mgload)

mgload -t1 on the cached .info; "presented": the listener requiring a client certificate
(modgate \`client_auth: required\`, nginx \`ssl_verify_client on\`) and mgload presenting one;
"none": the listener of the other sections (optional). HTTP/1.1: keep-alive, one request in
flight per connection. loader µs/req = mgload's own CPU time (getrusage) per answer;
loader µs/req × req/s / 10^6 is the share of its core mgload used (near 1: the loader, not
the server, was the limit, and the server's CPU % is below ~95).

| logs | protocol | mgload | client certificate (listener) | modgate req/s | nginx req/s | req/s ratio | p99 ms modgate / nginx | p99 ratio | CPU µs/req modgate / nginx | CPU/req ratio | CPU % modgate / nginx | loader µs/req modgate / nginx | log lines/req modgate / nginx | origin reqs | load1 modgate / nginx |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${CTABLE[@]}")
EOF
fi
if [ ${#ZTABLE[@]} -gt 0 ]; then
  cat <<EOF

### Cached zips (logs $EXTRA_MODE), HTTP/2 and HTTP/1.1 over TLS

MiB/s = h2load's throughput column (all bytes received; its "MB" are 2^20 bytes). The large zip
runs with fewer streams (-c$BIG_CONNS -m1); HTTP/1.1 always -m1 (one request per connection at a time).

| protocol | case | h2load | modgate MiB/s | nginx MiB/s | MiB/s ratio | req/s modgate / nginx | p99 ms modgate / nginx | p99 ratio | CPU µs/req modgate / nginx | CPU/req ratio | CPU % modgate / nginx | origin reqs | load1 modgate / nginx |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${ZTABLE[@]}")
EOF
fi
if [ ${#FTABLE[@]} -gt 0 ]; then
  cat <<EOF

### Fan-in: $FANIN_N concurrent requests for one 100 KiB zip (logs $EXTRA_MODE)

h2load -t1 -c$FANIN_CONNS -m$FANIN_STREAMS -n$FANIN_N (all $FANIN_N in flight at once); time = h2load's "finished in"
(connections included) until all $FANIN_N are answered, median of $ROUNDS rounds. warm: the object is
cached; cold: a version neither cache has seen (one per round), the concurrent misses coalesced
(modgate's cache lock, nginx proxy_cache_lock). origin reqs = requests for that object the
origin received in each round's run (cold: 1 when coalesced).

| fan-in | modgate ms | nginx ms | time ratio | origin reqs modgate / nginx (each round) |
|---|---|---|---|---|
$(printf '%s\n' "${FTABLE[@]}")

$(printf '%s\n\n' "${FCHECK[@]}")
EOF
fi
if [ ${#MTABLE[@]} -gt 0 ]; then
  cat <<EOF

### Memory (logs $EXTRA_MODE), MiB

VmRSS summed over the server's processes (nginx: master, $THREADS worker(s), cache manager;
modgate: one process), read from /proc/<pid>/status; one run per server. Peak = the largest
sum sampled every 50 ms during the downloads; VmHWM = the largest process's high-water mark
(reset before the downloads).

| load | RSS | modgate | nginx | ratio | |
|---|---|---|---|---|---|
$(printf '%s\n' "${MTABLE[@]}")
EOF
fi
if [ ${#GTABLE[@]} -gt 0 ] || [ -n "$GO_NOTE" ]; then
  cat <<EOF

### go mod download all: $GO_DEPS modules from an empty module cache (logs $EXTRA_MODE)

EOF
  if [ -n "$GO_NOTE" ]; then
    echo "Section $GO_NOTE."
  else
    cat <<EOF
A main module requiring example.com/dep/m000 .. ($GO_DEPS modules, one version each);
\`go mod download all\` with a fresh GOMODCACHE per run, GOPROXY = the target, GOMAXPROCS=$GO_PROCS,
go pinned to CPU $LOADER_CPUS; gateways warm (one run each before), go.sum from the origin run
kept (every run checks the gateways' bytes). Wall time in seconds, median of $ROUNDS rounds,
targets in rotating order. modules = module dirs / zips in the download cache / extracted dirs.

| target | GOPROXY | median s | runs (s) | modules | origin reqs (each run) | vs origin |
|---|---|---|---|---|---|---|
$(printf '%s\n' "${GTABLE[@]}")
EOF
  fi
fi
