#!/usr/bin/env bash
# Instructions and heap allocations per request of a generated gateway, under valgrind: the
# gateway runs with one worker under callgrind (or dhat), `specgate echo --fixed hello` is the
# upstream, and CONNECTIONS keep-alive curl clients send exactly REQUESTS requests in total to
# PATH. Valgrind's counts are deterministic, so other processes on the machine do not move
# them (unlike requests/s).
#
#   bench/profile.sh [GATEWAY] [PATH]        # default: multi-backend /catalog/item/1
#
# TOOL=callgrind (default): collection is switched on after start-up and off after the load,
#   so the total Ir divided by REQUESTS is the cost of one request (client connection set-up
#   included, spread over the requests of each connection). Writes $OUT/callgrind.out and
#   $OUT/annotate.txt (the top functions, inclusive).
# TOOL=dhat: runs the load twice, with REQUESTS and 2*REQUESTS, and reports the difference of
#   the total blocks allocated divided by REQUESTS (start-up and shutdown cancel out).
# BINARY=FILE profiles another build of the gateway (e.g. one from before a change).
# GATEWAY_ENV="K=V ..." sets the gateway's variables; {UP} stands for the upstream's URL.
# Everything listens on 127.0.0.1; binaries come from CARGO_TARGET_DIR (or target).
set -euo pipefail
cd "$(dirname "$0")/.."

GATEWAY="${1:-multi-backend}"
REQ_PATH="${2:-/catalog/item/1}"
TOOL="${TOOL:-callgrind}"
REQUESTS="${REQUESTS:-20000}"
CONNECTIONS="${CONNECTIONS:-8}"
UP_PORT="${UP_PORT:-18480}"
GW_PORT="${GW_PORT:-18481}"
OUT="${OUT:-/tmp/specgate-profile}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
UP="http://127.0.0.1:$UP_PORT"
DEFAULT_ENV='USERS_URL={UP} ORDERS_URL={UP} CATALOG_URL={UP}'
GATEWAY_ENV="${GATEWAY_ENV:-$DEFAULT_ENV}"

command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
if [ -z "${BINARY:-}" ]; then
  cargo build --release --quiet -p specgate -p "$GATEWAY"
  BINARY="$TARGET_DIR/release/$GATEWAY"
fi
mkdir -p "$OUT"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

"$TARGET_DIR/release/specgate" echo --host 127.0.0.1 --port "$UP_PORT" --fixed hello 2>/dev/null &
pids+=($!)
envs=()
for kv in $GATEWAY_ENV; do envs+=("${kv//\{UP\}/$UP}"); done

wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# Sends $1 requests over CONNECTIONS keep-alive connections (curl reuses its connection for
# the URLs of one glob), in parallel; fails unless every answer is 200.
load() {
  local total=$1 per=$(( $1 / CONNECTIONS )) i pids_l=() codes
  codes=$(mktemp)
  urls=$(mktemp)
  for i in $(seq 1 "$per"); do printf 'url = "http://127.0.0.1:%s%s"\noutput = /dev/null\n' "$GW_PORT" "$REQ_PATH"; done >"$urls"
  for i in $(seq 1 "$CONNECTIONS"); do
    timeout 600 curl -s -w '%{http_code}\n' --config "$urls" >>"$codes" &
    pids_l+=($!)
  done
  for p in "${pids_l[@]}"; do wait "$p"; done
  local ok
  ok=$(grep -c '^200$' "$codes" || true)
  rm -f "$codes" "$urls"
  if [ "$ok" -ne $((per * CONNECTIONS)) ]; then
    echo "only $ok of $((per * CONNECTIONS)) requests answered 200" >&2
    return 1
  fi
}

# Runs the gateway under valgrind with `$@` as tool options, returns its pid in $gw.
start() {
  env "${envs[@]}" HOST=127.0.0.1 PORT="$GW_PORT" WORKER_THREADS=1 ACCESS_LOG=off LOG_LEVEL=warn \
    valgrind --quiet "$@" "$BINARY" &
  gw=$!
  pids+=("$gw")
  wait_port "$GW_PORT"
  # One request outside the measurement: lazy initialisation, the first upstream connection.
  curl -s -o /dev/null "http://127.0.0.1:$GW_PORT$REQ_PATH"
}

stop() {
  kill -TERM "$gw"
  wait "$gw" 2>/dev/null || true
}

case "$TOOL" in
  callgrind)
    rm -f "$OUT/callgrind.out"
    start --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out"
    # vgdb names its pipe after $HOST, which the gateway sees as its listen address.
    HOST=127.0.0.1 callgrind_control -i on "$gw" >/dev/null
    load "$REQUESTS"
    HOST=127.0.0.1 callgrind_control -i off "$gw" >/dev/null
    stop
    total=$(awk '/^totals:/ {print $2; exit}' "$OUT/callgrind.out")
    callgrind_annotate --inclusive=yes "$OUT/callgrind.out" >"$OUT/annotate.txt" 2>/dev/null || true
    echo "$GATEWAY $REQ_PATH: $total Ir for $REQUESTS requests over $CONNECTIONS connections = $((total / REQUESTS)) Ir per request"
    echo "annotated: $OUT/annotate.txt, raw: $OUT/callgrind.out"
    ;;
  dhat)
    blocks=()
    for n in "$REQUESTS" $((REQUESTS * 2)); do
      rm -f "$OUT/dhat.$n.json"
      start --tool=dhat --dhat-out-file="$OUT/dhat.$n.json"
      load "$n"
      stop
      blocks+=("$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(p["tbk"] for p in d["pps"]))' "$OUT/dhat.$n.json")")
    done
    per=$(awk -v a="${blocks[0]}" -v b="${blocks[1]}" -v n="$REQUESTS" 'BEGIN { printf "%.1f", (b - a) / n }')
    echo "$GATEWAY $REQ_PATH: ${blocks[0]} blocks with $REQUESTS requests, ${blocks[1]} with $((REQUESTS * 2)): $per allocations per request"
    ;;
  *)
    echo "TOOL must be callgrind or dhat" >&2
    exit 2
    ;;
esac
