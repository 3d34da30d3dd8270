#!/usr/bin/env bash
# benches/scale.sh — modgate with a million cached objects and a million ledger entries (issue 22),
# against the same figures with a small cache. Not part of `make test` or `make bench`.
#
#   DATA=/work/scale-data benches/scale.sh                         # 1,000 and 1,000,000 objects
#   SCALES=1000 RUNS=1 benches/scale.sh                            # a quick look
#   PHASES=generate DATA=... benches/scale.sh                      # only build the data sets
#   PHASES=measure DATA=... benches/scale.sh                       # measure data sets built before
#   PHASES=clean DATA=... benches/scale.sh                         # delete them
#
# Data (PHASES=generate): for each N of SCALES, a cache of N objects and a ledger of N entries,
# made by the gateway itself: a release modgate in front of an nginx origin that answers every
# `example.com/scale/m<NNNNNN>/@v/v1.<j>.0.{info,mod}` (benches/scale_urls.py: N/20 modules of
# 10 versions, each version's .info and .mod) is sent every one of the N paths once
# (GEN_CLIENTS h2load processes, one connection of GEN_STREAMS streams each). Every answer is a
# miss: modgate stores it in its disk cache and records its first-seen hashes in the ledger, as
# for any exact version. Only the ledger lives on /dev/shm while it is generated (its
# `synchronous=FULL` commit per miss would otherwise cost an fsync each: 3 ms on this machine's
# disk, 50 minutes for a million), and is then moved beside the cache, where the gateway's
# default (`<cache dir>/ledger.sqlite`) finds it. The gateway is stopped with SIGTERM, so its
# LRU state is saved as at any shutdown. Each data set is checked: N meta files, N ledger rows.
# Kept in DATA/n<N>/ (about 8.5 KB of disk per small object) until PHASES=clean.
#
# Measurement (PHASES=measure), with benches/profile.sh's "logs on" settings (TLS 1.3, client
# certificates optional, one worker thread on CPU 1, audit log and access line to files; the
# loaders and the origin on CPU 0):
#   start-up    RUNS start-ups per scale (alternating): process start to the first `200` of
#               /healthz (curl every 10 ms), the page cache as the previous run left it; the
#               cache's own start-up line (objects found) checked against N; VmRSS then and 2 s
#               later ("after start-up"), VmHWM of the start-up; SIGTERM to exit (the LRU state
#               is saved on the way out)
#   hit CPU     every scale's gateway started once and kept running (on its own port, all on
#               CPU 1, idle while another is measured); per workload a warm-up of each
#               (WARM_REQUESTS), then HIT_ROUNDS rounds, the scales alternating (which one goes
#               first alternates too): modgate's utime+stime (/proc/<pid>/stat) over a fixed
#               number of requests (HIT_REQUESTS) divided by them; VmRSS after each workload
#       one       one cached .info, `h2load -t1 -c32 -m8` (benches/profile.sh's run)
#       set1k     1,000 distinct cached objects (random, the same seed for every scale), the same
#                 h2load; all held by the memory tier after the warm-up at every scale
#       one32     one cached .info again, but 32 h2load processes of `-c1 -m8` (random's shape)
#       random    objects drawn uniformly from the whole cache (with replacement), a new draw per
#                 round, each of the 32 processes its own list: at N = 1,000 all are in memory
#                 after the warm-up; at a million most are not (the memory tier holds 64 MiB), so
#                 this is mostly the disk-hit path (open, read and verify the object, fill the
#                 memory tier)
#   disk        bytes allocated (du) and apparent under the cache's objects/ and eviction/, and
#               the ledger file, per object / per entry
# Then COLD_RUNS start-ups per scale with the page cache dropped first (root only:
# `sync; echo 3 > /proc/sys/vm/drop_caches`). The origin's access log is counted around every
# measured run: hits only (0 origin requests) or the run is left out with a warning. The
# machine may be shared: before each timed step the script waits (QUIET_WAIT s at most) until
# no CPU was more than QUIET_PCT % busy for a second, and reports the busiest CPU's share.
#
# Settings: SCALES="1000 1000000" DATA=$ROOT/target/scale-data PHASES="generate measure"
# RUNS=3 HIT_ROUNDS=5 COLD_RUNS=1 HIT_REQUESTS=320000 WARM_REQUESTS=32000 GEN_CLIENTS=4 GEN_STREAMS=16
# QUIET_PCT=15 QUIET_WAIT=180 PORT=18723 (scale i of SCALES listens on PORT + i) ORIGIN_PORT=18721 BUILD=1 (0: target/release/modgate as it is) MODGATE_BIN
# KEEP=0 (1: keep the work directory with logs and configs) STARTUP_LIMIT=900 (seconds a
# start-up may take before it is given up). DATA must not be on tmpfs (start-up reads it).
# Needs 2 CPUs, nginx, h2load, curl, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCALES=${SCALES:-1000 1000000}
DATA=${DATA:-$ROOT/target/scale-data}
PHASES=${PHASES:-generate measure}
RUNS=${RUNS:-3}
HIT_ROUNDS=${HIT_ROUNDS:-5}
COLD_RUNS=${COLD_RUNS:-1}
HIT_REQUESTS=${HIT_REQUESTS:-320000}
WARM_REQUESTS=${WARM_REQUESTS:-32000}
GEN_CLIENTS=${GEN_CLIENTS:-4}
GEN_STREAMS=${GEN_STREAMS:-16}
PORT=${PORT:-18723}
ORIGIN_PORT=${ORIGIN_PORT:-18721}
KEEP=${KEEP:-0}
STARTUP_LIMIT=${STARTUP_LIMIT:-900}
QUIET_PCT=${QUIET_PCT:-15}
QUIET_WAIT=${QUIET_WAIT:-180}
CLIENTS=32   # h2load processes per hit workload, one connection each
STREAMS=8
CIPHER=TLS_AES_128_GCM_SHA256
SPREAD=1000
SPREAD_SEED=22
export PATH="$PATH:/usr/sbin:/sbin"

THREADS=1
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"   # log/warn/die, build_modgate, pinning, PIDS and cleanup, /proc
for tool in nginx h2load curl python3 taskset timeout du; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install nginx nghttp2-client curl python3)"
done
[ $((HIT_REQUESTS % CLIENTS)) = 0 ] && [ $((WARM_REQUESTS % CLIENTS)) = 0 ] \
  || die "HIT_REQUESTS and WARM_REQUESTS must be multiples of $CLIENTS"
for n in $SCALES; do
  [ "$n" -gt 0 ] && [ $((n % 20)) = 0 ] || die "every scale must be a positive multiple of 20 (got $n)"
done
has_phase() { [[ " $PHASES " == *" $1 "* ]]; }

if has_phase clean && ! has_phase generate && ! has_phase measure; then
  for n in $SCALES; do
    [ -d "$DATA/n$n" ] && { log "removing $DATA/n$n"; rm -rf "$DATA/n$n"; }
  done
  rmdir "$DATA" 2>/dev/null || true
  exit 0
fi

if [ -n "${MODGATE_BIN:-}" ]; then MODGATE=$MODGATE_BIN; else build_modgate; fi
check_ports "$PORT" "$ORIGIN_PORT"
compute_pinning h2load
[ "$PINNED" = 1 ] || die "needs 2 CPUs (server and loaders apart)"
make_workdir modgate-scale
mkdir -p "$DATA"
[ "$(stat -f -c %T "$DATA")" = tmpfs ] && die "DATA ($DATA) is on tmpfs: put it on a disk"
BASE="https://127.0.0.1:$PORT"
"$MODGATE" certs --out "$W/certs" >/dev/null
VERSION=$("$MODGATE" --version 2>/dev/null || echo "modgate ?")
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")

# ---------------------------------------------------------------------------------------------
# The origin: nginx answering every module version of the scheme from its path (no files).
nginx_common
cat >"$W/origin.conf" <<EOF
$NGINX_USER
daemon off;
worker_processes 1;
pid $W/origin.pid;
error_log $W/origin-error.log warn;
events { worker_connections 4096; }
http {
  $TEMP_PATHS
  access_log $W/origin-access.log;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$ORIGIN_PORT;
    location ~ "^/example\.com/scale/(?<m>m[0-9]+)/@v/(?<v>v1\.[0-9]\.0)\.info\$" {
      default_type application/json;
      return 200 '{"Version":"\$v","Time":"2024-01-01T00:00:00Z"}\n';
    }
    location ~ "^/example\.com/scale/(?<m>m[0-9]+)/@v/(?<v>v1\.[0-9]\.0)\.mod\$" {
      default_type text/plain;
      return 200 "module example.com/scale/\$m\n\ngo 1.21\n";
    }
    location / { return 404; }
  }
}
EOF
taskset -c "$LOADER_CPUS" "$NGINX" -p "$W" -e "$W/origin-startup.log" -c "$W/origin.conf" &
PIDS+=($!)
origin_requests() { wc -l <"$W/origin-access.log" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------------------------------------
# modgate: one config per use; a process started, timed to /healthz, stopped.
MP=""
write_conf() { # file data-dir audit level cache-yaml [port]
  write_modgate_conf "$1" "$2" "${6:-$PORT}" "$3" "$4" \
    "$(tls_listener_yaml "$W/certs/server.pem" "$W/certs/server.key" "$W/certs/ca.pem")" "$5"
}
now_ns() { date +%s%N; }
start_gateway() { # config log port -> MP, STARTUP_S (process start to /healthz 200)
  local t0 t1 deadline
  unset RUST_LOG
  t0=$(now_ns)
  taskset -c "$SERVER_CPUS" "$MODGATE" run -c "$1" >"$2.stdout" 2>"$2" &
  MP=$!
  PIDS+=("$MP")
  deadline=$((t0 + STARTUP_LIMIT * 1000000000))
  while :; do
    if curl -fsS --max-time 2 -o /dev/null --cacert "$W/certs/ca.pem" "https://127.0.0.1:$3/healthz" 2>/dev/null; then
      break
    fi
    kill -0 "$MP" 2>/dev/null || die "modgate exited during start-up: $(tail -3 "$2")"
    [ "$(now_ns)" -lt "$deadline" ] || die "modgate did not answer /healthz within ${STARTUP_LIMIT}s"
    sleep 0.01
  done
  t1=$(now_ns)
  STARTUP_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
}
stop_gateway() { # pid -> STOP_S (SIGTERM to exit; the LRU state is saved on the way out)
  local t0 _ pid=$1
  t0=$(now_ns)
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    warn "modgate did not exit within 120 s of SIGTERM; killed"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  STOP_S=$(awk -v a="$t0" -v b="$(now_ns)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  forget_pid "$pid"
}
cache_line() { # log -> the cache's start-up line ("disk cache <dir>: N objects, ...")
  grep -o 'disk cache [^ ]*: [0-9]* objects, [0-9]* bytes ([^)]*)' "$1" | tail -1 || true
}

# PARTS h2load processes (default CLIENTS), one connection of STREAMS streams each, process k
# on LIST.k; N requests each ("lines": as many as LIST.k has lines, each URL once).
# -> H2_OK (2xx), H2_BAD (everything else), H2_RPS (sum of the processes' req/s)
drive() { # list-prefix requests-per-process streams [parts]
  local prefix=$1 n=$2 m=$3 parts=${4:-$CLIENTS} k each pids=() rc=0
  for k in $(seq 0 $((parts - 1))); do
    each=$n
    [ "$n" = lines ] && each=$(wc -l <"$prefix.$k")
    timeout -k 5 "${H2_TIMEOUT:-1800}" taskset -c "$LOADER_CPUS" h2load -t1 -c1 -m"$m" -n "$each" \
      --tls13-ciphers="$CIPHER" -i "$prefix.$k" >"$prefix.$k.out" 2>&1 &
    pids+=($!)
  done
  for k in "${pids[@]}"; do wait "$k" || rc=1; done
  h2_totals "$prefix" "$rc"
}
# One h2load process, CLIENTS connections of STREAMS streams (benches/profile.sh's -c32 -m8),
# every connection walking LIST.0 from its first URL; TOTAL requests in all.
drive_one() { # list-prefix total
  local rc=0
  timeout -k 5 "${H2_TIMEOUT:-1800}" taskset -c "$LOADER_CPUS" h2load -t1 -c"$CLIENTS" -m"$STREAMS" \
    -n "$2" --tls13-ciphers="$CIPHER" -i "$1.0" >"$1.0.out" 2>&1 || rc=1
  h2_totals "$1" "$rc" 0
}
h2_totals() { # prefix rc [only-part]
  local outs=("$1".*.out)
  [ -n "${3:-}" ] && outs=("$1.$3.out")
  [ "$2" = 0 ] || warn "an h2load of $1 failed: $(tail -3 "${outs[0]}")"
  H2_OK=$(cat "${outs[@]}" | awk '/^status codes:/ { s += $3 } END { print s + 0 }')
  H2_BAD=$(cat "${outs[@]}" | awk '/^requests:/ { s += $2 - $8 } END { print s + 0 }')
  H2_RPS=$(cat "${outs[@]}" | awk '/^finished in/ { s += $4 } END { printf "%.0f", s }')
  local notls
  notls=$(grep -L '^Application protocol: h2$' "${outs[@]}" | head -1 || true)
  [ -z "$notls" ] || warn "not HTTP/2: $notls"
}

# The machine is shared: before a timed step, wait (QUIET_WAIT s at most) until no CPU was more
# than QUIET_PCT % busy (user+nice+system+irq+softirq; steal is the host's) over one second.
# -> QUIET: the busiest CPU's % in the last second sampled
cpu_sample() { awk '/^cpu[0-9]/ { print $1, $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
wait_quiet() {
  local a b t0
  t0=$(now_ns)
  while :; do
    a=$(cpu_sample)
    sleep 1
    b=$(cpu_sample)
    QUIET=$(join --nocheck-order <(echo "$a") <(echo "$b") | awk '{ t = $5 - $3; u = t > 0 ? 100 * ($4 - $2) / t : 0; if (u > m) m = u } END { printf "%.0f", m }')
    [ "$QUIET" -le "$QUIET_PCT" ] && return 0
    if [ $(($(now_ns) - t0)) -gt $((QUIET_WAIT * 1000000000)) ]; then
      warn "a CPU was still ${QUIET}% busy after ${QUIET_WAIT}s of waiting; measuring anyway"
      BUSY_RUNS=$((BUSY_RUNS + 1))
      return 0
    fi
  done
}
BUSY_RUNS=0

# ---------------------------------------------------------------------------------------------
# Generation.
generate() { # n
  local n=$1 d="$DATA/n$1" shm t0 t1 objects entries per
  if [ -f "$d/generated" ]; then
    log "n=$n: data set already in $d ($(cat "$d/generated"))"
    return 0
  fi
  rm -rf "$d"
  mkdir -p "$d/lists"
  local need_kib=$((n * 10 + 1048576)) avail_kib
  avail_kib=$(df -Pk "$DATA" | awk 'NR == 2 { print $4 }')
  [ "$avail_kib" -gt "$need_kib" ] || die "n=$n needs about $((need_kib / 1024)) MiB in $DATA, $((avail_kib / 1024)) MiB free"
  shm=$(mktemp -d /dev/shm/modgate-scale-ledger.XXXXXX)
  python3 "$ROOT/benches/scale_urls.py" "$BASE" "$n" all "$GEN_CLIENTS" "$d/lists/all"
  write_conf "$W/gen-$n.yaml" "$d" off warn "  ledger: $shm/ledger.sqlite"
  start_gateway "$W/gen-$n.yaml" "$W/gen-$n.log" "$PORT"
  log "n=$n: $n misses through modgate (${GEN_CLIENTS} h2load x ${GEN_STREAMS} streams)"
  local before
  before=$(origin_requests)
  t0=$(now_ns)
  H2_TIMEOUT=$((600 + n / 50)) drive "$d/lists/all" lines "$GEN_STREAMS" "$GEN_CLIENTS"
  t1=$(now_ns)
  local fetched=$(($(origin_requests) - before))
  stop_gateway "$MP"
  [ "$H2_OK" = "$n" ] && [ "$H2_BAD" = 0 ] || die "n=$n: $H2_OK answers 2xx, $H2_BAD not, of $n"
  [ "$fetched" = "$n" ] || die "n=$n: the origin saw $fetched requests for $n objects"
  # the ledger: checkpointed into one file, then beside the cache (the gateway's default path)
  python3 - "$shm/ledger.sqlite" <<'EOF'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
c.close()
EOF
  mv "$shm/ledger.sqlite" "$d/modgate-cache/ledger.sqlite"
  rm -rf "$shm"
  entries=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM entries").fetchone()[0])' "$d/modgate-cache/ledger.sqlite")
  objects=$(find "$d/modgate-cache/objects" -name '*.meta' | wc -l)
  [ "$objects" = "$n" ] || die "n=$n: $objects meta files"
  [ "$entries" = "$n" ] || die "n=$n: $entries ledger entries"
  [ -f "$d/modgate-cache/eviction/simple_lru.data" ] || warn "n=$n: no saved LRU state after SIGTERM"
  per=$(awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN { printf "%.1f s, %.0f misses/s", (b - a) / 1e9, n * 1e9 / (b - a) }')
  echo "$objects objects, $entries ledger entries, generated in $per (stop ${STOP_S} s)" >"$d/generated"
  log "n=$n: $(cat "$d/generated")"
}

# ---------------------------------------------------------------------------------------------
# Measurement.
declare -A R   # results: R[n,metric] = space-separated values, one per run
declare -A GW  # the running gateway of each scale (hit runs)
add() { R[$1,$2]="${R[$1,$2]:-} $3"; }
port_of() { # n -> the listener port of that scale's gateway (PORT + its index in SCALES)
  local i=0 m
  for m in $SCALES; do [ "$m" = "$1" ] && { echo $((PORT + i)); return; }; i=$((i + 1)); done
}

disk_figures() { # n
  local n=$1 c="$DATA/n$1/modgate-cache"
  R[$n,objects_alloc]=$(du -s --block-size=1 "$c/objects" | cut -f1)
  R[$n,objects_apparent]=$(du -s --apparent-size --block-size=1 "$c/objects" | cut -f1)
  R[$n,meta_apparent]=$(find "$c/objects" -name '*.meta' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
  R[$n,body_apparent]=$(find "$c/objects" -name '*.body' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
  R[$n,eviction]=$(du -s --apparent-size --block-size=1 "$c/eviction" | cut -f1)
  R[$n,ledger]=$(du -s --apparent-size --block-size=1 "$c"/ledger.sqlite* | awk '{ s += $1 } END { print s }')
  R[$n,dirs]=$(find "$c/objects" -mindepth 2 -maxdepth 2 -type d | wc -l)
}

run_conf() { # n -> $W/run-<n>.yaml (the measured settings) and $W/run-<n>/
  mkdir -p "$W/run-$1"
  write_conf "$W/run-$1.yaml" "$DATA/n$1" "$W/run-$1/audit.log" info "" "$(port_of "$1")"
}
truncate_logs() { # n: the per-request lines (hundreds of MB a run)
  : >"$W/run-$1/audit.log" 2>/dev/null || true
  : >"$W/run-$1/modgate.log" 2>/dev/null || true
}

# Start-up: process start to /healthz, RSS then and 2 s later, the start-up's VmHWM, stop.
startup_run() { # n [cold]
  local n=$1 line
  run_conf "$n"
  if [ "${2:-}" = cold ]; then
    sync
    echo 3 >/proc/sys/vm/drop_caches
  fi
  wait_quiet
  start_gateway "$W/run-$n.yaml" "$W/run-$n/modgate.log" "$(port_of "$n")"
  if [ "${2:-}" = cold ]; then
    add "$n" startup_cold "$STARTUP_S"
    log "n=$n: start-up with the page cache dropped ${STARTUP_S} s"
  else
    add "$n" startup "$STARTUP_S"
    add "$n" rss_up "$(status_kib "$MP" VmRSS)"
    add "$n" hwm_up "$(status_kib "$MP" VmHWM)"
    line=$(cache_line "$W/run-$n/modgate.log")
    [[ "$line" == *": $n objects,"* ]] || warn "n=$n: start-up line says: ${line:-nothing}"
    R[$n,line]=$line
    sleep 2
    add "$n" rss_settled "$(status_kib "$MP" VmRSS)"
    log "n=$n: start-up ${STARTUP_S} s, RSS $(mib "$(status_kib "$MP" VmRSS)") MiB; $line"
  fi
  stop_gateway "$MP"
  add "$n" stop "$STOP_S"
  truncate_logs "$n"
}

workload_lists() { # n -> $W/l-<n>-{one,set1k,random-warm,random-<round>}.k
  local n=$1 w=$W/l-$1 base r
  base="https://127.0.0.1:$(port_of "$n")"
  for k in $(seq 0 $((CLIENTS - 1))); do
    echo "$base/example.com/scale/m000000/@v/v1.0.0.info" >"$w-one.$k"
  done
  python3 "$ROOT/benches/scale_urls.py" "$base" "$n" spread "$((SPREAD < n ? SPREAD : n))" "$CLIENTS" "$w-set1k" "$SPREAD_SEED"
  python3 "$ROOT/benches/scale_urls.py" "$base" "$n" random "$WARM_REQUESTS" "$CLIENTS" "$w-random-warm" 1000
  for r in $(seq "$HIT_ROUNDS"); do
    python3 "$ROOT/benches/scale_urls.py" "$base" "$n" random "$HIT_REQUESTS" "$CLIENTS" "$w-random-$r" $((2000 + r))
  done
}

run_load() { # how(one|multi) list-prefix requests
  if [ "$1" = one ]; then drive_one "$2" "$3"; else drive "$2" $(($3 / CLIENTS)) "$STREAMS"; fi
}

hit_run() { # n round workload how list-prefix
  local n=$1 r=$2 wl=$3 how=$4 list=$5 mp=${GW[$1]} o0 t0 t1 w0 w1 reqs
  wait_quiet
  o0=$(origin_requests)
  t0=$(cpu_ticks "$mp")
  w0=$(now_ns)
  run_load "$how" "$list" "$HIT_REQUESTS"
  w1=$(now_ns)
  t1=$(cpu_ticks "$mp")
  reqs=$H2_OK
  local fetched=$(($(origin_requests) - o0))
  truncate_logs "$n"
  if [ "$H2_BAD" != 0 ] || [ "$reqs" != "$HIT_REQUESTS" ] || [ "$fetched" != 0 ]; then
    warn "n=$n round $r $wl: $reqs 2xx, $H2_BAD failed, $fetched origin requests: left out"
    return 0
  fi
  local us pct
  us=$(awk -v d=$((t1 - t0)) -v hz="$TICK" -v q="$reqs" 'BEGIN { printf "%.2f", 1e6 * d / hz / q }')
  pct=$(awk -v d=$((t1 - t0)) -v hz="$TICK" -v w=$((w1 - w0)) 'BEGIN { printf "%.0f", 100 * d / hz / (w / 1e9) }')
  add "$n" "cpu_$wl" "$us"
  add "$n" "rps_$wl" "$(awk -v q="$reqs" -v w=$((w1 - w0)) 'BEGIN { printf "%.0f", q / (w / 1e9) }')"
  add "$n" "pct_$wl" "$pct"
  add "$n" "quiet_$wl" "$QUIET"
  log "n=$n round $r $wl: $us µs CPU/req, modgate CPU $pct %, $reqs req in $(awk -v w=$((w1 - w0)) 'BEGIN { printf "%.1f", w / 1e9 }') s, RSS $(mib "$(status_kib "$mp" VmRSS)") MiB, $(awk '/^Threads:/ { print $2 }' "/proc/$mp/status") threads, busiest CPU before ${QUIET}%, load $(cut -d' ' -f1-3 /proc/loadavg)"
}

# Hits: every scale's gateway running at once (each on CPU 1, idle while the other is measured);
# per workload a warm-up of each, then HIT_ROUNDS rounds, the scales alternating (the first one
# alternating round to round).
hit_runs() {
  local n wl how r order
  for n in $SCALES; do
    run_conf "$n"
    workload_lists "$n"
    start_gateway "$W/run-$n.yaml" "$W/run-$n/modgate.log" "$(port_of "$n")"
    GW[$n]=$MP
    R[$n,rss_hits_start]=$(status_kib "$MP" VmRSS)
  done
  for wl in one set1k one32 random; do
    case $wl in one | set1k) how=one ;; *) how=multi ;; esac
    for n in $SCALES; do
      case $wl in
        random) run_load multi "$W/l-$n-random-warm" "$WARM_REQUESTS" ;;
        one32) run_load multi "$W/l-$n-one" "$WARM_REQUESTS" ;;
        *) run_load one "$W/l-$n-$wl" "$WARM_REQUESTS" ;;
      esac
      truncate_logs "$n"
    done
    for r in $(seq "$HIT_ROUNDS"); do
      order=$SCALES
      [ $((r % 2)) = 0 ] && order=$(echo "$SCALES" | tr ' ' '\n' | tac | tr '\n' ' ')
      for n in $order; do
        local list="$W/l-$n-$wl"
        [ "$wl" = one32 ] && list="$W/l-$n-one"
        [ "$wl" = random ] && list="$W/l-$n-random-$r"
        hit_run "$n" "$r" "$wl" "$how" "$list"
      done
    done
    for n in $SCALES; do R[$n,rss_$wl]=$(status_kib "${GW[$n]}" VmRSS); done
  done
  for n in $SCALES; do
    R[$n,hwm_all]=$(status_kib "${GW[$n]}" VmHWM)
    stop_gateway "${GW[$n]}"
  done
}

med() { median $1; }
mibs() { local out="" v; for v in $1; do out+="$(mib "$v") "; done; echo "${out% }"; }
per_obj() { awk -v b="$1" -v n="$2" 'BEGIN { printf "%.0f", b / n }'; }

report() {
  local small big n
  echo
  echo "modgate $COMMIT ($VERSION), $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r)."
  echo "Load average at the end $(cut -d' ' -f1-3 /proc/loadavg). Medians (every run in brackets): start-ups $RUNS per scale,"
  echo "hit runs $HIT_ROUNDS per workload and scale, both gateways running, scales alternating. Hit runs: $HIT_REQUESTS requests"
  echo "measured after $WARM_REQUESTS of warm-up, logs on; one, set1k: h2load -t1 -c$CLIENTS -m$STREAMS; one32, random: $CLIENTS"
  echo "h2load -t1 -c1 -m$STREAMS processes. Timed steps waited for every CPU under $QUIET_PCT % busy (at most ${QUIET_WAIT}s);"
  echo "measured anyway after that wait: $BUSY_RUNS."
  echo
  for n in $SCALES; do
    echo "n=$n: $(cat "$DATA/n$n/generated"); start-up line: ${R[$n,line]:-}"
  done
  echo
  printf '| figure |'; for n in $SCALES; do printf ' %s objects |' "$n"; done; echo
  printf '|---|'; for n in $SCALES; do printf -- '---|'; done; echo
  row() { # label key [fmt: s|mib|raw]
    printf '| %s |' "$1"
    for n in $SCALES; do
      local v=${R[$n,$2]:-}
      case ${3:-raw} in
        mib) printf ' %s (%s) |' "$(mib "$(med "$v")")" "$(mibs "$v")" ;;
        *) printf ' %s (%s) |' "$(med "$v")" "$(echo $v)" ;;
      esac
    done
    echo
  }
  row "start-up to /healthz, s (page cache warm)" startup
  row "start-up to /healthz, s (page cache dropped)" startup_cold
  row "SIGTERM to exit, s" stop
  row "RSS at /healthz, MiB" rss_up mib
  row "RSS 2 s after start-up, MiB" rss_settled mib
  row "VmHWM of the start-up, MiB" hwm_up mib
  local wl
  for wl in one set1k one32 random; do row "hit CPU µs/req, $wl" "cpu_$wl"; done
  for wl in one set1k one32 random; do row "req/s, $wl" "rps_$wl"; done
  for wl in one set1k one32 random; do row "modgate CPU %, $wl" "pct_$wl"; done
  for wl in one set1k one32 random; do row "busiest CPU % in the second before, $wl" "quiet_$wl"; done
  row "RSS of the hit-run gateway before its warm-ups, MiB" rss_hits_start mib
  for wl in one set1k one32 random; do row "RSS after the $wl runs, MiB" "rss_$wl" mib; done
  row "VmHWM of the hit-run gateway at the end, MiB" hwm_all mib
  printf '| disk bytes per object (allocated / apparent, objects/) |'
  for n in $SCALES; do
    printf ' %s / %s |' "$(per_obj "${R[$n,objects_alloc]}" "$n")" "$(per_obj "${R[$n,objects_apparent]}" "$n")"
  done
  echo
  printf '| meta / body file bytes per object |'
  for n in $SCALES; do printf ' %s / %s |' "$(per_obj "${R[$n,meta_apparent]}" "$n")" "$(per_obj "${R[$n,body_apparent]}" "$n")"; done
  echo
  printf '| fan-out directories |'
  for n in $SCALES; do printf ' %s |' "${R[$n,dirs]}"; done
  echo
  printf '| LRU state (eviction/), bytes per object |'
  for n in $SCALES; do printf ' %s |' "$(per_obj "${R[$n,eviction]}" "$n")"; done
  echo
  printf '| ledger.sqlite bytes per entry |'
  for n in $SCALES; do printf ' %s |' "$(per_obj "${R[$n,ledger]}" "$n")"; done
  echo
  set -- $SCALES
  small=$1 big=${!#}
  if [ "$small" != "$big" ]; then
    echo
    # per round, the two scales ran back to back: the median of those ratios follows the
    # machine's drift less than the ratio of the medians
    local pairs
    for wl in one set1k one32 random; do
      pairs=$(paste -d' ' <(echo ${R[$big,cpu_$wl]:-} | tr ' ' '\n') <(echo ${R[$small,cpu_$wl]:-} | tr ' ' '\n') \
        | awk 'NF == 2 && $2 > 0 { printf "%.2f ", $1 / $2 }')
      echo "hit CPU/req $wl, $big / $small: ratio of the medians $(ratio "$(med "${R[$big,cpu_$wl]:-}")" "$(med "${R[$small,cpu_$wl]:-}")"), median of the per-round ratios $(med "$pairs") ($pairs)"
    done
    local grow
    grow=$(awk -v a="$(med "${R[$big,rss_settled]:-}")" -v b="$(med "${R[$small,rss_settled]:-}")" \
      -v n="$big" -v m="$small" 'BEGIN { printf "%.2f", (a - b) / (n - m) }')
    echo "RSS after start-up per object (difference of the medians / difference of the objects): $grow KiB"
  fi
}

# ---------------------------------------------------------------------------------------------
if has_phase generate; then
  for n in $SCALES; do generate "$n"; done
fi
if has_phase measure; then
  for n in $SCALES; do
    [ -f "$DATA/n$n/generated" ] || die "n=$n: no data set in $DATA/n$n (PHASES=generate first)"
    check_ports "$(port_of "$n")"
    disk_figures "$n"
  done
  for r in $(seq "$RUNS"); do
    for n in $SCALES; do startup_run "$n"; done
  done
  hit_runs
  if [ "$(id -u)" = 0 ] && [ "$COLD_RUNS" -gt 0 ]; then
    for _ in $(seq "$COLD_RUNS"); do
      for n in $SCALES; do startup_run "$n" cold; done
    done
  else
    log "cold start-ups skipped (COLD_RUNS=0 or not root: dropping the page cache needs root)"
  fi
  report
fi
if has_phase clean; then
  for n in $SCALES; do rm -rf "$DATA/n$n"; done
  rmdir "$DATA" 2>/dev/null || true
fi
