#!/usr/bin/env bash
# Every scenario of issue 27 beside nginx, one run.sh each, and one table
# of the ratios (ours / nginx) at the end: plain HTTP/1.1 keep-alive with
# small and 64 KiB bodies, a new connection a request, HTTPS, HTTP/2 over
# TLS, cache hits, gzip, and 1,000 idle keep-alive connections beside the
# load.
#
#     bash examples/proxy/benches/nginx/matrix.sh
#     DURATION=5s ROUNDS=2 OUT=matrix.md bash examples/proxy/benches/nginx/matrix.sh
#
# The knobs of run.sh (DURATION, WARMUP, ROUNDS, WORKERS, CONNS, ...) apply
# to every scenario; SCENARIOS picks some by name (default: all). The
# proxy is built once, before the first scenario.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
OUT=${OUT:-}
ALL="small large close https h2 cache gzip idle"
SCENARIOS=${SCENARIOS:-$ALL}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

TMP=$(mktemp -d /tmp/loadbalance-matrix.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

if [[ -z ${PROXY_BIN:-} ]]; then
  printf '== building the proxy\n' >&2
  timeout "$BUILD_TIMEOUT" cargo build -q --profile production --manifest-path "$REPO/Cargo.toml" \
    -p loadbalance-proxy --bin loadbalance-proxy || die "cargo build failed"
  target=${CARGO_TARGET_DIR:-$REPO/target}
  [[ $target == /* ]] || target=$PWD/$target
  PROXY_BIN=$target/production/loadbalance-proxy
fi
export PROXY_BIN

# The environment of each scenario, beside the caller's knobs.
knobs() {
  case $1 in
    small) echo "" ;;
    large) echo "SIZE=65536" ;;
    close) echo "CLOSE=1" ;;
    https) echo "PROTO=https" ;;
    h2) echo "PROTO=h2" ;;
    cache) echo "MODE=cache" ;;
    gzip) echo "MODE=gzip" ;;
    idle) echo "IDLE=1000" ;;
    *) die "no scenario '$1' (scenarios: $ALL)" ;;
  esac
}

rows=()
for scenario in $SCENARIOS; do
  settings=$(knobs "$scenario")
  printf '== %s %s\n' "$scenario" "$settings" >&2
  # shellcheck disable=SC2086 # the settings are words
  env $settings OUT="$TMP/$scenario.md" bash "$HERE/run.sh" >"$TMP/$scenario.txt" \
    || die "scenario $scenario failed (see its output above)"
  ratios=$(grep '^| ours / nginx' "$TMP/$scenario.md")
  nginx=$(grep '^| nginx |' "$TMP/$scenario.md" | cut -d'|' -f3)
  ours=$(grep '^| ours |' "$TMP/$scenario.md" | cut -d'|' -f3)
  # | ours / nginx | rps | p50 | p99 | | cpu |
  rps=$(cut -d'|' -f3 <<<"$ratios")
  p50=$(cut -d'|' -f4 <<<"$ratios")
  p99=$(cut -d'|' -f5 <<<"$ratios")
  cpu=$(cut -d'|' -f7 <<<"$ratios")
  rows+=("| $scenario ($settings) |$nginx|$ours|$rps|$p50|$p99|$cpu|")
done

table() {
  cat <<EOF
Every scenario beside nginx, ours / nginx (one run.sh each; commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown); DURATION=${DURATION:-10s} ROUNDS=${ROUNDS:-2})

| scenario | nginx requests/s | ours requests/s | requests/s | p50 | p99 | CPU a request |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
$(printf '%s\n' "${rows[@]}")
EOF
}
echo
table
if [[ -n $OUT ]]; then table >"$OUT"; fi
