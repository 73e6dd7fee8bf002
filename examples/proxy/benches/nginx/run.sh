#!/usr/bin/env bash
# The HTTP proxy (examples/proxy, the loadbalance-proxy crate) against nginx
# as a reverse proxy.
#
# What it measures: requests per second and the median (p50) and 99th
# percentile (p99) latency that wrk sees through each proxy, both balancing
# the same three loopback backends with the same algorithm, the CPU time
# each proxy spends per request, and the ratios ours/nginx. The backends
# are one separate nginx (BACKEND_WORKERS worker processes) answering
# `GET /` with 200 and a fixed 100-byte body, so what differs between the
# two runs is only the proxy in the middle.
#
# Each proxy gets a warm-up (WARMUP) and then the measured wrk run; the proxies
# alternate (nginx, ours, nginx, ours, ...) ROUNDS times to spread order
# effects, and the table shows the median over rounds. Everything runs on
# loopback on one machine: wrk, both proxies and the backends share its
# cores, so the figures compare the two proxies here and are not either
# proxy's capacity.
#
# How to run (as root on Debian 12, from the repository's root):
#
#     bash examples/proxy/benches/nginx/run.sh
#     DURATION=30s ROUNDS=3 OUT=nginx.md bash examples/proxy/benches/nginx/run.sh
#
# It installs nginx, wrk and curl with apt-get when they are not on PATH
# (without letting the package start its service), builds the example with
# `cargo build --profile production -p loadbalance-proxy` (the workspace's
# profile for the installed proxy: release with whole-program optimisation)
# (CARGO_TARGET_DIR and CARGO_BUILD_JOBS are honoured), starts the backends
# and both proxies from a temporary directory, and stops all it started on
# exit, failures and Ctrl-C included. It does not use port 80 nor touch a
# system nginx.
#
# Knobs (environment variables):
#   MODE            proxy (default: every request to a backend), cache
#                   (both proxies cache the backends' answers, which say
#                   max-age=3600: every measured request is a hit; nginx's
#                   proxy_cache, our `cache = true`) or gzip (4 KiB HTML
#                   answers compressed for wrk's `Accept-Encoding: gzip`,
#                   both at gzip level 1, nginx's default)
#   SIZE            the backends' body in bytes (default: the ~100-byte
#                   line; e.g. 65536: a file of that size)
#   CLOSE=1         wrk sends `Connection: close`: a new connection to the
#                   proxy for every request
#   IDLE            idle keep-alive connections (each has had one answer)
#                   held open to the measured proxy during its runs (0);
#                   both proxies keep idle connections 75 s (nginx's
#                   keepalive_timeout default; ours header_timeout_ms)
#   PROTO           http (default: HTTP/1.1 in plaintext, wrk), https
#                   (HTTP/1.1 over TLS, wrk) or h2 (HTTP/2 over TLS, h2load
#                   from Debian's nghttp2-client); the certificate is made
#                   with openssl for the run
#   STREAMS         h2load's streams per connection with PROTO=h2 (10)
#   ALGO            least_conn (default) or round_robin, for both proxies
#   WORKERS         worker processes of nginx = worker threads of ours (2)
#   BACKEND_WORKERS worker processes of the backends' nginx (1)
#   THREADS         wrk threads (2)
#   CONNS           wrk connections (64)
#   DURATION        each measured wrk run, wrk's syntax (10s)
#   WARMUP          each warm-up run (2s)
#   ROUNDS          nginx/ours pairs of measured runs (2)
#   OUT             also write the markdown table to this file
#   NGINX_PORT      nginx proxy's port (18080)
#   PROXY_PORT      our proxy's port (18081); its /metrics on PROXY_ADMIN_PORT (18091)
#   BACKEND_PORT    first backend port (19101); the three are the first free
#                   ports from there
#   PROXY_BIN       an already built proxy binary: skips the cargo build
#   BUILD_TIMEOUT   seconds the cargo build may take (1800)
#   KEEP_TMP=1      keep the temporary directory (configs, logs, wrk output)
set -euo pipefail

MODE=${MODE:-proxy}
SIZE=${SIZE:-}
CLOSE=${CLOSE:-0}
IDLE=${IDLE:-0}
PROTO=${PROTO:-http}
STREAMS=${STREAMS:-10}
ALGO=${ALGO:-least_conn}
WORKERS=${WORKERS:-2}
BACKEND_WORKERS=${BACKEND_WORKERS:-1}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-2}
OUT=${OUT:-}
NGINX_PORT=${NGINX_PORT:-18080}
PROXY_PORT=${PROXY_PORT:-18081}
PROXY_ADMIN_PORT=${PROXY_ADMIN_PORT:-18091}
PROXY_TLS_PORT=${PROXY_TLS_PORT:-18082}
BACKEND_PORT=${BACKEND_PORT:-19101}
PROXY_BIN=${PROXY_BIN:-}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}
KEEP_TMP=${KEEP_TMP:-0}

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

case $PROTO in
  http) SCHEME=http ;;
  https | h2) SCHEME=https ;;
  *) die "PROTO must be http, https or h2, not '$PROTO'" ;;
esac
case $MODE in
  proxy | cache | gzip) ;;
  *) die "MODE must be proxy, cache or gzip, not '$MODE'" ;;
esac
case $ALGO in
  least_conn) NGINX_ALGO="least_conn;" ;;
  round_robin) NGINX_ALGO="" ;; # nginx's default: no directive
  *) die "ALGO must be least_conn or round_robin, not '$ALGO'" ;;
esac
[[ -z $SIZE || $SIZE =~ ^[1-9][0-9]*$ ]] || die "SIZE must be a number of bytes, not '$SIZE'"
[[ $IDLE =~ ^[0-9]+$ ]] || die "IDLE must be a number, not '$IDLE'"
# Both proxies, the idle holder and wrk need descriptors beyond 1,024.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
for knob in WORKERS BACKEND_WORKERS THREADS CONNS ROUNDS NGINX_PORT PROXY_PORT \
  PROXY_ADMIN_PORT PROXY_TLS_PORT BACKEND_PORT BUILD_TIMEOUT STREAMS; do
  [[ ${!knob} =~ ^[1-9][0-9]*$ ]] || die "$knob must be a positive integer, not '${!knob}'"
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)
INVOCATION="$0${*:+ $*}"

# --- cleanup: everything started below is recorded in PIDS -----------------
PIDS=()
CHILD="" # the wrk or cargo run in progress
TMP=""
POLICY_RC=""
cleanup() {
  local status=$?
  local pid
  trap - EXIT INT TERM
  if [[ -n $CHILD ]]; then kill -TERM "$CHILD" 2>/dev/null || true; wait "$CHILD" 2>/dev/null || true; fi
  if ((${#PIDS[@]})); then
    for pid in "${PIDS[@]}"; do
      kill -TERM "$pid" 2>/dev/null || true
    done
    # Up to 5 s for a graceful stop, then KILL.
    for _ in $(seq 50); do
      local alive=0
      for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then alive=1; fi
      done
      ((alive)) || break
      sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    done
  fi
  if [[ -n $POLICY_RC ]]; then rm -f "$POLICY_RC"; fi
  if [[ -n $TMP && -d $TMP ]]; then
    if ((status != 0)); then
      for f in "$TMP"/*.log; do
        [[ -s $f ]] || continue
        printf -- '--- last lines of %s\n' "$(basename "$f")" >&2
        tail -n 20 "$f" >&2
      done
    fi
    if [[ $KEEP_TMP == 1 ]]; then
      log "kept $TMP"
    else
      rm -rf "$TMP"
    fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools ------------------------------------------------------------------
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if [[ $PROTO == h2 ]]; then command -v h2load >/dev/null || missing+=(nghttp2-client); fi
if [[ $PROTO != http ]]; then command -v openssl >/dev/null || missing+=(openssl); fi
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  # Keep the nginx package from starting its service (policy-rc.d exit 101:
  # "action forbidden"), unless the machine already has a policy.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    POLICY_RC=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC"
    chmod +x "$POLICY_RC"
  fi
  # apt's chatter goes to stderr with the rest of the progress.
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
  if [[ -n $POLICY_RC ]]; then rm -f "$POLICY_RC"; POLICY_RC=""; fi
fi
# Debian has nginx in /usr/sbin, which a non-login root shell may not have on PATH.
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx not found"

# --- helpers ------------------------------------------------------------------
# Whether something listens on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Appends to BACKENDS the first port from $1 on that nobody listens on and
# that is not in TAKEN (a global, so not in a $(...) subshell).
TAKEN=" "
BACKENDS=()
add_backend_port() {
  local p=$1
  while listening "$p" || [[ $TAKEN == *" $p "* ]]; do
    p=$((p + 1))
    ((p < 65536)) || die "no free port from $1"
  done
  TAKEN+="$p "
  BACKENDS+=("$p")
}

require_free() {
  if listening "$1"; then die "port $1 ($2) is taken; set $2 to another"; fi
  TAKEN+="$1 "
}

# Runs a command in the background and waits for it, so that a signal to
# this script runs the traps at once instead of after the command.
run() {
  "$@" &
  CHILD=$!
  local status=0
  wait "$CHILD" || status=$?
  CHILD=""
  return "$status"
}

# Waits until GET http://127.0.0.1:$1$2 answers 2xx, for up to 10 s, while
# process $3 lives.
# ($5: the scheme, http unless given; the run's own certificate is not
# checked.)
wait_http() {
  local port=$1 path=$2 pid=$3 what=$4 scheme=${5:-http}
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || die "$what exited before answering"
    if curl -skf -o /dev/null "$scheme://127.0.0.1:$port$path"; then return 0; fi
    sleep 0.1
  done
  die "$what did not answer on 127.0.0.1:$port$path within 10 s"
}

# wrk's duration syntax (10s, 2m, 1h, or bare seconds) in seconds.
seconds() {
  local d=$1
  case $d in
    *s) echo "${d%s}" ;;
    *m) echo $((${d%m} * 60)) ;;
    *h) echo $((${d%h} * 3600)) ;;
    *) echo "$d" ;;
  esac
}
[[ $(seconds "$DURATION") =~ ^[0-9]+$ ]] || die "DURATION '$DURATION' is not like 10s, 2m"
[[ $(seconds "$WARMUP") =~ ^[0-9]+$ ]] || die "WARMUP '$WARMUP' is not like 2s"

# nginx in the foreground, its prefix and files in $TMP; its pid goes to PIDS.
start_nginx() {
  local name=$1
  "$NGINX" -p "$TMP" -e "$TMP/$name-error.log" -c "$TMP/$name.conf" -g 'daemon off;' \
    >"$TMP/$name-stderr.log" 2>&1 &
  PIDS+=($!)
}

# --- building our proxy (before anything runs) -------------------------------
if [[ -z $PROXY_BIN ]]; then
  log "building the proxy"
  run timeout "$BUILD_TIMEOUT" cargo build -q --profile production --manifest-path "$REPO/Cargo.toml" \
    -p loadbalance-proxy --bin loadbalance-proxy || die "cargo build failed"
  # Where cargo put it: CARGO_TARGET_DIR (relative to here) or the repository's target/.
  target=${CARGO_TARGET_DIR:-$REPO/target}
  [[ $target == /* ]] || target=$PWD/$target
  PROXY_BIN=$target/production/loadbalance-proxy
fi
[[ -x $PROXY_BIN ]] || die "no proxy binary at $PROXY_BIN"

TMP=$(mktemp -d /tmp/loadbalance-nginxbench.XXXXXX)
# nginx's workers drop to an unprivileged user and must reach the temp paths.
chmod 755 "$TMP"
mkdir -p "$TMP"/{client_body,proxy,fastcgi,uwsgi,scgi}_temp

require_free "$NGINX_PORT" NGINX_PORT
require_free "$PROXY_PORT" PROXY_PORT
require_free "$PROXY_ADMIN_PORT" PROXY_ADMIN_PORT
if [[ $PROTO != http ]]; then
  require_free "$PROXY_TLS_PORT" PROXY_TLS_PORT
  # The run's own certificate (P-256, as a server's would be), for both proxies.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null || die "openssl could not make a certificate"
  chmod 644 "$TMP/key.pem"
fi
for _ in 1 2 3; do add_backend_port "$BACKEND_PORT"; done

# Common to both nginx configurations: nothing outside $TMP, no logging of
# requests, and connections that are not recycled during a run (nginx closes
# a keep-alive connection after 1000 requests by default; ours does not).
nginx_common() {
  local name=$1 workers=$2
  cat <<EOF
worker_processes $workers;
pid $TMP/$name.pid;
error_log $TMP/$name-error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_http_common() {
  cat <<EOF
    access_log off;
    default_type text/plain;
    keepalive_requests 1000000;
    client_body_temp_path $TMP/client_body_temp;
    proxy_temp_path $TMP/proxy_temp;
    fastcgi_temp_path $TMP/fastcgi_temp;
    uwsgi_temp_path $TMP/uwsgi_temp;
    scgi_temp_path $TMP/scgi_temp;
EOF
}

# --- backends -----------------------------------------------------------------
BODY="backend %d of the loadbalance nginx benchmark: a short fixed body of one hundred bytes, padded......"
BACKEND_HEADERS=""
if [[ $MODE == gzip ]]; then
  # 4 KiB of HTML: forty lines, which compress as a page does.
  line="<p>backend %d of the loadbalance nginx benchmark, a page of forty lines of text.</p>"
  BODY=$line
  for _ in $(seq 39); do BODY+="\\n$line"; done
  BACKEND_HEADERS="default_type text/html;"
fi
if [[ $MODE == cache ]]; then BACKEND_HEADERS='add_header Cache-Control "max-age=3600";'; fi
BACKEND_BODY=""
if [[ -n $SIZE ]]; then
  # A file of SIZE bytes, served by the backends for every path.
  mkdir -p "$TMP/www"
  head -c "$SIZE" /dev/zero | tr '\0' 'x' >"$TMP/www/body"
  chmod 755 "$TMP/www"
  chmod 644 "$TMP/www/body"
  BACKEND_BODY="root $TMP/www; try_files /body =404;"
fi
{
  nginx_common backends "$BACKEND_WORKERS"
  echo "http {"
  nginx_http_common
  i=1
  for port in "${BACKENDS[@]}"; do
    # shellcheck disable=SC2059 # BODY is the format
    body=$(printf "$BODY" "$i")
    cat <<EOF
    server {
        listen 127.0.0.1:$port;
$(if [[ -n $BACKEND_BODY ]]; then
      echo "        location / { $BACKEND_HEADERS $BACKEND_BODY }"
    else
      echo "        location / { $BACKEND_HEADERS return 200 \"$body\\n\"; }"
    fi)
        location /healthz { return 200 "ok\n"; }
    }
EOF
    i=$((i + 1))
  done
  echo "}"
} >"$TMP/backends.conf"
"$NGINX" -p "$TMP" -e "$TMP/backends-error.log" -c "$TMP/backends.conf" -t -q \
  || die "backends' nginx configuration is invalid"
log "backends on ${BACKENDS[*]} (nginx, $BACKEND_WORKERS worker process(es))"
start_nginx backends
for port in "${BACKENDS[@]}"; do wait_http "$port" /healthz "${PIDS[-1]}" "backend $port"; done

# --- nginx as the proxy ---------------------------------------------------------
{
  nginx_common nginx-proxy "$WORKERS"
  echo "http {"
  nginx_http_common
  echo "    upstream pool {"
  if [[ -n $NGINX_ALGO ]]; then echo "        $NGINX_ALGO"; fi
  for port in "${BACKENDS[@]}"; do echo "        server 127.0.0.1:$port;"; done
  cat <<EOF
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
$(case $PROTO in
  http) echo "        listen 127.0.0.1:$NGINX_PORT;" ;;
  https) echo "        listen 127.0.0.1:$NGINX_PORT ssl;" ;;
  h2) echo "        listen 127.0.0.1:$NGINX_PORT ssl http2;" ;;
esac)
$(if [[ $PROTO != http ]]; then
  echo "        ssl_certificate $TMP/cert.pem;"
  echo "        ssl_certificate_key $TMP/key.pem;"
  echo "        ssl_protocols TLSv1.2 TLSv1.3;"
  echo "        ssl_session_cache shared:SSL:1m;"
fi)
        location / {
            proxy_pass http://pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
$(case $MODE in
  cache)
    echo "            proxy_cache hot;"
    echo "            proxy_cache_lock on;"
    echo "            add_header Cache-Status \$upstream_cache_status;"
    ;;
  gzip)
    echo "            gzip on;"
    echo "            gzip_types text/html;"
    echo "            gzip_min_length 256;"
    echo "            gzip_vary on;"
    ;;
esac)
        }
    }
}
EOF
} >"$TMP/nginx-proxy.conf"
if [[ $MODE == cache ]]; then
  # The cache's zone in memory, its files under $TMP (page-cache backed:
  # hits are read from memory, as ours are).
  sed -i "s|^http {|http {\n    proxy_cache_path $TMP/cache levels=1:2 keys_zone=hot:10m max_size=64m inactive=60m use_temp_path=off;|" \
    "$TMP/nginx-proxy.conf"
fi
"$NGINX" -p "$TMP" -e "$TMP/nginx-proxy-error.log" -c "$TMP/nginx-proxy.conf" -t -q \
  || die "the nginx proxy's configuration is invalid"
log "nginx proxy on $NGINX_PORT ($WORKERS worker processes, $ALGO)"
start_nginx nginx-proxy
NGINX_PROXY_PID=${PIDS[-1]}
wait_http "$NGINX_PORT" / "$NGINX_PROXY_PID" "nginx proxy" "$SCHEME"

# --- our proxy ------------------------------------------------------------------

{
  cat <<EOF
[server]
listen = "127.0.0.1:$PROXY_PORT"
admin = "127.0.0.1:$PROXY_ADMIN_PORT"
workers = $WORKERS
# Idle keep-alive connections kept as long as nginx's keepalive_timeout.
header_timeout_ms = 75000

[[routes]]
name = "all"
host = "*"
path = "/"
pool = "backends"
$(case $MODE in
  cache) echo "cache = true" ;;
  gzip) echo 'compress = { codings = ["gzip"], gzip_level = 1, min_bytes = 256 }' ;;
esac)

[pools.backends]
algorithm = "$ALGO"
EOF
  sep=""
  printf 'backends = ['
  for port in "${BACKENDS[@]}"; do
    printf '%s { server = "127.0.0.1:%s" }' "$sep" "$port"
    sep=","
  done
  printf ' ]\n'
  if [[ $PROTO != http ]]; then
    printf '\n[tls]\nlisten = "127.0.0.1:%s"\n' "$PROXY_TLS_PORT"
    printf 'certificates = [{ names = ["localhost"], cert = "%s", key = "%s" }]\n' \
      "$TMP/cert.pem" "$TMP/key.pem"
  fi
} >"$TMP/proxy.toml"
log "our proxy on $PROXY_PORT ($WORKERS worker threads, $ALGO)"
"$PROXY_BIN" "$TMP/proxy.toml" >>"$TMP/proxy.log" 2>&1 &
PIDS+=($!)
OUR_PID=$!
wait_http "$PROXY_PORT" / "$OUR_PID" "our proxy"
# The port measured: the TLS listener when PROTO is not http.
OUR_PORT=$PROXY_PORT
if [[ $PROTO != http ]]; then
  OUR_PORT=$PROXY_TLS_PORT
  wait_http "$OUR_PORT" / "$OUR_PID" "our proxy's TLS listener" https
fi

# --- both answer 200 --------------------------------------------------------------
for port in "$NGINX_PORT" "$OUR_PORT"; do
  code=$(curl -sk -o "$TMP/check-$port.body" -w '%{http_code}' "$SCHEME://127.0.0.1:$port/")
  [[ $code == 200 ]] || die "127.0.0.1:$port/ answered $code, not 200"
  log "127.0.0.1:$port/ -> 200 $(head -c 40 "$TMP/check-$port.body")..."
  # Each mode's work is done by both: a hit, a gzip body.
  case $MODE in
    cache)
      curl -sk -D "$TMP/check-$port.head" -o /dev/null "$SCHEME://127.0.0.1:$port/"
      grep -qi '^cache-status: .*hit' "$TMP/check-$port.head" || die "127.0.0.1:$port/ is not a cache hit"
      ;;
    gzip)
      curl -sk -H 'Accept-Encoding: gzip' -D "$TMP/check-$port.head" -o /dev/null "$SCHEME://127.0.0.1:$port/"
      grep -qi '^content-encoding: gzip' "$TMP/check-$port.head" || die "127.0.0.1:$port/ did not compress"
      ;;
  esac
done

# --- measuring ----------------------------------------------------------------------
WRK_ARGS=(-t"$THREADS" -c"$CONNS" -d"$DURATION" --latency)
WRK_HEADERS=()
if [[ $MODE == gzip ]]; then WRK_HEADERS=(-H "Accept-Encoding: gzip"); fi
if [[ $CLOSE == 1 ]]; then WRK_HEADERS+=(-H "Connection: close"); fi
WRK_ARGS+=("${WRK_HEADERS[@]}")
WRK_TIMEOUT=$(($(seconds "$DURATION") + 30))

# wrk's latency with its unit (us, ms, s, m) in ms.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000
    else if (u == "m") n *= 60000; else if (u == "h") n *= 3600000
    else if (u != "ms") { print "nan"; exit 1 }
    printf "%.3f\n", n }'
}

CLK_TCK=$(getconf CLK_TCK)
# CPU time, user and system, in clock ticks, of process $1 and its children
# (nginx's workers; our proxy's threads are in its own figure).
cpu_ticks() {
  local pid total=0 f fields
  # shellcheck disable=SC2046 # the children's pids, split on blanks
  for pid in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    f=/proc/$pid/stat
    [[ -r $f ]] || continue
    # After the ")" closing the command name, utime and stime are the 12th
    # and 13th fields.
    read -r -a fields < <(sed 's/.*) //' "$f")
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}

# One measured run of proxy $1 (process $4) on port $2 in round $3: appends
# "name rps p50 p99 errors cpu_us_per_request" to $TMP/results.
# One measured h2load run (PROTO=h2) of proxy $1 (process $4) on port $2 in
# round $3, as measure() below; the latency percentiles from h2load's
# per-request log (its third column, microseconds).
measure_h2() {
  local name=$1 port=$2 round=$3 pid=$4 out rps p50 p99 failed requests ticks cpu
  local url="https://127.0.0.1:$port/" h2=(-t"$THREADS" -c"$CONNS" -m"$STREAMS")
  out=$TMP/h2load-$name-$round.txt
  run timeout $(($(seconds "$WARMUP") + 30)) h2load "${h2[@]}" -D "$(seconds "$WARMUP")" "$url" >/dev/null
  ticks=$(cpu_ticks "$pid")
  run timeout "$WRK_TIMEOUT" h2load "${h2[@]}" -D "$(seconds "$DURATION")" \
    --log-file="$out.log" "$url" >"$out"
  ticks=$(($(cpu_ticks "$pid") - ticks))
  requests=$(awk '/^requests:/ { print $2 }' "$out")
  failed=$(awk '/^requests:/ { print $10 + $12 + $14 }' "$out")
  rps=$(awk '/^finished in/ { gsub(/,/, ""); print $4 }' "$out")
  read -r p50 p99 < <(awk '{ print $3 }' "$out.log" | sort -n \
    | awk '{ v[NR] = $1 } END { if (NR) printf "%.3f %.3f\n", v[int(NR * 0.5) + 1] / 1000, v[int(NR * 0.99) + 1] / 1000 }')
  [[ -n $rps && -n $p50 && -n $p99 ]] || { cat "$out" >&2; die "could not parse h2load's output"; }
  cpu=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="${requests:-0}" \
    'BEGIN { if (n > 0) printf "%.2f", t / hz / n * 1e6; else print 0 }')
  echo "$name $rps $p50 $p99 ${failed:-0} $cpu" >>"$TMP/results"
  printf '   round %d %-6s %8.0f rps  p50 %7.3f ms  p99 %7.3f ms  errors %d  proxy CPU %.1f us/request\n' \
    "$round" "$name" "$rps" "$p50" "$p99" "${failed:-0}" "$cpu" >&2
}

# Holds IDLE keep-alive connections to port $1, each after one answer,
# until killed; its pid in IDLE_PID.
IDLE_PID=""
hold_idle() {
  ((IDLE > 0)) || return 0
  python3 - "$1" "$IDLE" "$SCHEME" >"$TMP/idle-$1.log" 2>&1 <<'PY' &
import resource, socket, ssl, sys, time
port, count, scheme = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
resource.setrlimit(resource.RLIMIT_NOFILE, (count + 64, count + 64))
context = ssl._create_unverified_context() if scheme == "https" else None
held = []
for _ in range(count):
    conn = socket.create_connection(("127.0.0.1", port))
    if context:
        conn = context.wrap_socket(conn, server_hostname="localhost")
    conn.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    conn.recv(65536)
    held.append(conn)
print(f"holding {len(held)}", flush=True)
time.sleep(3600)
PY
  IDLE_PID=$!
  PIDS+=("$IDLE_PID")
  for _ in $(seq 300); do
    grep -q holding "$TMP/idle-$1.log" 2>/dev/null && return 0
    kill -0 "$IDLE_PID" 2>/dev/null || die "the idle connections could not be opened: $(cat "$TMP/idle-$1.log")"
    sleep 0.1
  done
  die "the idle connections took more than 30 s to open"
}

release_idle() {
  if [[ -n $IDLE_PID ]]; then
    kill -TERM "$IDLE_PID" 2>/dev/null || true
    wait "$IDLE_PID" 2>/dev/null || true
    IDLE_PID=""
  fi
}

measure() {
  local name=$1 port=$2 round=$3 pid=$4 out rps p50 p99 non2xx sockerr requests ticks cpu
  hold_idle "$port"
  measure_one "$@"
  release_idle
}

measure_one() {
  local name=$1 port=$2 round=$3 pid=$4 out rps p50 p99 non2xx sockerr requests ticks cpu
  if [[ $PROTO == h2 ]]; then
    measure_h2 "$@"
    return
  fi
  out=$TMP/wrk-$name-$round.txt
  run timeout $(($(seconds "$WARMUP") + 30)) wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" \
    "${WRK_HEADERS[@]}" "$SCHEME://127.0.0.1:$port/" >/dev/null
  ticks=$(cpu_ticks "$pid")
  run timeout "$WRK_TIMEOUT" wrk "${WRK_ARGS[@]}" "$SCHEME://127.0.0.1:$port/" >"$out"
  ticks=$(($(cpu_ticks "$pid") - ticks))
  requests=$(awk '$2 == "requests" && $3 == "in" { print $1 }' "$out")
  cpu=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="${requests:-0}" \
    'BEGIN { if (n > 0) printf "%.2f", t / hz / n * 1e6; else print 0 }')
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  p50=$(awk '$1 == "50%" { print $2 }' "$out")
  p99=$(awk '$1 == "99%" { print $2 }' "$out")
  [[ -n $rps && -n $p50 && -n $p99 ]] || { cat "$out" >&2; die "could not parse wrk's output"; }
  p50=$(to_ms "$p50")
  p99=$(to_ms "$p99")
  # Failed requests: non-2xx/3xx answers plus socket errors (connect, read,
  # write, timeout), both printed by wrk only when not zero.
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
  sockerr=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$out")
  echo "$name $rps $p50 $p99 $((${non2xx:-0} + ${sockerr:-0})) $cpu" >>"$TMP/results"
  printf '   round %d %-6s %8.0f rps  p50 %7.3f ms  p99 %7.3f ms  errors %d  proxy CPU %.1f us/request\n' \
    "$round" "$name" "$rps" "$p50" "$p99" "$((${non2xx:-0} + ${sockerr:-0}))" "$cpu" >&2
}

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ $PROTO == h2 ]]; then
  LOAD_TOOL="h2load -t$THREADS -c$CONNS -m$STREAMS -D $(seconds "$DURATION") https://127.0.0.1:PORT/"
else
  LOAD_TOOL="wrk ${WRK_ARGS[*]} $SCHEME://127.0.0.1:PORT/"
fi
log "$LOAD_TOOL, warm-up $WARMUP each, $ROUNDS round(s); load average $LOAD"
: >"$TMP/results"
for round in $(seq "$ROUNDS"); do
  measure nginx "$NGINX_PORT" "$round" "$NGINX_PROXY_PID"
  measure ours "$OUR_PORT" "$round" "$OUR_PID"
done

# Median of column $2 over the rows of proxy $1.
median() {
  awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$TMP/results" | sort -g \
    | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
total() { awk -v n="$1" '$1 == n { s += $5 } END { print s + 0 }' "$TMP/results"; }

NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
# `wrk -v` prints its version line, then its usage, and exits 1.
WRK_VERSION=$( (wrk -v 2>&1 || true) | head -n 1 | sed 's/ *Copyright.*//')
RUSTC_VERSION=$(rustc -V 2>/dev/null || echo "rustc not found")
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
CPUS=$(nproc)

read -r n_rps n_p50 n_p99 n_cpu < <(echo "$(median nginx 2) $(median nginx 3) $(median nginx 4) $(median nginx 6)")
read -r o_rps o_p50 o_p99 o_cpu < <(echo "$(median ours 2) $(median ours 3) $(median ours 4) $(median ours 6)")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

SCENARIO=""
if [[ -n $SIZE ]]; then SCENARIO+=", $SIZE-byte bodies"; fi
if [[ $CLOSE == 1 ]]; then SCENARIO+=", a new connection a request"; fi
if ((IDLE > 0)); then SCENARIO+=", $IDLE idle connections beside"; fi

table() {
  cat <<EOF
Proxy benchmark: loadbalance-proxy against nginx ($ALGO, 3 backends, $PROTO, $MODE$SCENARIO)

- command: \`MODE=$MODE SIZE=$SIZE CLOSE=$CLOSE IDLE=$IDLE PROTO=$PROTO ALGO=$ALGO WORKERS=$WORKERS BACKEND_WORKERS=$BACKEND_WORKERS THREADS=$THREADS CONNS=$CONNS DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS bash $INVOCATION\`
- load: \`$LOAD_TOOL\`, $WARMUP warm-up before each run, proxies alternating, median of $ROUNDS round(s)
- proxies: nginx $WORKERS worker processes, ours $WORKERS worker threads; backends: one nginx, $BACKEND_WORKERS worker process(es), ~100-byte bodies
- versions: $NGINX_VERSION; $WRK_VERSION; $RUSTC_VERSION; loadbalance $COMMIT
- machine: wrk, both proxies and the backends share the same $CPUS CPU(s) on loopback (load average $LOAD before the runs): the figures compare the two proxies here, not their capacity
- proxy CPU: user + system time of the proxy's processes (nginx: master and workers) during the measured run, per request

| proxy | requests/s | p50 (ms) | p99 (ms) | failed requests | proxy CPU (µs/request) |
| --- | ---: | ---: | ---: | ---: | ---: |
$(printf '| nginx | %.0f | %.3f | %.3f | %d | %.1f |' "$n_rps" "$n_p50" "$n_p99" "$(total nginx)" "$n_cpu")
$(printf '| ours | %.0f | %.3f | %.3f | %d | %.1f |' "$o_rps" "$o_p50" "$o_p99" "$(total ours)" "$o_cpu")
| ours / nginx | $(ratio "$o_rps" "$n_rps") | $(ratio "$o_p50" "$n_p50") | $(ratio "$o_p99" "$n_p99") | | $(ratio "$o_cpu" "$n_cpu") |

Each run (requests/s, p50 ms, p99 ms, failed, proxy CPU µs/request), in the order run:
$(awk '{ r[$1]++; printf "- round %d, %s: %.0f, %.3f, %.3f, %d, %.1f\n", r[$1], $1, $2, $3, $4, $5, $6 }' "$TMP/results")
EOF
}

echo
table
if [[ -n $OUT ]]; then
  table >"$OUT"
  log "table written to $OUT"
fi
