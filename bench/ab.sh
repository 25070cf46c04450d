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

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet -p specgate -p "$GATEWAY"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

target/release/specgate echo --host 127.0.0.1 --port "$UP_PORT" --fixed hello 2>/dev/null &
pids+=($!)
envs=()
for kv in ${GATEWAY_ENV:-}; do envs+=("${kv//\{UP\}/$UP}"); done
env "${envs[@]}" HOST=127.0.0.1 PORT="$GW_PORT" WORKER_THREADS="$THREADS" ACCESS_LOG=off LOG_LEVEL=warn \
  "target/release/$GATEWAY" &
pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$GW_PORT") 2>/dev/null && break
  sleep 0.1
done

script=()
if [ -n "${PACE_MS:-}" ]; then
  pace_lua=$(mktemp --suffix=.lua)
  echo "function delay() return ${PACE_MS} end" >"$pace_lua"
  script=(-s "$pace_lua")
fi

run() { # path -> "rps p99_ms"
  local out rps p99 p50
  out=$(timeout 60 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${script[@]}" -H "$HEADER" "http://127.0.0.1:$GW_PORT$1")
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "warning: errors on $1:" >&2; grep "Non-2xx\|Socket errors" <<<"$out" >&2; fi
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  [ -n "${PACE_MS:-}" ] && echo "  $1: $rps req/s, p50 ${p50} ms" >&2
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  echo "$rps $p99"
}

run "$PATH_A" >/dev/null # warm-up
run "$PATH_B" >/dev/null
ratios=()
echo "| round | A req/s | A p99 ms | B req/s | B p99 ms | B/A |"
echo "|---|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  read -r arps ap99 < <(run "$PATH_A")
  read -r brps bp99 < <(run "$PATH_B")
  ratio=$(awk -v a="$brps" -v b="$arps" 'BEGIN { printf "%.3f", a / b }')
  ratios+=("$ratio")
  echo "| $r | $arps | $ap99 | $brps | $bp99 | $ratio |"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo
echo "A = $PATH_A, B = $PATH_B on $GATEWAY; median B/A throughput: $median (worker threads $THREADS, $CONNECTIONS connections, $DURATION per run)"
