#!/usr/bin/env bash
# Proxy comparison: the upstream directly, nginx, HAProxy and a specgate-generated gateway
# (generated/benchmark, from specs/benchmark) in front of the same cheap upstream
# (`specgate echo --fixed hello`), on four routes:
#   plain     GET /plain/items/1   forwarded as is
#   rewrite   GET /v1/items/1      rewritten to /items/1 (urlRewriteHandler, a path parameter)
#   policies  GET /secure/items/1  API key + rate limit (never reached) + a request header set
#                                   + a response header set
#   validate  POST /orders         a ~1 KB JSON body (bench/order-1k.json) validated against a
#                                   JSON schema; nginx and HAProxy cannot, they forward it as is
# Then the gateway's memory: RSS after start-up, after the load runs, and with 10,000 idle
# keep-alive connections open (bench/idle_conns.py).
#
# Usage (from the repository root):  bench/run.sh
#
# Environment overrides:
#   DURATION     length of each measured wrk run              (default 10s)
#   CONNECTIONS  wrk connections                              (default 64)
#   THREADS      worker counts to compare, space separated    (default "1 2")
#                (nginx worker_processes N, HAProxy nbthread N, gateway WORKER_THREADS=N)
#   WRK_THREADS  wrk threads                                  (default 2)
#   WARMUP       length of the warm-up run before each measurement (default 2s)
#   REPEAT       measured runs per target and route (default 3); kept: the median by
#                requests/s of the undisturbed runs, or the least disturbed run (see OTHER_CPU_WARN)
#   OTHER_CPU_WARN  a run is "disturbed" when processes outside this benchmark (e.g. someone's
#                build) used at least this % of the machine's CPU meanwhile (default 10);
#                the table flags it
#   QUIET_WAIT   before each run, wait up to this many seconds for such processes to go
#                quiet (default 10)
#   IDLE_CONNS   idle keep-alive connections held open to the gateway (default 10000; 0 skips)
#   OUT          Markdown file to write                       (default docs/benchmarks.md)
#   ROUTES       routes to measure, space separated  (default "plain rewrite policies validate")
#   FEATURES     cargo features of the gateway build, e.g. "benchmark/mimalloc" (default none)
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
IDLE_CONNS=${IDLE_CONNS:-10000}
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
[[ $IDLE_CONNS =~ ^[0-9]+$ ]] || die "IDLE_CONNS=$IDLE_CONNS is not a number"
for n in $THREADS; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "THREADS contains $n, not a positive number"; done

# ---------------------------------------------------------------------------------------------
# 1. Tools
# ---------------------------------------------------------------------------------------------
need_pkgs=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_pkgs+=(nginx)
command -v wrk >/dev/null 2>&1 || need_pkgs+=(wrk)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || need_pkgs+=(haproxy)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
if ((${#need_pkgs[@]})); then
    log "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

# Every process started here inherits the open-files limit: 10,000 idle connections need more
# than the usual 1024 in the client and in the gateway.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (( IDLE_CONNS > 0 )) && [[ $(ulimit -n) != unlimited ]] && (( $(ulimit -n) < IDLE_CONNS + 200 )); then
    die "open-files limit $(ulimit -n) is too low for IDLE_CONNS=$IDLE_CONNS (raise the hard limit or lower IDLE_CONNS)"
fi

# ---------------------------------------------------------------------------------------------
# Process bookkeeping and cleanup
# ---------------------------------------------------------------------------------------------
TMP=$(mktemp -d /tmp/specgate-bench.XXXXXX)
UPSTREAM_PID=""
NGINX_PID=""
HAPROXY_PID=""
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
stop_haproxy() { stop_pid "$HAPROXY_PID" TERM; HAPROXY_PID=""; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$WRK_PID" TERM
    stop_gateway
    stop_haproxy
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

# A /proc/PID/status memory field in KiB (VmRSS: resident now, VmHWM: peak resident since
# the process started) of the given pids, summed.
status_kib() { # field pids...
    local field=$1 total=0 pid v
    shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
rss_kib() { status_kib VmRSS "$@"; }
hwm_kib() { status_kib VmHWM "$@"; }

# Status and body of one request (curl args after the URL), as "STATUS BODY".
probe() { # url curl-args...
    local url=$1
    shift
    curl -sS --max-time 5 -o "$TMP/probe.body" -w '%{http_code}' "$@" "$url" 2>/dev/null || true
    printf ' %s' "$(head -c 200 "$TMP/probe.body" 2>/dev/null || true)"
}
expect() { # name what got want
    [[ $3 == "$4"* ]] || die "$1: $2 answered \"$3\", expected \"$4...\""
}

# Checks the four routes of a proxy (and that the API key is enforced) before measuring them.
# With "validates", also that an invalid body is refused.
check_routes() { # name port [validates]
    local name=$1 base=http://127.0.0.1:$2 headers
    expect "$name" plain "$(probe "$base/plain/items/1")" "200 hello"
    expect "$name" rewrite "$(probe "$base/v1/items/1")" "200 hello"
    expect "$name" "policies with the key" "$(probe "$base/secure/items/1" -H "Authorization: Bearer $API_KEY")" "200 hello"
    expect "$name" "policies without a key" "$(probe "$base/secure/items/1")" "401"
    headers=$(curl -sS --max-time 5 -D - -o /dev/null -H "Authorization: Bearer $API_KEY" "$base/secure/items/1" 2>/dev/null || true)
    grep -qi '^x-powered-by: specgate' <<<"$headers" || die "$name: policies route lacks the response header x-powered-by"
    expect "$name" validate "$(probe "$base/orders" -H 'Content-Type: application/json' --data-binary @"$BODY_FILE")" "200 hello"
    if [[ ${3:-} == validates ]]; then
        expect "$name" "validate with an invalid body" \
            "$(probe "$base/orders" -H 'Content-Type: application/json' --data-binary '{"orderId":"nope"}')" "400"
    fi
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
wrk_once() { # url [wrk-args...]
    local url=$1 out t0 t1 before after non2xx sock
    shift
    before=$(cpu_snapshot)
    t0=$(date +%s.%N)
    # wrk has been seen to hang past its duration on a loaded machine: such a run is reported
    # (no figures parsed), not fatal.
    wrk_bounded "$TMP/wrk.out" "$DURATION" -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" \
        || log "  wrk exited with status $? (124: killed after its time limit)"
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
run_wrk() { # label url [wrk-args...]
    local label=$1 url=$2 r runs=() errs="" pick clean
    shift 2
    log "warm-up $label ($WARMUP)"
    wrk_bounded /dev/null "$WARMUP" -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$@" "$url" \
        || log "  warm-up: wrk exited with status $?"
    for r in $(seq "$REPEAT"); do
        wait_quiet
        log "measure $label ($DURATION, $CONNECTIONS connections, run $r/$REPEAT)"
        wrk_once "$url" "$@"
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

# ---------------------------------------------------------------------------------------------
# 2. Build, API key
# ---------------------------------------------------------------------------------------------
log "building (release): specgate, benchmark"
cargo build --release --quiet -p specgate -p benchmark ${FEATURES:+--features "$FEATURES"}
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET_DIR=${TARGET_DIR:-$ROOT/target}
SPECGATE=$TARGET_DIR/release/specgate
GATEWAY=$TARGET_DIR/release/benchmark
[[ -x $SPECGATE && -x $GATEWAY ]] || die "release binaries not found in $TARGET_DIR/release"

BODY_FILE=$ROOT/bench/order-1k.json
POST_LUA=$ROOT/bench/post_body.lua
export BODY_FILE
BODY_BYTES=$(wc -c <"$BODY_FILE")
# One key in the gateway's file store; nginx and HAProxy compare the header with the same key.
"$SPECGATE" keys create --file "$TMP/api-keys.json" --consumer bench >"$TMP/key.out" 2>"$TMP/keys.log"
API_KEY=$(grep -m1 '^zpka_' "$TMP/key.out" || true)
[[ -n $API_KEY ]] || die "specgate keys create printed no key"

# ---------------------------------------------------------------------------------------------
# 3. Upstream (shared by every run) and the three proxies
# ---------------------------------------------------------------------------------------------
UP_PORT=$(pick_port 18080)
NGINX_PORT=$(pick_port 18180)
HAPROXY_PORT=$(pick_port 18230)
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
worker_rlimit_nofile 20000;
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

    # API key: the Authorization header must carry the one key (longer than the default
    # bucket holds).
    map_hash_bucket_size 128;
    map \$http_authorization \$api_key_ok {
        "Bearer $API_KEY" 1;
        default 0;
    }
    # A per-client limit far above anything this run reaches.
    limit_req_zone \$binary_remote_addr zone=per_ip:10m rate=100000000r/s;
    limit_req_status 429;

    upstream backend {
        server 127.0.0.1:$UP_PORT;
        keepalive 256;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }

    server {
        listen 127.0.0.1:$NGINX_PORT;
        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location /plain/ {
            proxy_pass http://backend;
        }
        location /v1/items/ {
            proxy_pass http://backend/items/;
        }
        location /secure/ {
            if (\$api_key_ok = 0) {
                return 401;
            }
            limit_req zone=per_ip burst=1000 nodelay;
            proxy_set_header Connection "";
            proxy_set_header x-gateway specgate;
            add_header x-powered-by specgate always;
            proxy_pass http://backend;
        }
        location = /orders {
            proxy_pass http://backend;
        }
    }
}
EOF
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" >"$TMP/nginx-$n.log" 2>&1 &
    NGINX_PID=$!
    wait_ready nginx "$NGINX_PID" "$NGINX_PORT" /plain/items/1
    check_routes nginx "$NGINX_PORT"
    log "nginx on 127.0.0.1:$NGINX_PORT, worker_processes $n (master pid $NGINX_PID)"
}

start_haproxy() { # threads
    local n=$1 cfg=$TMP/haproxy-$1.cfg
    cat >"$cfg" <<EOF
global
    nbthread $n
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    acl route_secure path_beg /secure/
    acl route_rewrite path_beg /v1/items/
    acl api_key_ok req.hdr(authorization) -m str "Bearer $API_KEY"
    # A per-client request rate counter; the limit is far above anything this run reaches.
    stick-table type ip size 100k expire 60s store http_req_rate(60s)
    http-request return status 401 if route_secure !api_key_ok
    http-request track-sc0 src if route_secure
    http-request deny deny_status 429 if route_secure { sc_http_req_rate(0) gt 100000000 }
    http-request set-header x-gateway specgate if route_secure
    http-request set-var(txn.secure) bool(true) if route_secure
    http-response set-header x-powered-by specgate if { var(txn.secure) -m bool }
    http-request replace-path ^/v1/items/(.*) /items/\1 if route_rewrite
    default_backend upstream

backend upstream
    server up 127.0.0.1:$UP_PORT
EOF
    "$HAPROXY" -db -f "$cfg" >"$TMP/haproxy-$n.log" 2>&1 &
    HAPROXY_PID=$!
    wait_ready haproxy "$HAPROXY_PID" "$HAPROXY_PORT" /plain/items/1
    check_routes haproxy "$HAPROXY_PORT"
    log "haproxy on 127.0.0.1:$HAPROXY_PORT, nbthread $n (pid $HAPROXY_PID)"
}

# Starts the gateway; sets GW_START_RSS (KiB, VmRSS once it answers its first request).
start_gateway() { # worker threads
    local n=$1
    (
        cd "$TMP" # no stray .env from the working directory
        exec env PORT="$GW_PORT" HOST=127.0.0.1 WORKER_THREADS="$n" ACCESS_LOG=off LOG_LEVEL=warn \
            MAX_CONNECTIONS=20000 UP="$UPSTREAM" API_KEYS_FILE="$TMP/api-keys.json" \
            "$GATEWAY"
    ) >>"$TMP/gateway-$n.log" 2>&1 &
    GATEWAY_PID=$!
    wait_ready gateway "$GATEWAY_PID" "$GW_PORT" /plain/items/1
    GW_START_RSS=$(rss_kib "$GATEWAY_PID")
    check_routes gateway "$GW_PORT" validates
    log "gateway on 127.0.0.1:$GW_PORT, WORKER_THREADS=$n (pid $GATEWAY_PID), RSS $(fmt_mib "$GW_START_RSS") after start-up"
}

# ---------------------------------------------------------------------------------------------
# 4. Load runs: every target, every route
# ---------------------------------------------------------------------------------------------
ROUTES=${ROUTES:-"plain rewrite policies validate"}
# The path of a route on a proxy; the upstream itself answers any path the same way.
route_path() { # route target
    case $1 in
        plain) echo /plain/items/1 ;;
        rewrite) if [[ $2 == upstream ]]; then echo /items/1; else echo /v1/items/1; fi ;;
        policies) echo /secure/items/1 ;;
        validate) echo /orders ;;
    esac
}
route_args() { # route
    case $1 in
        policies) printf '%s\n' -H "Authorization: Bearer $API_KEY" ;;
        validate) printf '%s\n' -s "$POST_LUA" ;;
    esac
}

declare -A RPS_OF P99_OF
ROWS=()
measure() { # workers target label port pids...
    local n=$1 target=$2 label=$3 port=$4 route args note
    shift 4
    for route in $ROUTES; do
        mapfile -t args < <(route_args "$route")
        run_wrk "$label $route" "http://127.0.0.1:$port$(route_path "$route" "$target")" "${args[@]}"
        RPS_OF[$n,$target,$route]=$RPS
        P99_OF[$n,$target,$route]=$P99
        note=""
        if [[ $route == validate && ( $target == nginx || $target == haproxy ) ]]; then
            note="forwarded, not validated"
        fi
        ROWS+=("| $n | $route | $label | $(printf '%.0f' "$RPS") | $P50 | $P99 | $(fmt_mib "$(hwm_kib "$@")") | ${note:--} | $OTHER% | ${ERRORS:-ok} |")
    done
}

declare -A GW_START GW_AFTER GW_AFTER_PEAK
for n in $THREADS; do
    log "=== $n worker(s) ==="
    measure "$n" upstream "upstream direct" "$UP_PORT" "$UPSTREAM_PID"

    start_nginx "$n"
    measure "$n" nginx nginx "$NGINX_PORT" $(nginx_pids)
    stop_nginx

    start_haproxy "$n"
    measure "$n" haproxy HAProxy "$HAPROXY_PORT" "$HAPROXY_PID"
    stop_haproxy

    start_gateway "$n"
    GW_START[$n]=$GW_START_RSS
    measure "$n" gateway specgate "$GW_PORT" "$GATEWAY_PID"
    GW_AFTER[$n]=$(rss_kib "$GATEWAY_PID")
    GW_AFTER_PEAK[$n]=$(hwm_kib "$GATEWAY_PID")
    stop_gateway
done

# ---------------------------------------------------------------------------------------------
# 5. Idle keep-alive connections: a fresh gateway, IDLE_CONNS connections that each make one
#    request and then stay open, the gateway's RSS meanwhile
# ---------------------------------------------------------------------------------------------
declare -A IDLE_LINE
if (( IDLE_CONNS > 0 )); then
    for n in $THREADS; do
        start_gateway "$n"
        log "opening $IDLE_CONNS idle keep-alive connections to the gateway (WORKER_THREADS=$n)"
        IDLE_LINE[$n]=$(timeout -k 5 300 python3 "$ROOT/bench/idle_conns.py" --port "$GW_PORT" \
            --pid "$GATEWAY_PID" --count "$IDLE_CONNS" --path /plain/items/1 2>>"$TMP/idle.log") \
            || die "bench/idle_conns.py failed: $(tail -n 3 "$TMP/idle.log")"
        log "  $n worker(s): ${IDLE_LINE[$n]}"
        stop_gateway
    done
fi

# ---------------------------------------------------------------------------------------------
# 6. Report
# ---------------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; } # key line
verdict() { if [[ $1 == 1 ]]; then echo met; else echo "**not met**"; fi; }
MIB=1024

table=$(
    echo "| Workers | Route | Target | Requests/s | p50 (ms) | p99 (ms) | Peak RSS | Note | Other CPU | Check |"
    echo "|---:|---|---|---:|---:|---:|---:|---|---:|---|"
    printf '%s\n' "${ROWS[@]}"
)
ratios=$(
    echo "| Workers | Route | specgate / nginx | specgate / HAProxy | nginx / upstream | specgate / upstream |"
    echo "|---:|---|---:|---:|---:|---:|"
    for n in $THREADS; do
        for route in $ROUTES; do
            echo "| $n | $route | $(ratio "${RPS_OF[$n,gateway,$route]}" "${RPS_OF[$n,nginx,$route]}") | $(ratio "${RPS_OF[$n,gateway,$route]}" "${RPS_OF[$n,haproxy,$route]}") | $(ratio "${RPS_OF[$n,nginx,$route]}" "${RPS_OF[$n,upstream,$route]}") | $(ratio "${RPS_OF[$n,gateway,$route]}" "${RPS_OF[$n,upstream,$route]}") |"
        done
    done
)
memory=$(
    echo "| Workers | RSS after start-up | RSS after the load runs | Peak RSS of the load runs | Idle keep-alive connections open | RSS with them open | Peak while they opened | Closed by the gateway meanwhile | Failed to open |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for n in $THREADS; do
        line=${IDLE_LINE[$n]:-}
        if [[ -n $line ]]; then
            idle="$(field open "$line") | $(fmt_mib "$(field rss_kib "$line")") | $(fmt_mib "$(field hwm_kib "$line")") | $(field closed_by_server "$line") | $(field failed "$line")"
        else
            idle="skipped | - | - | - | -"
        fi
        echo "| $n | $(fmt_mib "${GW_START[$n]}") | $(fmt_mib "${GW_AFTER[$n]}") | $(fmt_mib "${GW_AFTER_PEAK[$n]}") | $idle |"
    done
)
targets=$(
    echo "| Workers | Target | Figure | Verdict |"
    echo "|---:|---|---|---|"
    for n in $THREADS; do
        r=$(ratio "${RPS_OF[$n,gateway,plain]}" "${RPS_OF[$n,nginx,plain]}")
        ok=$(awk -v r="$r" -v a="${P99_OF[$n,gateway,plain]}" -v b="${P99_OF[$n,nginx,plain]}" \
            'BEGIN { print (r >= 1.2 && a <= b) ? 1 : 0 }')
        echo "| $n | plain forward ≥ 1.2× nginx requests/s, p99 no worse | ${r}×; p99 ${P99_OF[$n,gateway,plain]} ms against ${P99_OF[$n,nginx,plain]} ms | $(verdict "$ok") |"
        r=$(ratio "${RPS_OF[$n,gateway,policies]}" "${RPS_OF[$n,gateway,plain]}")
        ok=$(awk -v r="$r" 'BEGIN { print (r >= 0.9) ? 1 : 0 }')
        echo "| $n | policy chain (policies route) within 10% of plain forward | ${r}× of plain forward's requests/s | $(verdict "$ok") |"
        ok=$(( GW_START[$n] < 20 * MIB ? 1 : 0 ))
        echo "| $n | idle RSS after start-up < 20 MiB | $(fmt_mib "${GW_START[$n]}") | $(verdict "$ok") |"
        line=${IDLE_LINE[$n]:-}
        if [[ -n $line ]]; then
            rss=$(field rss_kib "$line") open=$(field open "$line")
            ok=$(( rss < 150 * MIB && open >= IDLE_CONNS ? 1 : 0 ))
            echo "| $n | $IDLE_CONNS idle keep-alive connections < 150 MiB | $(fmt_mib "$rss") with $open open | $(verdict "$ok") |"
        fi
    done
)

cpu=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
nginx_version=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
haproxy_version=$("$HAPROXY" -v 2>&1 | head -n1 | awk '{print $1, $3}')
wrk_version=$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}' || true)
now=$(date -u '+%Y-%m-%d %H:%M UTC')
loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain -- Cargo.toml Cargo.lock runtime codegen generated templates specs/benchmark 2>/dev/null) ]]; then
    revision+=" with uncommitted changes"
fi
# The command as run: `bench/run.sh`, preceded by the overrides that differ from the defaults.
command_line=""
for kv in "DURATION=$DURATION:10s" "CONNECTIONS=$CONNECTIONS:64" "THREADS=$THREADS:1 2" \
          "WRK_THREADS=$WRK_THREADS:2" "WARMUP=$WARMUP:2s" "REPEAT=$REPEAT:3" \
          "OTHER_CPU_WARN=$OTHER_CPU_WARN:10" "QUIET_WAIT=$QUIET_WAIT:10" \
          "IDLE_CONNS=$IDLE_CONNS:10000" "OUT=$OUT:docs/benchmarks.md" \
          "ROUTES=$ROUTES:plain rewrite policies validate" "FEATURES=${FEATURES:-}:"; do
    setting=${kv%:*} default=${kv##*:}
    [[ ${setting#*=} == "$default" ]] || command_line+="${setting%%=*}=$(printf '%q' "${setting#*=}") "
done
command_line+="bench/run.sh"

generated=$(cat <<EOF
# Benchmarks

## Gateway vs. nginx and HAProxy (generated by \`bench/run.sh\`)

Throughput, latency and memory of the generated gateway \`generated/benchmark\` (from
\`specs/benchmark\`) next to nginx and HAProxy configured for the same four routes, all in
front of the same upstream (\`specgate echo --fixed hello\`, a small hyper server answering
every request with \`hello\`), and of the upstream alone.

- Machine: $(nproc) CPU(s), ${cpu:-unknown CPU}; measured $now at commit $revision;
  load average at the end of the run: $loadavg.
- Tools: ${nginx_version}, ${haproxy_version}, ${wrk_version};
  \`wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency\` after a $WARMUP warm-up per
  target and route.
- The load generator, the upstream and the proxy share the same $(nproc) cores, so absolute
  numbers are low; compare ratios, not absolute requests/s.
- "Workers" is nginx \`worker_processes\`, HAProxy \`nbthread\` and the gateway's
  \`WORKER_THREADS\` (the upstream's runtime is the same in every run).
- Routes (the paths are the gateway's; nginx and HAProxy are configured alike):
  - **plain**: \`GET /plain/items/1\`, \`urlForwardHandler\`; nginx \`proxy_pass\`, HAProxy a backend.
  - **rewrite**: \`GET /v1/items/1\` → upstream \`/items/1\`, \`urlRewriteHandler\` with
    \`\${env.UP}/items/\${params.id}\`; nginx \`proxy_pass http://backend/items/\`, HAProxy
    \`http-request replace-path\`.
  - **policies**: \`GET /secure/items/1\` with \`Authorization: Bearer <key>\`: the gateway's
    \`api-key-inbound\` (file store, cached look-up), \`rate-limit-inbound\` (per IP, 100,000,000
    per minute: never reached; "Check" would show 429s), \`set-headers-inbound\` and
    \`set-headers-outbound\`; nginx \`map\` on the Authorization header + \`limit_req\` at
    100,000,000 r/s + \`proxy_set_header\`/\`add_header\`; HAProxy an ACL on the header +
    a stick-table \`http_req_rate\` counter + \`http-request\`/\`http-response set-header\`.
    Each proxy's route was checked to answer 401 without the key before the run.
  - **validate**: \`POST /orders\` with a fixed $BODY_BYTES-byte JSON body
    (\`bench/order-1k.json\`, posted by \`bench/post_body.lua\`): the gateway's
    \`request-validation-inbound\` checks it against the route's JSON schema (and was checked
    to answer 400 to an invalid body). **nginx and HAProxy cannot validate a JSON schema:
    they forward the POST as is**, so this row compares unequal work.
- nginx: \`upstream\` with \`keepalive 256\`, \`proxy_http_version 1.1\`,
  \`proxy_set_header Connection ""\`, \`access_log off\`, high \`keepalive_requests\`.
  HAProxy: \`http-reuse always\`, keep-alive, no logging. Gateway: \`ACCESS_LOG=off
  LOG_LEVEL=warn MAX_CONNECTIONS=20000\`.
- "Peak RSS" is VmHWM (peak resident memory since the process started; nginx: master +
  workers summed) read after that route's runs; each proxy is started afresh per worker count
  and then runs the four routes in the order of the table, so the figure is the peak so far.
  "Other CPU" is the share of the whole machine taken meanwhile by processes outside the
  benchmark (e.g. a build running next to it); "Check" is \`ok\` when wrk saw no non-2xx
  response and no socket error, and flags runs where others used $OTHER_CPU_WARN% or more.

Command (from the repository root; installs nginx, HAProxy and wrk if missing, builds in release):

\`\`\`sh
$command_line
\`\`\`

Overrides: \`DURATION\` (10s), \`CONNECTIONS\` (64), \`THREADS\` ("1 2"), \`WRK_THREADS\` (2),
\`WARMUP\` (2s), \`REPEAT\` (3), \`OTHER_CPU_WARN\` (10), \`QUIET_WAIT\` (10),
\`IDLE_CONNS\` (10000), \`ROUTES\` (all four), \`FEATURES\` (none; \`benchmark/mimalloc\` builds the
gateway with mimalloc). Each target and route is measured REPEAT times; the table keeps the
median (by requests/s) of the runs that other processes did not disturb, or the least
disturbed run when all were.

$table

Throughput ratios (requests/s divided):

$ratios

Gateway memory. "After start-up" is VmRSS once the gateway answered its first request;
"after the load runs" is VmRSS once the four routes above were measured. The idle
connections come from \`bench/idle_conns.py\` against a freshly started gateway: each
connection sends one \`GET /plain/items/1\`, reads the answer and stays open; the RSS is read
three seconds after the last one opened (the gateway parks a connection, freeing its buffers,
after one to two quiet seconds), then all are closed. "Peak" is VmHWM meanwhile: while they
open, connections still hold their buffers.

$memory

Targets:

$targets
EOF
)

echo
echo "$table"
echo
echo "$ratios"
echo
echo "$memory"
echo
echo "$targets"

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
