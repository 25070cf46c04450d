#!/usr/bin/env bash
# `specgate dev` as a user feels it: the time from saving a new route to the route answering,
# and the longest stretch in which an existing route does not answer while the gateway is
# swapped. Runs `specgate echo` as the upstream and `specgate dev` on a copy of
# specs/path-modes, then adds a route ROUNDS times. Everything listens on 127.0.0.1.
#
#   bench/dev_loop.sh
#
# The copy lives in the target directory so that only its first run builds the runtime's
# dependency tree (a few minutes); later runs rebuild the gateway crate only.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"
PORT="${PORT:-18190}"
UP_PORT="${UP_PORT:-18191}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="$CARGO_TARGET_DIR/debug/specgate"
PROJECT="$CARGO_TARGET_DIR/specgate-dev-bench/dev-loop"
BASE="http://127.0.0.1:$PORT"

cargo build -q -p specgate
rm -rf "$PROJECT/config" && mkdir -p "$PROJECT"
cp -r specs/path-modes/config "$PROJECT/config"
echo "API_URL=http://127.0.0.1:$UP_PORT" > "$PROJECT/.env"
ORIGINAL="$(cat "$PROJECT/config/routes.oas.json")"
LOG="$(mktemp)"

"$BIN" echo --port "$UP_PORT" > /dev/null 2>&1 & UP=$!
"$BIN" dev "$PROJECT" --port "$PORT" > "$LOG" 2>&1 & DEV=$!
cleanup() {
  kill -TERM "$DEV" 2>/dev/null && wait "$DEV" 2>/dev/null || true
  kill "$UP" 2>/dev/null || true
  rm -f "$LOG"
}
trap cleanup EXIT

code() { curl -s -o /dev/null -m 1 -w '%{http_code}' "$BASE$1" || true; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

start=$(now_ms)
until [ "$(code /users/me)" = 200 ]; do
  if [ $(( $(now_ms) - start )) -gt 900000 ]; then echo "no gateway after 900 s:"; cat "$LOG"; exit 1; fi
  sleep 0.2
done
echo "first start: $(( ($(now_ms) - start) / 1000 )) s ($(grep -o 'built in [0-9.]* s' "$LOG" | tail -1))"

for i in $(seq 1 "$ROUNDS"); do
  route='    "/bench-'"$i"'": { "get": { "operationId": "bench'"$i"'", "x-zuplo-route": { "handler": { "export": "urlForwardHandler", "module": "$import(@zuplo/runtime)", "options": { "baseUrl": "${env.API_URL}" } } } } },'
  printf '%s\n' "$ORIGINAL" | awk -v r="$route" '{ print } /"paths": \{/ && !done { print r; done = 1 }' > "$PROJECT/config/routes.oas.json"
  saved=$(now_ms); last_ok=$saved; gap=0
  until [ "$(code "/bench-$i")" = 200 ]; do
    t=$(now_ms)
    if [ "$(code /users/me)" = 200 ]; then last_ok=$t; elif [ $(( t - last_ok )) -gt "$gap" ]; then gap=$(( t - last_ok )); fi
    if [ $(( t - saved )) -gt 300000 ]; then echo "route $i not served after 300 s:"; cat "$LOG"; exit 1; fi
  done
  served=$(( $(now_ms) - saved ))
  sleep 0.5 # the summary line follows the gateway's first answer
  echo "round $i: saved -> served ${served} ms ($(grep -o 'built in [0-9.]* s' "$LOG" | tail -1)), longest unanswered stretch ${gap} ms"
  sleep 1
done
