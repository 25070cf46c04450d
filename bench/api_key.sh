#!/usr/bin/env bash
# Cost of api-key-inbound with a warm cache: outer-gateway's /public/status (a forward) against
# /bench/key/status (the same forward behind the API-key policy, file store).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p specgate
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
key="$(target/release/specgate keys create --file "$dir/keys.json" --consumer bench --metadata '{"tier":"standard"}' 2>/dev/null | grep '^zpka_')"
GATEWAY_ENV="INNER_URL={UP} DEDICATED_INNER_URL={UP} PARTNER_BACKEND_URL={UP} PARTNER_PASSWORD=x INNER_STATIC_KEY=x API_KEY_CACHE_TTL_SECONDS=60 API_KEYS_FILE=$dir/keys.json" \
  bench/ab.sh outer-gateway /public/status /bench/key/status "authorization: Bearer $key"
