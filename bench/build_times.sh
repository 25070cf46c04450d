#!/usr/bin/env bash
# Build times of a large generated crate: a synthetic project of N operations
# (bench/synth_project.py) generated outside the workspace, then built in debug and in release,
# each time once whole and once after one route changed (its rewritePattern edited in the
# project, the crate regenerated). Prints one line per build: wall and CPU seconds, peak RSS.
#
#   bench/build_times.sh [N]          (default 2000)
#
# WORK (default /tmp/specgate-build-times) holds the project, the crate and its target
# directory; it is reused, so delete it for a cold run. Runs under `nice -n 10`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
N=${1:-2000}
WORK=${WORK:-/tmp/specgate-build-times}
PROJECT=$WORK/project
CRATE=$WORK/crate
export CARGO_TARGET_DIR=$WORK/target

cargo build --quiet -p specgate
SPECGATE=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/specgate

mkdir -p "$WORK"
python3 bench/synth_project.py "$N" "$PROJECT" >/dev/null
regenerate() { "$SPECGATE" generate "$PROJECT" --out "$CRATE" --runtime-path "$ROOT/runtime" >/dev/null; }
regenerate
cp Cargo.lock "$CRATE/"

measure() { # label command...
    local label=$1
    shift
    /usr/bin/time -f "$label: wall %e s, user %U s, sys %S s, peak RSS %M KiB" "$@" 2>&1 | grep -E "^$label: |^error" || true
}

# Edits the rewritePattern of one route (the first /internal/rNNN/search one) and regenerates.
change_one_route() { # tag
    python3 - "$PROJECT/config/routes.oas.json" "$1" <<'PY'
import re, sys
path, tag = sys.argv[1], sys.argv[2]
text = open(path).read()
text, n = re.subn(r'(/internal/r\d+/search)(-v\w+)?"', r'\1-v' + tag + '"', text, count=1)
if n != 1:
    sys.exit("no route to change")
open(path, "w").write(text)
PY
    regenerate
}

cd "$CRATE"
measure "debug, dependencies" nice -n 10 cargo build --quiet -p specgate-runtime
measure "debug, the crate" nice -n 10 cargo build --quiet
change_one_route a
measure "debug, after one route changed" nice -n 10 cargo build --quiet
measure "release, dependencies" nice -n 10 cargo build --release --quiet -p specgate-runtime
measure "release, the crate" nice -n 10 cargo build --release --quiet
change_one_route b
measure "release, after one route changed" nice -n 10 cargo build --release --quiet
