#!/usr/bin/env bash
# Plain forward through nginx, through the hyper floor (bench/floor: a bare hyper HTTP/1 proxy,
# one upstream connection per client connection, nothing else) and through the generated
# gateway (generated/benchmark, GET /plain/items/1), all with one worker, in front of the same
# `specgate echo --fixed hello` upstream. Targets are driven in turn, ROUNDS times, so drift of
# the machine affects all alike. For each run: requests/s and the CPU time the proxy process
# spent per request, user and kernel (from /proc/PID/stat; nginx: its worker). The medians
# show how much of the gateway's cost is hyper's own and how much the gateway adds.
#
#   bench/floor.sh            # ROUNDS=5 DURATION=4 (seconds) CONNECTIONS=32
#
# Everything listens on 127.0.0.1; every wrk run is bounded by DURATION. Installs nginx and
# wrk if missing; builds in release (binaries in CARGO_TARGET_DIR or target).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-4}"
CONNECTIONS="${CONNECTIONS:-32}"
UP_PORT="${UP_PORT:-18580}"
NGINX_PORT=$((UP_PORT + 1)); FLOOR_PORT=$((UP_PORT + 2)); GW_PORT=$((UP_PORT + 3))
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
TMP="$(mktemp -d)"

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --quiet -p specgate -p benchmark
cargo build --release --quiet --manifest-path bench/floor/Cargo.toml --target-dir "$TARGET_DIR/floor"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM

wait_port() {
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1/plain/items/1" && return 0
    sleep 0.1
  done
  echo "nothing answers on 127.0.0.1:$1" >&2; exit 1
}

"$TARGET_DIR/release/specgate" echo --host 127.0.0.1 --port "$UP_PORT" --fixed hello >/dev/null 2>&1 &
pids+=($!)
wait_port "$UP_PORT"

mkdir -p "$TMP/nginx/logs" "$TMP/nginx/tmp"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    tcp_nodelay on;
    keepalive_requests 1000000;
    client_body_temp_path $TMP/nginx/tmp/client_body;
    proxy_temp_path $TMP/nginx/tmp/proxy;
    fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
    uwsgi_temp_path $TMP/nginx/tmp/uwsgi;
    scgi_temp_path $TMP/nginx/tmp/scgi;
    upstream backend {
        server 127.0.0.1:$UP_PORT;
        keepalive 256;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location /plain/ { proxy_pass http://backend; }
    }
}
EOF
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/logs/error.log" >/dev/null 2>&1 &
nginx_master=$!; pids+=($nginx_master)
"$TARGET_DIR/floor/release/hyper-floor" "127.0.0.1:$UP_PORT" "$FLOOR_PORT" &
pids+=($!); floor_pid=$!
echo '[]' >"$TMP/keys.json"
UP="http://127.0.0.1:$UP_PORT" API_KEYS_FILE="$TMP/keys.json" ACCESS_LOG=off LOG_LEVEL=warn WORKER_THREADS=1 \
  HOST=127.0.0.1 PORT="$GW_PORT" "$TARGET_DIR/release/benchmark" >/dev/null 2>&1 &
pids+=($!); gw_pid=$!
wait_port "$NGINX_PORT"; wait_port "$FLOOR_PORT"; wait_port "$GW_PORT"
nginx_worker=$(ps -o pid= --ppid "$nginx_master" | head -1 | tr -d ' ')

declare -A PID=([nginx]=$nginx_worker [hyper-floor]=$floor_pid [specgate]=$gw_pid)
declare -A PORT=([nginx]=$NGINX_PORT [hyper-floor]=$FLOOR_PORT [specgate]=$GW_PORT)
tick=$(getconf CLK_TCK)
results="$TMP/results"
for round in $(seq 1 "$ROUNDS"); do
  for name in nginx hyper-floor specgate; do
    url="http://127.0.0.1:${PORT[$name]}/plain/items/1"
    wrk -t1 -c"$CONNECTIONS" -d1s "$url" >/dev/null
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/${PID[$name]}/stat")
    out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url")
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/${PID[$name]}/stat")
    n=$(awk '/requests in/{print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
    awk -v name="$name" -v round="$round" -v n="$n" -v rps="$rps" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v t="$tick" \
      'BEGIN { printf "%s %s %.0f %.2f %.2f\n", name, round, rps, u / t / n * 1e6, s / t / n * 1e6 }' | tee -a "$results"
  done
done

median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
echo
echo "| Proxy (1 worker) | Requests/s (median) | CPU user µs/request | CPU kernel µs/request | Requests/s ÷ nginx |"
echo "|---|---:|---:|---:|---:|"
nginx_rps=$(awk '$1 == "nginx" {print $3}' "$results" | median)
for name in nginx hyper-floor specgate; do
  rps=$(awk -v n="$name" '$1 == n {print $3}' "$results" | median)
  user=$(awk -v n="$name" '$1 == n {print $4}' "$results" | median)
  sys=$(awk -v n="$name" '$1 == n {print $5}' "$results" | median)
  echo "| $name | $rps | $user | $sys | $(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN {printf "%.2f", a / b}') |"
done
