#!/usr/bin/env bash
# Cost of rate-limit-inbound (a limit never reached, counted by IP): rate-limits'
# /bench/plain against /bench/limited, first with the in-process limiter, then with a real
# redis-server on loopback (RATE_LIMIT_REDIS_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== in-process limiter"
GATEWAY_ENV="API_URL={UP}" bench/ab.sh rate-limits /bench/plain /bench/limited
echo
echo "== Redis limiter"
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
port="${REDIS_PORT:-18390}"
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
rpid=$!
trap 'kill $rpid 2>/dev/null || true' EXIT
sleep 0.5
GATEWAY_ENV="API_URL={UP} RATE_LIMIT_REDIS_URL=redis://127.0.0.1:$port" bench/ab.sh rate-limits /bench/plain /bench/limited
echo
echo "== Redis limiter at a steady rate below saturation (p99 target: under 2 ms)"
PACE_MS="${PACE_MS:-2}" CONNECTIONS="${PACED_CONNECTIONS:-16}" \
  GATEWAY_ENV="API_URL={UP} RATE_LIMIT_REDIS_URL=redis://127.0.0.1:$port" bench/ab.sh rate-limits /bench/plain /bench/limited
