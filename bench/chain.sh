#!/usr/bin/env bash
# Cost of a policy chain: the same forward route with no policy and with five header/query
# policies (policy-showcase's /bench/plain and /bench/chain), driven alternately with wrk so
# that drift of the machine affects both alike. Prints requests/s and p99 per round and the
# median ratio. Everything listens on 127.0.0.1; each run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-1}"
UP_PORT="${UP_PORT:-18380}"
GW_PORT="${GW_PORT:-18381}"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet -p specgate -p policy-showcase

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

target/release/specgate echo --host 127.0.0.1 --port "$UP_PORT" --fixed hello 2>/dev/null &
pids+=($!)
API_URL="http://127.0.0.1:$UP_PORT" GATEWAY_SECRET=bench HOST=127.0.0.1 PORT="$GW_PORT" \
  WORKER_THREADS="$THREADS" ACCESS_LOG=off LOG_LEVEL=warn target/release/policy-showcase &
pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$GW_PORT") 2>/dev/null && break
  sleep 0.1
done

run() { # path -> "rps p99_ms"
  local out
  out=$(timeout 60 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$GW_PORT$1")
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "warning: errors in $1:" >&2; grep "Non-2xx\|Socket errors" <<<"$out" >&2; fi
  echo "$rps $p99"
}

run /bench/plain >/dev/null # warm-up
ratios=()
echo "| round | plain req/s | plain p99 ms | chain req/s | chain p99 ms | chain/plain |"
echo "|---|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  read -r prps pp99 < <(run /bench/plain)
  read -r crps cp99 < <(run /bench/chain)
  ratio=$(awk -v a="$crps" -v b="$prps" 'BEGIN { printf "%.3f", a / b }')
  ratios+=("$ratio")
  echo "| $r | $prps | $pp99 | $crps | $cp99 | $ratio |"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo
echo "median chain/plain throughput: $median (worker threads: $THREADS, connections: $CONNECTIONS, $DURATION per run)"
