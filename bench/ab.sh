#!/usr/bin/env bash
# A/B throughput of two routes of one generated gateway, driven alternately with wrk so that
# drift of the machine affects both alike. Prints requests/s and p99 per round and the median
# B/A ratio. Everything listens on 127.0.0.1; each wrk run is bounded by DURATION.
#
#   bench/ab.sh GATEWAY PATH_A PATH_B [HEADER]
#
# GATEWAY_ENV holds the gateway's variables as "K=V K=V"; {UP} in a value stands for the
# upstream's URL. HEADER (for example "authorization: Bearer ...") is sent on both routes.
# PACE_MS=N makes every connection wait N ms between its requests (a wrk Lua `delay`), so the
# load is a steady rate well below saturation (about CONNECTIONS * 1000 / (N + latency)
# requests/s) and the latencies are those of an unsaturated gateway.
# BINARY_A=FILE serves the A runs from another build of the gateway (started next to the fresh
# build, on its own port): a before/after comparison of one route, e.g.
#   BINARY_A=/tmp/multi-backend-before bench/ab.sh multi-backend /catalog/item/1 /catalog/item/1
# Binaries are taken from CARGO_TARGET_DIR when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."

GATEWAY="$1"; PATH_A="$2"; PATH_B="$3"; HEADER="${4:-x-bench: 1}"
DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-1}"
UP_PORT="${UP_PORT:-18380}"
GW_PORT="${GW_PORT:-18381}"
UP="http://127.0.0.1:$UP_PORT"
GW_A_PORT="$GW_PORT"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet -p specgate -p "$GATEWAY"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

"$TARGET_DIR/release/specgate" echo --host 127.0.0.1 --port "$UP_PORT" --fixed hello 2>/dev/null &
pids+=($!)
envs=()
for kv in ${GATEWAY_ENV:-}; do envs+=("${kv//\{UP\}/$UP}"); done
declare -A gw_pid
start_gateway() { # binary port
  env "${envs[@]}" HOST=127.0.0.1 PORT="$2" WORKER_THREADS="$THREADS" ACCESS_LOG=off LOG_LEVEL=warn "$1" &
  pids+=($!)
  gw_pid[$2]=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && break
    sleep 0.1
  done
}
start_gateway "$TARGET_DIR/release/$GATEWAY" "$GW_PORT"
if [ -n "${BINARY_A:-}" ]; then
  GW_A_PORT=$((GW_PORT + 1))
  start_gateway "$BINARY_A" "$GW_A_PORT"
fi

script=()
if [ -n "${PACE_MS:-}" ]; then
  pace_lua=$(mktemp --suffix=.lua)
  echo "function delay() return ${PACE_MS} end" >"$pace_lua"
  script=(-s "$pace_lua")
fi

# CPU time (user + system, clock ticks) the process has used so far.
cpu_ticks() { awk '{ line = $0; sub(/^.*\) /, "", line); split(line, f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

run() { # path [port] -> "rps p99_ms cpu_us_per_request"
  local out rps p99 p50 port=${2:-$GW_PORT} before after requests cpu
  before=$(cpu_ticks "${gw_pid[$port]}")
  out=$(timeout 60 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${script[@]}" -H "$HEADER" "http://127.0.0.1:$port$1")
  after=$(cpu_ticks "${gw_pid[$port]}")
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "warning: errors on $1:" >&2; grep "Non-2xx\|Socket errors" <<<"$out" >&2; fi
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  [ -n "${PACE_MS:-}" ] && echo "  $1: $rps req/s, p50 ${p50} ms" >&2
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  # The gateway's CPU per request: unlike requests/s, hardly moved by other processes
  # competing for the cores.
  cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0) }')
  echo "$rps $p99 $cpu"
}

run "$PATH_A" "$GW_A_PORT" >/dev/null # warm-up
run "$PATH_B" >/dev/null
ratios=()
cpu_ratios=()
echo "| round | A req/s | A p99 ms | A CPU µs/req | B req/s | B p99 ms | B CPU µs/req | B/A req/s | B/A CPU |"
echo "|---|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  read -r arps ap99 acpu < <(run "$PATH_A" "$GW_A_PORT")
  read -r brps bp99 bcpu < <(run "$PATH_B")
  ratio=$(awk -v a="$brps" -v b="$arps" 'BEGIN { printf "%.3f", a / b }')
  cpu_ratio=$(awk -v a="$bcpu" -v b="$acpu" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
  ratios+=("$ratio")
  cpu_ratios+=("$cpu_ratio")
  echo "| $r | $arps | $ap99 | $acpu | $brps | $bp99 | $bcpu | $ratio | $cpu_ratio |"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "A = $PATH_A${BINARY_A:+ on $BINARY_A}, B = $PATH_B on $GATEWAY; median B/A throughput: $(median "${ratios[@]}"), median B/A CPU per request: $(median "${cpu_ratios[@]}") (worker threads $THREADS, $CONNECTIONS connections, $DURATION per run)"
