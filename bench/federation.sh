#!/usr/bin/env bash
# A local:// call against the same call over HTTP on loopback. The federated build's edge
# gateway forwards to its orders gateway in process (A: /orders/1, `baseUrl` local://orders),
# or to a separately running orders gateway (B: /via-env/1 with
# ORDERS_GATEWAY=http://127.0.0.1:PORT). Both end at the same orders route and policy (API key)
# and the same upstream (`specgate echo --fixed hello`).
#
# Per run (wrk -t1, bounded by DURATION and a timeout; A and B alternate so that drift of the
# machine affects both alike): requests/s, p50, p99, and the CPU time the gateway processes
# (the federated binary, plus the separate orders gateway for B) spent per request, read
# from /proc before and after. PACE_MS=N makes every connection wait N ms between requests
# (a steady rate below saturation, so latencies are those of an unsaturated gateway).
#
# The separate orders gateway is generated from specs/federated/orders into
# $CARGO_TARGET_DIR/bench/orders-gateway and built in release with this workspace's target
# directory. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-1}"
UP_PORT="${UP_PORT:-18380}"
GW_PORT="${GW_PORT:-18381}"
ORDERS_PORT="${ORDERS_PORT:-18382}"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet -p specgate -p federated
crate="$TARGET/bench/orders-gateway"
"$TARGET/release/specgate" generate specs/federated/orders --name orders-gateway --out "$crate" 2>/dev/null
cp Cargo.lock "$crate/Cargo.lock"
CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet --manifest-path "$crate/Cargo.toml"

keys="$(mktemp -d)/api-keys.json"
key=$("$TARGET/release/specgate" keys create --file "$keys" --consumer bench 2>/dev/null | awk '/^ *zpka_/ {print $1}')

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "nothing on port $1" >&2; exit 1; }

"$TARGET/release/specgate" echo --host 127.0.0.1 --port "$UP_PORT" --fixed hello 2>/dev/null &
pids+=($!)
common=(API_KEYS_FILE="$keys" HOST=127.0.0.1 WORKER_THREADS="$THREADS" ACCESS_LOG=off LOG_LEVEL=warn)
env "${common[@]}" ORDERS_BACKEND_URL="http://127.0.0.1:$UP_PORT" PORT="$ORDERS_PORT" "$TARGET/release/orders-gateway" &
orders_pid=$!
pids+=("$orders_pid")
env "${common[@]}" ORDERS_BACKEND_URL="http://127.0.0.1:$UP_PORT" ORDERS_GATEWAY="http://127.0.0.1:$ORDERS_PORT" PORT="$GW_PORT" \
  "$TARGET/release/federated" &
fed_pid=$!
pids+=("$fed_pid")
wait_port "$UP_PORT"; wait_port "$ORDERS_PORT"; wait_port "$GW_PORT"

script=()
if [ -n "${PACE_MS:-}" ]; then
  pace_lua=$(mktemp --suffix=.lua)
  echo "function delay() return ${PACE_MS} end" >"$pace_lua"
  script=(-s "$pace_lua")
fi
ticks() { # CPU clock ticks (user + system) of the given processes
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
ms() { awk -v v="$1" 'BEGIN { if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v }'; }
hz=$(getconf CLK_TCK)
run() { # path -> "rps p50_ms p99_ms cpu_us_per_request"
  local out before after n
  before=$(ticks "$fed_pid" "$orders_pid")
  out=$(timeout 60 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${script[@]}" -H "authorization: Bearer $key" "http://127.0.0.1:$GW_PORT$1")
  after=$(ticks "$fed_pid" "$orders_pid")
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "warning: errors on $1:" >&2; grep "Non-2xx\|Socket errors" <<<"$out" >&2; fi
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(ms "$(awk '$1=="50%" {print $2}' <<<"$out")") $(ms "$(awk '$1=="99%" {print $2}' <<<"$out")") $(awk -v d=$((after - before)) -v n="$n" -v hz="$hz" 'BEGIN { printf "%.1f", d / hz / n * 1e6 }')"
}

run /orders/1 >/dev/null # warm-up
run /via-env/1 >/dev/null
echo "| round | A req/s | A p50 ms | A p99 ms | A CPU µs/req | B req/s | B p50 ms | B p99 ms | B CPU µs/req |"
echo "|---|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  read -r a_rps a_p50 a_p99 a_cpu < <(run /orders/1)
  read -r b_rps b_p50 b_p99 b_cpu < <(run /via-env/1)
  echo "| $r | $a_rps | $a_p50 | $a_p99 | $a_cpu | $b_rps | $b_p50 | $b_p99 | $b_cpu |"
done
echo
echo "A = /orders/1 (edge -> local://orders in process), B = /via-env/1 (edge -> HTTP -> orders gateway); worker threads $THREADS per gateway, $CONNECTIONS connections, $DURATION per run${PACE_MS:+, paced $PACE_MS ms}"
