#!/usr/bin/env bash
# Cost of tracing on the forward path: generated/multi-backend's `/catalog/{+rest}` (a plain
# urlForwardHandler) in front of `specgate echo --fixed hello`, in these variants, driven
# alternately with wrk so that drift of the machine affects all alike:
#
#   base         BASE_BIN (optional): a gateway built from a commit before trace propagation
#   propagation  no OTLP endpoint: a traceparent is minted per request and sent upstream
#   continued    the same, the client sends a valid traceparent (parsed and continued)
#   otlp-on      OTEL_EXPORTER_OTLP_ENDPOINT at a local sink (`specgate echo --fixed ""`),
#                OTEL_TRACES_SAMPLER=always_on: a server and a client span per request, exported
#   otlp-off     the same endpoint, OTEL_TRACES_SAMPLER=always_off (the SDK path, nothing recorded)
#
#   BASE_BIN=/path/to/old/multi-backend bench/tracing.sh
#
# SKIP_BUILD=1 uses the binaries already built; ECHO_BIN names another `specgate` for the
# upstream and the sink.
#
# Prints, per variant and round, requests/s, p99 and the gateway's CPU time per request (user +
# system time of the process from /proc over the requests wrk completed: unlike requests/s it
# hardly moves when other processes share the machine), then per variant the median ratios to
# the first variant (`base` when given, else `propagation`) and the least CPU per request of
# each variant (the least disturbed round, on a busy machine the best estimate of the cost).
# Everything listens on
# 127.0.0.1; each wrk run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-1}"
PORT0="${PORT0:-18480}"
UP="http://127.0.0.1:$PORT0"
SINK_PORT=$((PORT0 + 1))
TARGET="${CARGO_TARGET_DIR:-target}"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet -p specgate -p multi-backend
ECHO="${ECHO_BIN:-$TARGET/release/specgate}"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

"$ECHO" echo --host 127.0.0.1 --port "$PORT0" --fixed hello 2>/dev/null &
pids+=($!)
"$ECHO" echo --host 127.0.0.1 --port "$SINK_PORT" --fixed "" 2>/dev/null &
pids+=($!)

names=()
ports=()
headers=()
gwpids=()
start() { # name port header binary [VAR=value...]
  local name="$1" port="$2" header="$3" bin="$4"; shift 4
  env "$@" USERS_URL="$UP" ORDERS_URL="$UP" CATALOG_URL="$UP/" HOST=127.0.0.1 PORT="$port" \
    WORKER_THREADS="$THREADS" ACCESS_LOG=off LOG_LEVEL=warn "$bin" &
  pids+=($!)
  gwpids+=($!)
  names+=("$name"); ports+=("$port"); headers+=("$header")
}
TP="traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
GW="$TARGET/release/multi-backend"
n=2
if [ -n "${BASE_BIN:-}" ]; then start base $((PORT0 + n)) "x-bench: 1" "$BASE_BIN"; n=$((n + 1)); fi
start propagation $((PORT0 + n)) "x-bench: 1" "$GW"; n=$((n + 1))
start continued $((PORT0 + n)) "$TP" "$GW"; n=$((n + 1))
start otlp-on $((PORT0 + n)) "x-bench: 1" "$GW" OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" OTEL_TRACES_SAMPLER=always_on; n=$((n + 1))
start otlp-off $((PORT0 + n)) "x-bench: 1" "$GW" OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" OTEL_TRACES_SAMPLER=always_off
for p in "${ports[@]}"; do
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break
    sleep 0.1
  done
done

TICKS=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # port header pid -> "rps p99_ms cpu_us_per_request"
  local out rps p99 before after reqs
  before=$(cpu_ticks "$3")
  out=$(timeout 60 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -H "$2" "http://127.0.0.1:$1/catalog/item/1")
  after=$(cpu_ticks "$3")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "warning: errors on port $1:" >&2; grep "Non-2xx\|Socket errors" <<<"$out" >&2; fi
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  echo "$rps $p99 $(awk -v t=$((after - before)) -v hz="$TICKS" -v n="$reqs" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')"
}

for i in "${!names[@]}"; do run "${ports[$i]}" "${headers[$i]}" "${gwpids[$i]}" >/dev/null; done # warm-up
declare -A rps_of cpu_of
echo "| round | variant | req/s | p99 ms | CPU µs/request |"
echo "|---|---|---:|---:|---:|"
for r in $(seq 1 "$ROUNDS"); do
  for i in "${!names[@]}"; do
    read -r rps p99 cpu < <(run "${ports[$i]}" "${headers[$i]}" "${gwpids[$i]}")
    rps_of["${names[$i]},$r"]="$rps"
    cpu_of["${names[$i]},$r"]="$cpu"
    echo "| $r | ${names[$i]} | $rps | $p99 | $cpu |"
  done
done
ref="${names[0]}"
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
for name in "${names[@]}"; do
  ratios=()
  cpus=()
  for r in $(seq 1 "$ROUNDS"); do
    ratios+=("$(awk -v a="${rps_of[$name,$r]}" -v b="${rps_of[$ref,$r]}" 'BEGIN { printf "%.3f", a / b }')")
    cpus+=("$(awk -v a="${cpu_of[$name,$r]}" -v b="${cpu_of[$ref,$r]}" 'BEGIN { printf "%.3f", a / b }')")
  done
  own=()
  for r in $(seq 1 "$ROUNDS"); do own+=("${cpu_of[$name,$r]}"); done
  least=$(printf '%s\n' "${own[@]}" | sort -n | head -1)
  echo "$name / $ref: req/s median $(median "${ratios[@]}") (${ratios[*]}); CPU per request median $(median "${cpus[@]}") (${cpus[*]}); least CPU per request $least µs"
done
echo "(worker threads $THREADS, $CONNECTIONS connections, $DURATION per run, $ROUNDS rounds)"
