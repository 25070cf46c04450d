#!/usr/bin/env bash
# Proxy benchmark: a specgate-generated gateway (generated/multi-backend) against a tuned
# nginx reverse proxy, both in front of the same cheap upstream (`specgate echo --fixed`).
#
# Usage (from the repository root):  bench/run.sh
#
# Environment overrides:
#   DURATION     length of each measured wrk run              (default 10s)
#   CONNECTIONS  wrk connections                              (default 64)
#   THREADS      worker counts to compare, space separated    (default "1 2")
#                (nginx worker_processes N, gateway WORKER_THREADS=N)
#   WRK_THREADS  wrk threads                                  (default 2)
#   WARMUP       length of the warm-up run before each target (default 2s)
#   REPEAT       measured runs per target (default 3); kept: the median by requests/s of
#                the undisturbed runs, or the least disturbed run (see OTHER_CPU_WARN)
#   OTHER_CPU_WARN  a run is "disturbed" when processes outside this benchmark (e.g. someone's
#                build) used at least this % of the machine's CPU meanwhile (default 10);
#                the table flags it
#   QUIET_WAIT   before each run, wait up to this many seconds for such processes to go
#                quiet (default 10)
#   OUT          Markdown file to write                       (default docs/benchmarks.md)
#
# Everything listens on 127.0.0.1 only; every load run is bounded by DURATION (and `timeout`).
# All processes started here are stopped on exit, including on error or Ctrl-C.
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-"1 2"}
WRK_THREADS=${WRK_THREADS:-2}
WARMUP=${WARMUP:-2s}
REPEAT=${REPEAT:-3}
OTHER_CPU_WARN=${OTHER_CPU_WARN:-10}
QUIET_WAIT=${QUIET_WAIT:-10}
OUT=${OUT:-docs/benchmarks.md}
MARKER='<!-- end of generated section -->'

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Seconds in a wrk duration ("10s", "2m", "1h", "30").
to_seconds() {
    local d=$1
    case $d in
        *s) echo "${d%s}" ;;
        *m) echo $(( ${d%m} * 60 )) ;;
        *h) echo $(( ${d%h} * 3600 )) ;;
        *) echo "$d" ;;
    esac
}
[[ $(to_seconds "$DURATION") =~ ^[0-9]+$ ]] || die "DURATION=$DURATION is not a wrk duration like 10s"
[[ $(to_seconds "$WARMUP") =~ ^[0-9]+$ ]] || die "WARMUP=$WARMUP is not a wrk duration like 2s"
[[ $CONNECTIONS =~ ^[0-9]+$ ]] || die "CONNECTIONS=$CONNECTIONS is not a number"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT=$REPEAT is not a positive number"
[[ $OTHER_CPU_WARN =~ ^[0-9]+$ ]] || die "OTHER_CPU_WARN=$OTHER_CPU_WARN is not a number"
[[ $QUIET_WAIT =~ ^[0-9]+$ ]] || die "QUIET_WAIT=$QUIET_WAIT is not a number of seconds"
for n in $THREADS; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "THREADS contains $n, not a positive number"; done

# ---------------------------------------------------------------------------------------------
# 1. Tools
# ---------------------------------------------------------------------------------------------
need_pkgs=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_pkgs+=(nginx)
command -v wrk >/dev/null 2>&1 || need_pkgs+=(wrk)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
if ((${#need_pkgs[@]})); then
    log "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# ---------------------------------------------------------------------------------------------
# Process bookkeeping and cleanup
# ---------------------------------------------------------------------------------------------
TMP=$(mktemp -d /tmp/specgate-bench.XXXXXX)
UPSTREAM_PID=""
NGINX_PID=""
GATEWAY_PID=""
WRK_PID=""

stop_pid() { # pid [signal]
    local pid=$1 sig=${2:-TERM} i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -"$sig" "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_nginx() {
    [[ -n $NGINX_PID ]] || return 0
    local workers
    workers=$(ps -o pid= --ppid "$NGINX_PID" 2>/dev/null || true)
    stop_pid "$NGINX_PID" TERM
    # Workers exit with their master; make sure none is left behind.
    for w in $workers; do stop_pid "$w" KILL; done
    NGINX_PID=""
}

stop_gateway() { stop_pid "$GATEWAY_PID" TERM; GATEWAY_PID=""; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$WRK_PID" TERM
    stop_gateway
    stop_nginx
    stop_pid "$UPSTREAM_PID" TERM
    UPSTREAM_PID=""
    if [[ $rc -eq 130 || $rc -eq 143 ]]; then
        log "interrupted"
        rm -rf "$TMP"
    elif [[ $rc -ne 0 ]]; then
        log "failed (exit $rc); logs kept in $TMP"
        for f in "$TMP"/*.log; do
            [[ -s $f ]] || continue
            log "--- tail of $f"
            tail -n 20 "$f" >&2 || true
        done
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "command failed (line $LINENO): $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A free port at or above $1 (skipping those already taken by this run).
TAKEN=" "
pick_port() {
    local p=$1
    while port_in_use "$p" || [[ $TAKEN == *" $p "* ]]; do p=$((p + 1)); done
    TAKEN+="$p "
    echo "$p"
}

# Waits until http://127.0.0.1:$port$path answers 200 with body "hello", or the process dies.
wait_ready() { # name pid port path
    local name=$1 pid=$2 port=$3 path=$4 i body
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during start-up"
        if body=$(curl -fsS --max-time 2 "http://127.0.0.1:$port$path" 2>/dev/null) && [[ $body == hello ]]; then
            return 0
        fi
        sleep 0.1
    done
    die "$name did not answer 200 \"hello\" on 127.0.0.1:$port$path within 10s"
}

# RSS in KiB of the given pids, summed.
rss_kib() {
    local total=0 pid v
    for pid in "$@"; do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
nginx_pids() { echo "$NGINX_PID" $(ps -o pid= --ppid "$NGINX_PID" 2>/dev/null || true); }
fmt_mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

# wrk latency value ("812.00us", "1.23ms", "1.01s") -> milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
        printf "%.2f", n
    }'
}

# CPU used by processes outside this run (not in our process group, not kernel threads):
# other people's builds on a shared machine skew the numbers, so each measurement reports
# how much CPU others took meanwhile. The snapshot is the sum, over those processes, of their
# own CPU time plus that of their children already reaped; the difference of two snapshots
# then also covers short-lived processes (a build's rustc runs) that came and went between.
OUR_PGID=$(ps -o pgid= -p $$ | tr -d ' ')
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
cpu_snapshot() {
    # Processes come and go between the glob and the read: ignore those that vanished.
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pg="$OUR_PGID" '{
        pid = $1; line = $0; sub(/^.*\) /, "", line); split(line, f, " ")
        if (f[3] == pg || pid == 2 || f[2] == 2 || int(f[7] / 2097152) % 2 == 1) next
        s += f[12] + f[13] + f[14] + f[15]
    } END { print s + 0 }'
}
# Percentage of the whole machine (all cores) used by others between two snapshots.
other_cpu_pct() { # before after seconds
    awk -v a="$1" -v b="$2" -v secs="$3" -v hz="$CLK_TCK" -v ncpu="$NCPU" \
        'BEGIN { d = b - a; if (d < 0) d = 0; printf "%.0f", 100 * d / (secs * hz * ncpu) }'
}

# Runs wrk in the background (so that a signal interrupts the script at once) with a hard
# time limit; stdout to $1. `timeout --foreground` keeps wrk in this process group.
wrk_bounded() { # outfile duration wrk-args...
    local outfile=$1 secs rc=0
    secs=$(to_seconds "$2")
    shift 2
    timeout --foreground -k 5 $((secs + 30)) wrk "$@" >"$outfile" &
    WRK_PID=$!
    wait "$WRK_PID" || rc=$?
    WRK_PID=""
    return "$rc"
}

# One measured wrk run; sets RPS, P50, P99, ERRORS (empty when clean), OTHER (% CPU of others).
wrk_once() { # url
    local url=$1 out t0 t1 before after non2xx sock
    before=$(cpu_snapshot)
    t0=$(date +%s.%N)
    wrk_bounded "$TMP/wrk.out" "$DURATION" -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url"
    out=$(<"$TMP/wrk.out")
    t1=$(date +%s.%N)
    after=$(cpu_snapshot)
    OTHER=$(other_cpu_pct "$before" "$after" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    printf '%s\n' "$out" >>"$TMP/wrk.log"
    RPS=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    P50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    P99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' <<<"$out")
    sock=$(sed -n 's/^ *Socket errors: *//p' <<<"$out")
    ERRORS=""
    if [[ -n $non2xx && $non2xx != 0 ]]; then ERRORS+="⚠ $non2xx non-2xx/3xx responses; "; fi
    if [[ -n $sock ]]; then ERRORS+="⚠ socket errors: $sock; "; fi
    if [[ -z $RPS ]]; then ERRORS+="⚠ could not parse wrk output; "; RPS=0; fi
    ERRORS=${ERRORS%; }
}

# Waits (at most QUIET_WAIT seconds) for a second in which other processes use less than
# OTHER_CPU_WARN % of the machine, so that runs start outside someone else's burst of work.
wait_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT)) a b pct
    while :; do
        a=$(cpu_snapshot); sleep 1; b=$(cpu_snapshot)
        pct=$(other_cpu_pct "$a" "$b" 1)
        (( pct < OTHER_CPU_WARN )) && return 0
        if (( SECONDS >= deadline )); then
            log "  machine still busy (others at ${pct}% CPU) after ${QUIET_WAIT}s; measuring anyway"
            return 0
        fi
    done
}

# Warm-up, then REPEAT measured runs. Kept: the median (by requests/s) of the runs during
# which other processes stayed under OTHER_CPU_WARN % CPU, or, when none did, the run they
# disturbed least. Errors of any run are reported. Sets RPS, P50, P99, ERRORS, OTHER.
run_wrk() { # label url
    local label=$1 url=$2 r runs=() errs="" pick clean
    log "warm-up $label ($WARMUP)"
    wrk_bounded /dev/null "$WARMUP" -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$url"
    for r in $(seq "$REPEAT"); do
        wait_quiet
        log "measure $label ($DURATION, $CONNECTIONS connections, run $r/$REPEAT)"
        wrk_once "$url"
        log "  $label: $RPS req/s, p50 $P50 ms, p99 $P99 ms, other processes ${OTHER}% CPU ${ERRORS:+($ERRORS)}"
        runs+=("$RPS $P50 $P99 $OTHER")
        if [[ -n $ERRORS ]]; then errs+="${errs:+; }$ERRORS"; fi
    done
    clean=$(printf '%s\n' "${runs[@]}" | awk -v t="$OTHER_CPU_WARN" '$4 < t' | sort -g)
    if [[ -n $clean ]]; then
        pick=$(sed -n "$(( ($(wc -l <<<"$clean") + 1) / 2 ))p" <<<"$clean")
    else
        pick=$(printf '%s\n' "${runs[@]}" | sort -k4,4g -k1,1gr | head -n1)
    fi
    read -r RPS P50 P99 OTHER <<<"$pick"
    ERRORS=$errs
    if (( OTHER >= OTHER_CPU_WARN )); then
        ERRORS+="${ERRORS:+; }⚠ other processes used ${OTHER}% of the CPUs"
    fi
}

ROWS=()
add_row() { # threads target rps p50 p99 rss notes   (OTHER from the last run_wrk)
    ROWS+=("| $1 | $2 | $(printf '%.0f' "$3") | $4 | $5 | $6 | $OTHER% | ${7:-ok} |")
}

# ---------------------------------------------------------------------------------------------
# 2. Build
# ---------------------------------------------------------------------------------------------
log "building (release): specgate, multi-backend"
cargo build --release --quiet -p specgate -p multi-backend
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET_DIR=${TARGET_DIR:-$ROOT/target}
SPECGATE=$TARGET_DIR/release/specgate
GATEWAY=$TARGET_DIR/release/multi-backend
[[ -x $SPECGATE && -x $GATEWAY ]] || die "release binaries not found in $TARGET_DIR/release"

# ---------------------------------------------------------------------------------------------
# 3. Upstream (shared by every run)
# ---------------------------------------------------------------------------------------------
UP_PORT=$(pick_port 18080)
NGINX_PORT=$(pick_port 18180)
GW_PORT=$(pick_port 18280)
"$SPECGATE" echo --host 127.0.0.1 --port "$UP_PORT" --fixed hello >"$TMP/upstream.log" 2>&1 &
UPSTREAM_PID=$!
wait_ready upstream "$UPSTREAM_PID" "$UP_PORT" /
UPSTREAM=http://127.0.0.1:$UP_PORT
log "upstream on $UPSTREAM (pid $UPSTREAM_PID)"

start_nginx() { # workers
    local n=$1 dir=$TMP/nginx-$1
    mkdir -p "$dir/logs" "$dir/tmp"
    chmod 777 "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
worker_processes $n;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    default_type text/plain;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/client_body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;

    upstream backend {
        server 127.0.0.1:$UP_PORT;
        keepalive 256;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }

    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" >"$TMP/nginx-$n.log" 2>&1 &
    NGINX_PID=$!
    wait_ready nginx "$NGINX_PID" "$NGINX_PORT" /catalog/item/1
    log "nginx on 127.0.0.1:$NGINX_PORT, worker_processes $n (master pid $NGINX_PID)"
}

start_gateway() { # worker threads
    local n=$1
    (
        cd "$TMP" # no stray .env from the working directory
        exec env PORT="$GW_PORT" HOST=127.0.0.1 WORKER_THREADS="$n" ACCESS_LOG=off LOG_LEVEL=warn \
            CATALOG_URL="$UPSTREAM" USERS_URL="$UPSTREAM" ORDERS_URL="$UPSTREAM" \
            "$GATEWAY"
    ) >"$TMP/gateway-$n.log" 2>&1 &
    GATEWAY_PID=$!
    wait_ready gateway "$GATEWAY_PID" "$GW_PORT" /catalog/item/1
    wait_ready gateway "$GATEWAY_PID" "$GW_PORT" /api/users/42
    log "gateway on 127.0.0.1:$GW_PORT, WORKER_THREADS=$n (pid $GATEWAY_PID)"
}

# ---------------------------------------------------------------------------------------------
# 4-6. Runs
# ---------------------------------------------------------------------------------------------
declare -A NGINX_RPS SG_PLAIN_RPS SG_REWRITE_RPS
for n in $THREADS; do
    log "=== $n worker(s) ==="

    run_wrk "upstream direct" "$UPSTREAM/catalog/item/1"
    add_row "$n" "upstream direct (echo --fixed)" "$RPS" "$P50" "$P99" \
        "$(fmt_mib "$(rss_kib "$UPSTREAM_PID")")" "$ERRORS"

    start_nginx "$n"
    run_wrk "nginx" "http://127.0.0.1:$NGINX_PORT/catalog/item/1"
    NGINX_RPS[$n]=$RPS
    add_row "$n" "nginx proxy_pass" "$RPS" "$P50" "$P99" \
        "$(fmt_mib "$(rss_kib $(nginx_pids))")" "$ERRORS"
    stop_nginx

    start_gateway "$n"
    run_wrk "specgate forward" "http://127.0.0.1:$GW_PORT/catalog/item/1"
    SG_PLAIN_RPS[$n]=$RPS
    add_row "$n" "specgate forward \`/catalog/item/1\`" "$RPS" "$P50" "$P99" \
        "$(fmt_mib "$(rss_kib "$GATEWAY_PID")")" "$ERRORS"
    run_wrk "specgate rewrite" "http://127.0.0.1:$GW_PORT/api/users/42"
    SG_REWRITE_RPS[$n]=$RPS
    add_row "$n" "specgate rewrite \`/api/users/42\`" "$RPS" "$P50" "$P99" \
        "$(fmt_mib "$(rss_kib "$GATEWAY_PID")")" "$ERRORS"
    stop_gateway
done

# ---------------------------------------------------------------------------------------------
# 7. Report
# ---------------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

table=$(
    echo "| Workers | Target | Requests/s | p50 (ms) | p99 (ms) | RSS after run | Other CPU | Check |"
    echo "|---:|---|---:|---:|---:|---:|---:|---|"
    printf '%s\n' "${ROWS[@]}"
)
ratios=$(
    echo "| Workers | specgate forward / nginx | specgate rewrite / nginx |"
    echo "|---:|---:|---:|"
    for n in $THREADS; do
        echo "| $n | $(ratio "${SG_PLAIN_RPS[$n]}" "${NGINX_RPS[$n]}") | $(ratio "${SG_REWRITE_RPS[$n]}" "${NGINX_RPS[$n]}") |"
    done
)

cpu=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
nginx_version=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
wrk_version=$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}' || true)
now=$(date -u '+%Y-%m-%d %H:%M UTC')
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain -- Cargo.toml Cargo.lock runtime codegen generated templates 2>/dev/null) ]]; then
    revision+=" with uncommitted changes"
fi
# The command as run: `bench/run.sh`, preceded by the overrides that differ from the defaults.
command_line=""
for kv in "DURATION=$DURATION:10s" "CONNECTIONS=$CONNECTIONS:64" "THREADS=$THREADS:1 2" \
          "WRK_THREADS=$WRK_THREADS:2" "WARMUP=$WARMUP:2s" "REPEAT=$REPEAT:3" \
          "OTHER_CPU_WARN=$OTHER_CPU_WARN:10" "QUIET_WAIT=$QUIET_WAIT:10" \
          "OUT=$OUT:docs/benchmarks.md"; do
    setting=${kv%:*} default=${kv##*:}
    [[ ${setting#*=} == "$default" ]] || command_line+="${setting%%=*}=$(printf '%q' "${setting#*=}") "
done
command_line+="bench/run.sh"

generated=$(cat <<EOF
# Benchmarks

## Gateway vs. nginx (generated by \`bench/run.sh\`)

Throughput and latency of the generated gateway \`generated/multi-backend\` next to a tuned
nginx reverse proxy, both in front of the same upstream
(\`specgate echo --fixed hello\`, a small hyper server answering every request with \`hello\`).

- Machine: $(nproc) CPU(s), ${cpu:-unknown CPU}; measured $now at commit $revision.
- Tools: ${nginx_version}, ${wrk_version}; \`wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency\`
  after a $WARMUP warm-up per target.
- The load generator, the upstream and the proxy share the same $(nproc) cores, so absolute
  numbers are low; compare ratios, not absolute requests/s.
- "Workers" is nginx \`worker_processes\` and the gateway's \`WORKER_THREADS\`
  (the upstream's runtime is the same in every run).
- nginx: \`upstream\` with \`keepalive 256\`, \`proxy_http_version 1.1\`,
  \`proxy_set_header Connection ""\`, \`access_log off\`, high \`keepalive_requests\`.
  Gateway: \`ACCESS_LOG=off LOG_LEVEL=warn\`. The forward route is \`urlForwardHandler\`
  (\`GET /catalog/{+rest}\`), the rewrite route \`urlRewriteHandler\`
  (\`GET /api/users/{id}\` → \`\${USERS_URL}/users/\${params.id}\`).
- RSS is VmRSS after the run (nginx: master + workers). "Other CPU" is the share of the
  whole machine taken meanwhile by processes outside the benchmark (e.g. a build running
  next to it); "Check" is \`ok\` when wrk saw no non-2xx response and no socket error, and
  flags runs where others used $OTHER_CPU_WARN% or more.

Command (from the repository root; installs nginx and wrk if missing, builds in release):

\`\`\`sh
$command_line
\`\`\`

Overrides: \`DURATION\` (10s), \`CONNECTIONS\` (64), \`THREADS\` ("1 2"), \`WRK_THREADS\` (2),
\`WARMUP\` (2s), \`REPEAT\` (3), \`OTHER_CPU_WARN\` (10), \`QUIET_WAIT\` (10). Each target is
measured REPEAT times; the table keeps the median (by requests/s) of the runs that other
processes did not disturb, or the least disturbed run when all were.

$table

Throughput ratio (requests/s of the gateway divided by nginx's):

$ratios
EOF
)

echo
echo "$table"
echo
echo "$ratios"

# Keep everything from the marker on (hand-written sections, other benchmarks). An existing
# file without the marker is kept in full below it, so nothing written by hand is lost.
mkdir -p "$(dirname "$OUT")"
new=$TMP/benchmarks.md
{
    printf '%s\n\n%s\n' "$generated" "$MARKER"
    if [[ -f $OUT ]]; then
        if grep -qF -- "$MARKER" "$OUT"; then
            awk -v m="$MARKER" 'found { print } index($0, m) { found = 1 }' "$OUT"
        else
            echo
            cat "$OUT"
        fi
    fi
} >"$new"
cp "$new" "$OUT.tmp.$$" && mv "$OUT.tmp.$$" "$OUT"
log "wrote $OUT"
