# benches/lib.sh — shared by benches/bench.sh and benches/load.sh (sourced, never run).
#
#   log / warn / die               messages on stderr (die: "<script>: ..." and exit 1)
#   need_tools cmd:pkg ...         installs the Debian packages of missing commands (apt-get)
#   build_modgate                  cargo build --release -p modgate (BUILD=0: skipped); sets MODGATE
#   build_mgload                   the same for benches/mgload, the loader with client certificates;
#                                  sets MGLOAD
#   check_ports port ...           dies when one is already taken on 127.0.0.1
#   compute_pinning LOADER_NAME    sets SERVER_CPUS, LOADER_CPUS, SERVER_CPU_LIST, PINNING, PINNED
#   make_workdir PREFIX            sets W (mktemp -d), PIDS=(); stops PIDS and removes W on exit
#   stop_pid PID / forget_pid PID  stop one started process / drop it from PIDS
#   wait_up URL PID [curl opts]    waits (10 s at most) for URL to answer 2xx while PID lives
#   nginx_common                   sets NGINX_USER and TEMP_PATHS for nginx configs under W
#   write_origin_conf LOG EXTRA    $W/origin.conf: nginx serving $W/origin on ORIGIN_PORT
#   write_modgate_conf FILE DIR PORT AUDIT LEVEL LISTENER CACHE
#                                  a modgate config: one listener, one route to the origin
#   server_pids, cpu_ticks, status_kib, sum_status_kib, max_status_kib, reset_hwm, mib,
#   median, ratio                  /proc readings and arithmetic
#
# Expects ROOT (the repository), THREADS and KEEP to be set by the caller.

SCRIPT_NAME=${SCRIPT_NAME:-${0##*/}}

log() { printf '== %s\n' "$*" >&2; }
warn() { printf '\n!! WARNING: %s\n\n' "$*" >&2; }
die() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Prerequisites (Debian).
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export PATH="$PATH:/usr/sbin:/sbin"

need_tools() { # command:package ... -> installs the packages of the missing commands
  local need=() spec
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null || need+=("${spec#*:}")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  log "installing ${need[*]} with apt-get (needed by this benchmark only)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
}
COMMON_TOOLS=(nginx:nginx h2load:nghttp2-client curl:curl python3:python3 taskset:util-linux
  pgrep:procps timeout:coreutils)

build_modgate() { # BUILD=0: use target/release/modgate as it is (e.g. while sources are mid-edit)
  MODGATE="$ROOT/target/release/modgate"
  if [ "${BUILD:-1}" = 0 ]; then
    [ -x "$MODGATE" ] || die "BUILD=0 but there is no $MODGATE"
    log "using $MODGATE as built (BUILD=0)"
    return 0
  fi
  log "building modgate (release)"
  (cd "$ROOT" && cargo build --release -p modgate)
}

# mgload (benches/mgload): h2load's figures, plus a client certificate and HTTP/1.1 keep-alive
# with the same printout. Built once per run in release mode (cargo rebuilds it only when its
# sources change); BUILD=0 uses the binary as it is.
build_mgload() {
  MGLOAD="$ROOT/target/release/mgload"
  if [ "${BUILD:-1}" = 0 ]; then
    [ -x "$MGLOAD" ] || die "BUILD=0 but there is no $MGLOAD (cargo build --release -p modgate-benches --bin mgload)"
    return 0
  fi
  log "building mgload (release)"
  (cd "$ROOT" && cargo build --release -p modgate-benches --bin mgload)
}

check_ports() { # port...
  local p
  for p in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      die "127.0.0.1:$p is already in use (see the *_PORT settings at the top of $SCRIPT_NAME)"
    fi
  done
}

# ---------------------------------------------------------------------------------------------
# CPU pinning (taskset): the servers under test on CPUs 1..THREADS, the loader (h2load, wrk,
# curl, go) and the origin on CPU 0 and any CPUs left over; with no spare CPU nothing is pinned.
compute_pinning() { # loader-description
  NCPU=$(nproc)
  if [ "$NCPU" -gt "$THREADS" ]; then
    SERVER_CPUS=$(seq -s, 1 "$THREADS")
    LOADER_CPUS=0
    [ "$NCPU" -gt $((THREADS + 1)) ] && LOADER_CPUS="0,$(seq -s, $((THREADS + 1)) $((NCPU - 1)))"
    PINNING="servers on CPU $SERVER_CPUS, $1 and the origin on CPU $LOADER_CPUS"
    PINNED=1
  else
    SERVER_CPUS=$(seq -s, 0 $((NCPU - 1)))
    LOADER_CPUS=$SERVER_CPUS
    PINNING="NOT pinned: $NCPU CPUs for $THREADS server threads plus the loader"
    PINNED=0
  fi
  SERVER_CPU_LIST=${SERVER_CPUS//,/ }
}

# ---------------------------------------------------------------------------------------------
# Work directory; every process started is in PIDS and stopped on exit.
PIDS=()
stop_pid() { # pid: TERM, up to 5 s, then KILL
  kill -TERM "$1" 2>/dev/null || true
  local _
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
forget_pid() { # pid: drop from PIDS (after stop_pid)
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
cleanup() {
  local rc=$? pid _
  trap - EXIT
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "${W:-}" ] && [ -d "$W" ]; then
    if [ "$KEEP" = 1 ]; then
      log "kept $W"
    else
      chmod -R u+w "$W" 2>/dev/null || true   # Go's module cache is read-only by default
      rm -rf "$W"
    fi
  fi
  exit "$rc"
}
make_workdir() { # prefix
  W=$(mktemp -d "/tmp/$1.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

wait_up() { # url pid [curl options]
  local url=$1 pid=$2 _
  shift 2
  for _ in $(seq 100); do
    curl -fsS --max-time 2 -o /dev/null "$@" "$url" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

nginx_common() { # -> NGINX, NGINX_USER, TEMP_PATHS (temporary files under $W/tmp)
  NGINX=$(command -v nginx)
  mkdir -p "$W/tmp"
  NGINX_USER=""
  [ "$(id -u)" = 0 ] && NGINX_USER="user root;"
  TEMP_PATHS="client_body_temp_path $W/tmp/body; proxy_temp_path $W/tmp/proxy;
  fastcgi_temp_path $W/tmp/fastcgi; uwsgi_temp_path $W/tmp/uwsgi; scgi_temp_path $W/tmp/scgi;"
}

write_origin_conf() { # access-log directive, extra http directives (after nginx_common), extra server directives
  cat >"$W/origin.conf" <<EOF
$NGINX_USER
daemon off;
worker_processes 1;
pid $W/origin.pid;
error_log $W/origin-error.log warn;
events { worker_connections 4096; }
http {
  $TEMP_PATHS
  $1
  sendfile on;
  $2
  keepalive_requests 1000000;
  default_type application/octet-stream;
  types { application/json info; text/plain mod; application/zip zip; }
  server {
    listen 127.0.0.1:$ORIGIN_PORT;
    root $W/origin;
    location / { try_files \$uri =404; }
    ${3:-}
  }
}
EOF
}

# modgate's server.work_stealing is WORK_STEALING (default false, modgate's default).
write_modgate_conf() { # file dir port audit-output log-level ("": none) listener-yaml cache-yaml
  local file=$1 dir=$2 port=$3 audit=$4 level=$5 listener=$6 cache=$7 logs=""
  [ -n "$level" ] && logs=$'log:\n  level: '"$level"
  cat >"$file" <<EOF
server:
  threads: $THREADS
  work_stealing: ${WORK_STEALING:-false}
  pid_file: $dir/modgate.pid
  upgrade_sock: $dir/modgate_upgrade.sock
  grace_period: 1s
  shutdown_timeout: 1s
listeners:
  - name: bench
    address: "127.0.0.1:$port"
$listener
upstreams:
  origin:
    url: "http://127.0.0.1:$ORIGIN_PORT"
routes:
  - name: all
    match: { prefix: "" }
    chain: [origin]
cache:
  dir: $dir/modgate-cache
  fsync: false          # throwaway bench cache: only the miss path is affected
$cache
audit:
  output: $audit
$logs
EOF
}

# The listener's TLS settings of both side-by-side benchmarks (client certificates optional
# unless asked otherwise).
tls_listener_yaml() { # cert key ca [client_auth: optional (default) | required]
  printf '    tls:\n      cert: %s\n      key: %s\n      client_auth: %s\n      client_ca: %s' "$1" "$2" "${4:-optional}" "$3"
}

# ---------------------------------------------------------------------------------------------
# /proc readings.
TICK=$(getconf CLK_TCK)
server_pids() { # master pid -> itself and its children (nginx workers, cache manager)
  echo "$1"
  pgrep -P "$1" || true
}
cpu_ticks() { # master -> utime+stime of it and its children, clock ticks
  local s=0 v p
  for p in $(server_pids "$1"); do
    v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)
    s=$((s + ${v:-0}))
  done
  echo "$s"
}
status_kib() { # pid field -> kB (0 when gone)
  local v
  v=$(awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true)
  echo "${v:-0}"
}
sum_status_kib() { # master field -> sum over the master and its children
  local s=0 v p
  for p in $(server_pids "$1"); do v=$(status_kib "$p" "$2"); s=$((s + ${v:-0})); done
  echo "$s"
}
max_status_kib() { # master field -> largest over the master and its children
  local m=0 v p
  for p in $(server_pids "$1"); do v=$(status_kib "$p" "$2"); [ "${v:-0}" -gt "$m" ] && m=$v; done
  echo "$m"
}
reset_hwm() { # master: VmHWM := VmRSS (Linux clear_refs "5")
  local p
  for p in $(server_pids "$1"); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done
}
mib() { awk -v k="$1" 'BEGIN { if (k == "-" || k == "") print "-"; else printf "%.1f", k / 1024 }'; }

median() { # numbers as arguments -> median ("-" if none)
  [ $# -eq 0 ] && { echo -; return; }
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { # a b -> a / b with two decimals ("-" when either is missing or b is 0)
  awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && a != "" && b != "-" && b != "" && b > 0) printf "%.2f", a / b; else print "-" }'
}
