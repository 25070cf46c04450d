#!/usr/bin/env bash
# Generates the multi-backend example gateway, starts three local echo upstreams and the
# gateway on http://127.0.0.1:${PORT:-9000}, sends a few requests, and keeps serving until Ctrl-C.
# Needs nothing but the Rust toolchain; everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${PORT:-9000}"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

echo "==> building the generator"
cargo build --release --quiet -p specgate
echo "==> generating specs/multi-backend into generated/multi-backend"
target/release/specgate generate specs/multi-backend --out generated/multi-backend
echo "==> building the gateway"
cargo build --release --quiet -p multi-backend

echo "==> starting echo upstreams (users :9101, orders :9102, catalog :9103)"
for spec in users:9101 orders:9102 catalog:9103; do
  target/release/specgate echo --host 127.0.0.1 --port "${spec#*:}" --name "${spec%%:*}" &
  pids+=($!)
done

echo "==> starting the gateway on http://127.0.0.1:$PORT"
USERS_URL=http://127.0.0.1:9101 ORDERS_URL=http://127.0.0.1:9102 CATALOG_URL=http://127.0.0.1:9103 \
  HOST=127.0.0.1 PORT="$PORT" target/release/multi-backend &
pids+=($!)

for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.1
done

show() {
  echo
  echo "\$ curl -s $*"
  if command -v curl >/dev/null; then curl -s "$@"; echo; else echo "(curl not installed)"; fi
}
show "http://127.0.0.1:$PORT/api/users/42?expand=orders"
show "http://127.0.0.1:$PORT/api/orders/2024/open"
show "http://127.0.0.1:$PORT/catalog/shoes/red"
show -i "http://127.0.0.1:$PORT/no/such/route"

echo
echo "The gateway serves on http://127.0.0.1:$PORT (routes: generated/multi-backend/README.md). Ctrl-C stops it."
wait
