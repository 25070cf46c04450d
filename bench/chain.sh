#!/usr/bin/env bash
# Cost of a chain of five header/query policies: policy-showcase's /bench/plain (a forward)
# against /bench/chain (the same forward behind the chain).
set -euo pipefail
cd "$(dirname "$0")/.."
GATEWAY_ENV="API_URL={UP} GATEWAY_SECRET=bench" exec bench/ab.sh policy-showcase /bench/plain /bench/chain
