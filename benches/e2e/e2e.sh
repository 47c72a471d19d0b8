#!/usr/bin/env bash
# End-to-end comparison of ws-relay-core with a minimal copy forwarder (the
# floor), nginx and the original re-framing design, in ONE run, alternating
# the systems round by round; and of its reverse proxy ([[routes]]) with nginx
# and HAProxy. See benches/e2e/README.md.
#
#   cargo build --release --workspace && benches/e2e/e2e.sh   # full (~10 min on the 2-vCPU VM)
#   benches/e2e/e2e.sh --quick                                # smoke (~3 min)
#   benches/e2e/e2e.sh --systems direct,relay-proxy,relay-proxy-copy,nginx,haproxy \
#       --tests ping,tput64,agg100,upgrade                    # reverse proxies
#
# Writes target/bench/e2e-<time>[-quick]/ (not committed): summary.md (also
# printed), raw/ (every loadgen --json report), logs/, commands.log,
# manifest.tsv, idle.tsv; and copies summary.md alone to
# docs/bench/{e2e,proxy}-<time>[-quick]/summary.md, the part worth committing.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

usage() {
    cat <<'EOF'
usage: benches/e2e/e2e.sh [--quick] [options]
  --quick              smoke run: 2 rounds, 300 pings, 1 s throughput, 2,000 idle sessions, 100 delayed pings
  --rounds N           rounds (3)
  --pings N            recorded pings per ping run (1000; warm-up 100)
  --duration S         seconds per throughput run (3)
  --idle-sessions N    idle sessions per system (9000; needs ~2N+200 open files per process)
  --delay-pings N      pings per route in the 48 ms scenario, split over the rounds (1000)
  --systems LIST       comma list of: direct,forwarder,relay-copy-fm,relay-copy-hdr,
                       relay-splice-fm,relay-splice-hdr,nginx,reframing (the default),
                       relay-ring-fm,relay-ring-hdr (forward = "ring", opt-in),
                       relay-proxy,relay-proxy-copy,relay-proxy-ring,haproxy (reverse
                       proxies, opt-in)
  --tests LIST         same-core tests, comma list of: ping,tput64,tput16k,agg100,upgrade
                       (ping,tput64,tput16k,agg100); the cross-core phase runs the
                       ones of ping,tput64 among them. upgrade (TCP connect + 101, one
                       at a time) runs for direct and the reverse proxies
  --upgrades N         connections per upgrade run (1000)
  --skip-cross         no cross-core phase      --skip-idle   no idle-session phase
  --skip-delay         no 48 ms scenario        --out DIR     output directory
  --publish DIR        where summary.md is copied (docs/bench/{e2e,proxy}-<time>[-quick])
  --loadgen PATH --relay-bin PATH   binaries (target/release/loadgen, target/release/ws-relay-core)
  --old-relay-bin PATH another build of the relay, run as the systems named old-relay-*
                       (e.g. old-relay-ring-fm beside relay-ring-fm): old and new build
                       side by side in one run
EOF
}

ROUNDS=3 PINGS=1000 WARMUP=100 DUR=3 IDLE_N=9000 DELAY_PINGS=1000 UPGRADES=1000 QUICK=0
SKIP_CROSS=0 SKIP_IDLE=0 SKIP_DELAY=0 OUT="" PUBLISH=""
LOADGEN=target/release/loadgen RELAY_BIN=target/release/ws-relay-core OLD_RELAY_BIN=""
SYSTEMS_ARG="direct,forwarder,relay-copy-fm,relay-copy-hdr,relay-splice-fm,relay-splice-hdr,nginx,reframing"
TESTS_ARG="ping,tput64,tput16k,agg100"
ARGS_GIVEN="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ROUNDS=2 PINGS=300 DUR=1 IDLE_N=2000 DELAY_PINGS=100 UPGRADES=200 ;;
        --rounds) ROUNDS=$2; shift ;;
        --pings) PINGS=$2; shift ;;
        --duration) DUR=$2; shift ;;
        --idle-sessions) IDLE_N=$2; shift ;;
        --delay-pings) DELAY_PINGS=$2; shift ;;
        --systems) SYSTEMS_ARG=$2; shift ;;
        --tests) TESTS_ARG=$2; shift ;;
        --upgrades) UPGRADES=$2; shift ;;
        --publish) PUBLISH=$2; shift ;;
        --skip-cross) SKIP_CROSS=1 ;;
        --skip-idle) SKIP_IDLE=1 ;;
        --skip-delay) SKIP_DELAY=1 ;;
        --out) OUT=$2; shift ;;
        --loadgen) LOADGEN=$2; shift ;;
        --relay-bin) RELAY_BIN=$2; shift ;;
        --old-relay-bin) OLD_RELAY_BIN=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 1 ;;
    esac
    shift
done
IFS=, read -r -a SYSTEMS <<<"$SYSTEMS_ARG"
IFS=, read -r -a TESTS <<<"$TESTS_ARG"
for s in "${SYSTEMS[@]}"; do
    if [[ "$s" == old-* ]]; then
        [ -n "$OLD_RELAY_BIN" ] || { echo "$s needs --old-relay-bin" >&2; exit 1; }
        s=${s#old-}
        [[ "$s" == relay-* ]] || { echo "old- applies to relay-* systems only" >&2; exit 1; }
    fi
    case "$s" in
        direct|forwarder|relay-copy-fm|relay-copy-hdr|relay-splice-fm|relay-splice-hdr|nginx|reframing) ;;
        relay-ring-fm|relay-ring-hdr) ;;
        relay-proxy|relay-proxy-copy|relay-proxy-ring|haproxy) ;;
        *) echo "unknown system: $s" >&2; usage >&2; exit 1 ;;
    esac
done
CROSS_TESTS=()
for t in "${TESTS[@]}"; do
    case "$t" in
        ping|tput64) CROSS_TESTS+=("$t") ;;
        tput16k|agg100|upgrade) ;;
        *) echo "unknown test: $t" >&2; usage >&2; exit 1 ;;
    esac
done

HELPER="python3 benches/e2e/helper.py"
FWD_BIN=benches/forwarder/target/release/bench-forwarder
RR_BIN=benches/reframing-relay/target/release/bench-reframing-relay
TOKEN=bench-token-0123456789
T_START=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STAMP=$(date -u +%Y%m%d-%H%M%S)
KIND=e2e
for s in "${SYSTEMS[@]}"; do case "$s" in relay-proxy*|haproxy) KIND=proxy ;; esac; done
SUFFIX="$STAMP$([ $QUICK = 1 ] && echo -quick)"
# Raw reports and logs stay out of git (target/ is ignored); only summary.md is published.
[ -n "$OUT" ] || OUT="target/bench/$KIND-$SUFFIX"
[ -n "$PUBLISH" ] || PUBLISH="docs/bench/$KIND-$SUFFIX"
mkdir -p "$OUT/raw" "$OUT/logs"
TMP=$(mktemp -d /tmp/ws-e2e.XXXXXX)

qcmd() { local s; s=$(printf '%q ' "$@"); printf '%s' "${s% }"; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ------------------------------------------------------------------ children
CHILDREN=()   # started and not yet stopped
LG_PID=""     # the loadgen run in progress
forget() { local p keep=(); for p in "${CHILDREN[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; CHILDREN=("${keep[@]}"); }
cleanup() {
    local p
    [ -n "$LG_PID" ] && CHILDREN+=("$LG_PID")
    for p in "${CHILDREN[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
        local alive=0
        for p in "${CHILDREN[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.2
    done
    for p in "${CHILDREN[@]}"; do kill -KILL "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP

# Stop one child: SIGTERM, then SIGKILL after 3 s.
stop_pid() {
    local p=$1
    kill -TERM "$p" 2>/dev/null || { wait "$p" 2>/dev/null; forget "$p"; return 0; }
    for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
    forget "$p"
    return 0
}

# First line "listening on ...:PORT[/]" of a log file -> PORT.
wait_listen_line() {
    local file=$1 pid=$2
    for _ in $(seq 200); do
        if [ -s "$file" ] && head -1 "$file" | grep -q 'listening on'; then
            head -1 "$file" | sed -E 's#.*:([0-9]+)/?[[:space:]]*$#\1#'
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    log "no 'listening on' line in $file:"; cat "$file" >&2
    return 1
}

# --------------------------------------------------------------- /proc reads
tree_pids() {
    local p=$1 c
    echo "$p"
    for c in $(pgrep -P "$p" 2>/dev/null); do tree_pids "$c"; done
}
cpu_ticks() {   # utime+stime of a process tree, clock ticks
    local t=0 p f
    for p in $(tree_pids "$1"); do
        [ -r "/proc/$p/stat" ] || continue
        read -r -a f < <(sed 's/.*) //' "/proc/$p/stat")
        t=$((t + f[11] + f[12]))
    done
    echo "$t"
}
status_sum() {  # sum of a /proc/PID/status field (VmRSS in KiB, Threads) over a tree
    local field=$1 t=0 p v
    for p in $(tree_pids "$2"); do
        v=$(awk -v k="$field:" '$1 == k {print $2}' "/proc/$p/status" 2>/dev/null)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

# ---------------------------------------------------------------- preflight
[ -x "$LOADGEN" ] || die "$LOADGEN missing: run cargo build --release first"
[ -x "$RELAY_BIN" ] || die "$RELAY_BIN missing: run cargo build --release first"
RELAY_ABS=$(readlink -f "$RELAY_BIN")
OLD_RELAY_ABS=""
if [ -n "$OLD_RELAY_BIN" ]; then
    [ -x "$OLD_RELAY_BIN" ] || die "$OLD_RELAY_BIN missing"
    OLD_RELAY_ABS=$(readlink -f "$OLD_RELAY_BIN")
fi
command -v taskset >/dev/null || die "taskset (util-linux) is needed"
NCPU=$(nproc)
[ "$NCPU" -ge 2 ] || { log "only $NCPU CPU: skipping the cross-core phase"; SKIP_CROSS=1; }
IDLE_CPU=1; [ "$NCPU" -ge 2 ] || IDLE_CPU=0

HARD=$(ulimit -Hn)
if [ "$HARD" != unlimited ]; then ulimit -n "$HARD"; else ulimit -n 1048576 2>/dev/null || true; fi
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ $((IDLE_N * 2 + 200)) -gt "$NOFILE" ]; then
    IDLE_N=$(((NOFILE - 200) / 2))
    log "open-file limit $NOFILE: idle sessions lowered to $IDLE_N"
fi

want() { local s; for s in "${SYSTEMS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

log "building the helper binaries (benches/forwarder, benches/reframing-relay)"
for m in benches/forwarder/Cargo.toml benches/reframing-relay/Cargo.toml; do
    if ! cargo build --release --manifest-path "$m" >"$OUT/logs/build-$(basename "$(dirname "$m")").log" 2>&1; then
        cargo build --release --offline --manifest-path "$m" >>"$OUT/logs/build-$(basename "$(dirname "$m")").log" 2>&1 \
            || die "cannot build $m (see $OUT/logs/)"
    fi
done

NGINX=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)
if want nginx && [ -z "$NGINX" ]; then
    log "nginx not found: apt-get install -y nginx"
    if [ "$(id -u)" = 0 ]; then
        { DEBIAN_FRONTEND=noninteractive apt-get install -y nginx \
            || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nginx; }; } \
            >"$OUT/logs/apt-nginx.log" 2>&1
    else
        { sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y nginx; } >"$OUT/logs/apt-nginx.log" 2>&1
    fi
    NGINX=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)
fi
if want nginx && [ -z "$NGINX" ]; then
    log "nginx unavailable: its rows are skipped"
    SYSTEMS=($(for s in "${SYSTEMS[@]}"; do [ "$s" = nginx ] || echo "$s"; done))
fi
HAPROXY=$(command -v haproxy || { [ -x /usr/sbin/haproxy ] && echo /usr/sbin/haproxy; } || true)
if want haproxy && [ -z "$HAPROXY" ]; then
    log "haproxy not found: apt-get install -y haproxy"
    if [ "$(id -u)" = 0 ]; then
        { DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy \
            || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy; }; } \
            >"$OUT/logs/apt-haproxy.log" 2>&1
    else
        { sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy; } >"$OUT/logs/apt-haproxy.log" 2>&1
    fi
    HAPROXY=$(command -v haproxy || { [ -x /usr/sbin/haproxy ] && echo /usr/sbin/haproxy; } || true)
fi
if want haproxy && [ -z "$HAPROXY" ]; then
    log "haproxy unavailable: its rows are skipped"
    SYSTEMS=($(for s in "${SYSTEMS[@]}"; do [ "$s" = haproxy ] || echo "$s"; done))
fi
# HAProxy needs two sockets per session plus a few: size maxconn to the limit.
HAPROXY_MAXCONN=20000
if [ "$NOFILE" != unlimited ] && [ $(((NOFILE - 300) / 2)) -lt $HAPROXY_MAXCONN ]; then
    HAPROXY_MAXCONN=$(((NOFILE - 300) / 2))
fi
# Started systems never survive a Debian service start: the packaged nginx
# listens on :80 only if its init script ran; ours uses its own prefix and port.

# ------------------------------------------------------------- system start
declare -A SUT_PID SUT_PORT
ECHO_PID="" ECHO_PORT=""

start_echo() {   # start_echo NAME [DELAY_MS] -> ECHO_PID, ECHO_PORT
    local name=$1 delay=${2:-0} f="$OUT/logs/$1.log"
    local cmd=(taskset -c 0 "$LOADGEN" echo-server --listen 127.0.0.1:0 --threads 1 --pin 0)
    [ "$delay" = 0 ] || cmd+=(--delay-ms "$delay")
    "${cmd[@]}" >"$f" 2>&1 &
    ECHO_PID=$!; CHILDREN+=("$ECHO_PID")
    ECHO_PORT=$(wait_listen_line "$f" "$ECHO_PID") || die "echo server did not start"
    printf '%s\t%s\t%s\n' "$CASE" "$name" "$(qcmd "${cmd[@]}")" >>"$OUT/systems.tsv"
}

relay_config() {   # relay_config DIR PORT MODE [proxy]
    cat >"$1/relay.toml" <<EOF
# written by benches/e2e/e2e.sh (the keys loadgen compare writes, plus idle_timeout_secs = 0)
[server]
host = "127.0.0.1"
port = $2
enable_tls = false
allow_private_targets = true
workers = 1
forward = "$3"
idle_timeout_secs = 0
shutdown_grace_secs = 1
control_socket = "$1/relay.sock"

[[users]]
name = "bench"
token = "$TOKEN"

[logging]
level = "warn"
directory = ""
console_output = true
EOF
    [ "${4:-}" = proxy ] || return 0
    # The reverse proxy: the relay keeps /relay, one route takes everything else.
    sed -i 's#^forward = .*#&\nrelay_path = "/relay"#' "$1/relay.toml"
    cat >>"$1/relay.toml" <<EOF

[[routes]]
name = "bench"
path = "/"
upstream = ["ws://127.0.0.1:$ECHO_PORT"]
EOF
}

start_sut() {    # start_sut NAME CPU   (NAME: forwarder relay-copy relay-splice nginx reframing
                 #                       relay-proxy relay-proxy-copy haproxy)
    local name=$1 cpu=$2 f="$OUT/logs/$CASE-$1.log" d="$TMP/$CASE-$1" port pid cmd
    local bin=$RELAY_ABS kind=$1
    # old-relay-*: the same system, run from the --old-relay-bin build
    [[ "$name" == old-* ]] && { bin=$OLD_RELAY_ABS kind=${name#old-}; }
    mkdir -p "$d"
    case "$kind" in
        forwarder)
            cmd=(taskset -c "$cpu" "$FWD_BIN" --listen 127.0.0.1:0 --upstream "127.0.0.1:$ECHO_PORT")
            "${cmd[@]}" >"$f" 2>&1 &
            pid=$!; CHILDREN+=("$pid")
            port=$(wait_listen_line "$f" "$pid") || return 1 ;;
        reframing)
            cmd=(taskset -c "$cpu" "$RR_BIN" --listen 127.0.0.1:0 --target "ws://127.0.0.1:$ECHO_PORT/")
            "${cmd[@]}" >"$f" 2>&1 &
            pid=$!; CHILDREN+=("$pid")
            port=$(wait_listen_line "$f" "$pid") || return 1 ;;
        relay-copy|relay-splice|relay-ring)
            port=$($HELPER freeport)
            relay_config "$d" "$port" "${kind#relay-}"
            cp "$d/relay.toml" "$OUT/logs/$CASE-$name.toml"
            cmd=(taskset -c "$cpu" "$bin" --config "$d/relay.toml")
            (cd "$d" && exec "${cmd[@]}") >"$f" 2>&1 &
            pid=$!; CHILDREN+=("$pid")
            $HELPER wait-health "$port" 20 || { cat "$f" >&2; return 1; } ;;
        relay-proxy|relay-proxy-copy|relay-proxy-ring)
            port=$($HELPER freeport)
            local fwd=splice
            case "$kind" in relay-proxy-copy) fwd=copy ;; relay-proxy-ring) fwd=ring ;; esac
            relay_config "$d" "$port" "$fwd" proxy
            cp "$d/relay.toml" "$OUT/logs/$CASE-$name.toml"
            cmd=(taskset -c "$cpu" "$bin" --config "$d/relay.toml")
            (cd "$d" && exec "${cmd[@]}") >"$f" 2>&1 &
            pid=$!; CHILDREN+=("$pid")
            $HELPER wait-health "$port" 20 || { cat "$f" >&2; return 1; } ;;
        haproxy)
            port=$($HELPER freeport)
            sed -e "s#@PREFIX@#$d#g" -e "s#@LISTEN_PORT@#$port#g" -e "s#@UPSTREAM_PORT@#$ECHO_PORT#g" \
                -e "s#@MAXCONN@#$HAPROXY_MAXCONN#g" benches/haproxy/haproxy.cfg.template >"$d/haproxy.cfg"
            cp "$d/haproxy.cfg" "$OUT/logs/$CASE-haproxy.cfg"
            cmd=(taskset -c "$cpu" "$HAPROXY" -db -f "$d/haproxy.cfg")
            "${cmd[@]}" >"$f" 2>&1 &
            pid=$!; CHILDREN+=("$pid")
            $HELPER wait-port "$port" 20 || { cat "$f" >&2; return 1; } ;;
        nginx)
            port=$($HELPER freeport)
            mkdir -p "$d/tmp"
            sed -e "s#@PREFIX@#$d#g" -e "s#@LISTEN_PORT@#$port#g" -e "s#@UPSTREAM_PORT@#$ECHO_PORT#g" \
                benches/nginx/nginx.conf.template >"$d/nginx.conf"
            cp "$d/nginx.conf" "$OUT/logs/$CASE-nginx.conf"
            cmd=(taskset -c "$cpu" "$NGINX" -p "$d/" -c "$d/nginx.conf" -e "$d/error.log")
            "${cmd[@]}" >"$f" 2>&1 &
            pid=$!; CHILDREN+=("$pid")
            $HELPER wait-port "$port" 20 || { cat "$f" "$d/error.log" >&2; return 1; }
            # the worker must exist before the first measurement
            for _ in $(seq 50); do [ -n "$(pgrep -P "$pid")" ] && break; sleep 0.05; done ;;
        *) die "unknown system $name" ;;
    esac
    SUT_PID[$name]=$pid SUT_PORT[$name]=$port
    local shown; shown=$(qcmd "${cmd[@]}")
    case "$name" in
        relay-*|old-relay-*) shown="${shown//$d\/relay.toml/$OUT/logs/$CASE-$name.toml}" ;;
        nginx) shown="$shown  # config as $OUT/logs/$CASE-nginx.conf" ;;
        haproxy) shown="${shown//$d\/haproxy.cfg/$OUT/logs/$CASE-haproxy.cfg}" ;;
    esac
    printf '%s\t%s\t%s\n' "$CASE" "$name" "$shown" >>"$OUT/systems.tsv"
}

stop_sut() {
    local name=$1
    [ -n "${SUT_PID[$name]:-}" ] || return 0
    [ "$name" = nginx ] && cp "$TMP/$CASE-nginx/error.log" "$OUT/logs/$CASE-nginx-error.log" 2>/dev/null
    stop_pid "${SUT_PID[$name]}"
    unset "SUT_PID[$name]" "SUT_PORT[$name]"
}

proc_of() {      # system id -> process name ("" for direct)
    case "$1" in
        direct) echo "" ;;
        relay-copy-*) echo relay-copy ;;
        relay-splice-*) echo relay-splice ;;
        relay-ring-*) echo relay-ring ;;
        old-relay-*-fm|old-relay-*-hdr) local p=${1#old-}; p=${p%-fm}; echo "old-${p%-hdr}" ;;
        *) echo "$1" ;;
    esac
}

needed_procs() {
    local s p seen=" "
    for s in "${SYSTEMS[@]}"; do
        p=$(proc_of "$s")
        [ -n "$p" ] && [[ "$seen" != *" $p "* ]] && { seen+="$p "; echo "$p"; }
    done
}

# ------------------------------------------------------------- loadgen runs
printf 'case\ttest\tsystem\tround\tjson\trc\tcpu_ticks\tcmd\n' >"$OUT/manifest.tsv"
: >"$OUT/commands.log"
: >"$OUT/systems.tsv"

# run_lg TEST SYSTEM ROUND MODE-ARGS...  (URL and route added here)
run_lg() {
    local test=$1 sys=$2 round=$3; shift 3
    local proc url route=() name="$CASE-$test-$sys-r$round"
    proc=$(proc_of "$sys")
    case "$sys" in
        direct) url="ws://127.0.0.1:$ECHO_PORT/" ;;
        relay-*-fm|relay-*-hdr|old-relay-*-fm|old-relay-*-hdr)
            url="ws://127.0.0.1:$ECHO_PORT/"
            local auth=first-message; [[ "$sys" == *-hdr ]] && auth=header
            route=(--relay "ws://127.0.0.1:${SUT_PORT[$proc]}/" --token "$TOKEN" --auth "$auth") ;;
        *) url="ws://127.0.0.1:${SUT_PORT[$proc]}/" ;;
    esac
    local cmd=(taskset -c 0 "$LOADGEN" "$@" "$url" "${route[@]}" --threads 1 --pin 0 --name "$name" --json)
    local before="" after="" ticks="-" rc
    [ -n "$proc" ] && before=$(cpu_ticks "${SUT_PID[$proc]}")
    # In the background so that a signal to the script is handled at once (cleanup stops it).
    timeout --kill-after=5 $((DUR * 3 + 120)) "${cmd[@]}" >"$OUT/raw/$name.json" 2>"$OUT/raw/$name.err" &
    LG_PID=$!
    wait "$LG_PID"; rc=$?
    LG_PID=""
    [ -n "$proc" ] && { after=$(cpu_ticks "${SUT_PID[$proc]}"); ticks=$((after - before)); }
    [ -s "$OUT/raw/$name.err" ] || rm -f "$OUT/raw/$name.err"
    local line; line="$(qcmd "${cmd[@]}") > $OUT/raw/$name.json"
    echo "$line" >>"$OUT/commands.log"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$CASE" "$test" "$sys" "$round" "raw/$name.json" "$rc" "$ticks" \
        "$(qcmd "${cmd[@]}")" >>"$OUT/manifest.tsv"
    [ "$rc" = 0 ] || log "  $name: exit $rc (see $OUT/raw/$name.*)"
}

test_args() {    # test id -> loadgen mode arguments
    case "$1" in
        ping) echo "ping --size 64 -n $PINGS --warmup $WARMUP" ;;
        upgrade) echo "connect -n $UPGRADES --concurrency 1" ;;
        tput64) echo "throughput --size 64 -w 4096 -d $DUR" ;;
        tput16k) echo "throughput --size 16384 -w 128 -d $DUR" ;;
        agg100) echo "throughput --size 64 -c 100 -w 128 -d $DUR" ;;
    esac
}

upgrade_system() { case "${1#old-}" in direct|relay-proxy|relay-proxy-copy|relay-proxy-ring|nginx|haproxy) return 0 ;; esac; return 1; }

# phase CASE SUT_CPU TESTS...
phase() {
    CASE=$1; local cpu=$2; shift 2
    local tests=("$@") p r i t n=${#SYSTEMS[@]}
    log "phase $CASE: systems under test on CPU $cpu; tests: ${tests[*]}; $ROUNDS rounds"
    start_echo "$CASE-echo"
    for p in $(needed_procs); do start_sut "$p" "$cpu" || die "$p did not start ($CASE)"; done
    for r in $(seq "$ROUNDS"); do
        log "  $CASE round $r/$ROUNDS"
        for t in "${tests[@]}"; do
            for i in $(seq 0 $((n - 1))); do
                local s=${SYSTEMS[$(((i + r - 1) % n))]}
                # upgrade latency: plain upgrades only (the relay-* systems add their own auth)
                [ "$t" = upgrade ] && ! upgrade_system "$s" && continue
                # shellcheck disable=SC2046
                run_lg "$t" "$s" "$r" $(test_args "$t")
            done
        done
    done
    # the 48 ms scenario runs in the same-core phase
    if [ "$CASE" = same-core ] && [ $SKIP_DELAY = 0 ]; then delay_phase; fi
    for p in $(needed_procs); do stop_sut "$p"; done
    stop_pid "$ECHO_PID"
}

# The original README's scenario: a target answering 48 ms late, direct vs
# each hop, in two variants: "delay48" with CPU 0 idle between pings (its
# vCPU halts, as on a quiet host) and "delay48-awake" with a SCHED_IDLE
# spinner keeping CPU 0 busy (it yields at once to any real work), which
# separates the hop's own cost from the VM's wake-up and cold-cache cost.
delay_phase() {
    local plain_echo=$ECHO_PID plain_port=$ECHO_PORT per=$(((DELAY_PINGS + ROUNDS - 1) / ROUNDS))
    local sys=() s p r i spin
    for s in direct forwarder relay-copy-fm relay-splice-fm relay-ring-fm nginx relay-proxy relay-proxy-copy relay-proxy-ring haproxy; do
        want "$s" && sys+=("$s")
        want "old-$s" && sys+=("old-$s")
    done
    start_echo "$CASE-echo-delay48" 48
    # the forwarder and the proxies have a fixed upstream: point them at the slow target
    for p in forwarder nginx relay-proxy relay-proxy-copy relay-proxy-ring old-relay-proxy old-relay-proxy-copy old-relay-proxy-ring haproxy; do
        [ -n "${SUT_PID[$p]:-}" ] && { stop_sut "$p"; start_sut "$p" 0 || die "$p did not restart"; }
    done
    for variant in delay48 delay48-awake; do
        spin=""
        if [ "$variant" = delay48-awake ]; then
            chrt -i 0 taskset -c 0 bash -c 'while :; do :; done' &
            spin=$!; CHILDREN+=("$spin")
        fi
        log "  48 ms target ($variant): $ROUNDS rounds x $per pings: ${sys[*]}"
        for r in $(seq "$ROUNDS"); do
            for i in $(seq 0 $((${#sys[@]} - 1))); do
                s=${sys[$(((i + r - 1) % ${#sys[@]}))]}
                run_lg "$variant" "$s" "$r" ping --size 64 -n "$per" --warmup 5 --timeout-ms 10000
            done
        done
        [ -n "$spin" ] && stop_pid "$spin"
    done
    stop_pid "$ECHO_PID"
    ECHO_PID=$plain_echo ECHO_PORT=$plain_port
}

idle_phase() {
    CASE=idle
    log "phase idle: $IDLE_N idle sessions per system (system on CPU $IDLE_CPU, holder and echo server on CPU 0)"
    printf 'system\tasked\theld\tfailed\topen_s\trss_before_kib\trss_after_kib\tthreads_before\tthreads_after\tfirst_error\n' >"$OUT/idle.tsv"
    start_echo idle-echo
    local p
    for p in $(needed_procs); do
        start_sut "$p" "$IDLE_CPU" || { log "$p did not start (idle)"; continue; }
        local pid=${SUT_PID[$p]} mode=plain
        case "${p#old-}" in relay-proxy*) ;; relay-*) mode=first-message ;; esac
        sleep 0.5
        local rss0 thr0 rss1 thr1 res
        rss0=$(status_sum VmRSS "$pid"); thr0=$(status_sum Threads "$pid")
        local hf="$OUT/logs/idle-$p-holder.out"
        local hcmd=(taskset -c 0 python3 benches/e2e/helper.py idle-hold "port=${SUT_PORT[$p]}" "n=$IDLE_N" "mode=$mode"
            "target=ws://127.0.0.1:$ECHO_PORT/" "token=$TOKEN" concurrency=100)
        echo "$(qcmd "${hcmd[@]}")  # holder for $p" >>"$OUT/commands.log"
        "${hcmd[@]}" >"$hf" 2>&1 &
        local hpid=$!; CHILDREN+=("$hpid")
        for _ in $(seq 1800); do [ -s "$hf" ] && break; kill -0 "$hpid" 2>/dev/null || break; sleep 0.1; done
        sleep 1
        rss1=$(status_sum VmRSS "$pid"); thr1=$(status_sum Threads "$pid")
        res=$(head -1 "$hf")
        python3 - "$p" "$IDLE_N" "$res" "$rss0" "$rss1" "$thr0" "$thr1" >>"$OUT/idle.tsv" <<'EOF'
import json, sys
p, n, res, rss0, rss1, t0, t1 = sys.argv[1:]
try:
    r = json.loads(res)
except ValueError:
    r = {"held": 0, "failed": n, "open_s": "-", "first_error": res[:200]}
print("\t".join(str(x) for x in (p, n, r["held"], r["failed"], r["open_s"], rss0, rss1, t0, t1, r.get("first_error") or "")))
EOF
        log "  $p: $(tail -1 "$OUT/idle.tsv" | cut -f2-9 | tr '\t' ' ')"
        stop_pid "$hpid"
        stop_sut "$p"
        sleep 0.5
    done
    stop_pid "$ECHO_PID"
}

# ------------------------------------------------------------------- run it
log "output: $OUT"
phase same-core 0 "${TESTS[@]}"
[ $SKIP_CROSS = 1 ] || [ ${#CROSS_TESTS[@]} = 0 ] || phase cross-core 1 "${CROSS_TESTS[@]}"
[ $SKIP_IDLE = 1 ] || idle_phase

T_END=$(date +%s)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
E2E_TITLE="ws-relay-core vs floor, nginx and the re-framing design"
[ "$KIND" = proxy ] && E2E_TITLE="ws-relay-core as a reverse proxy vs nginx and HAProxy"
export E2E_TITLE E2E_OUT="$OUT" E2E_LOAD="load average (1/5/15 min) before: $LOAD_BEFORE; after: $LOAD_AFTER"
export E2E_HAPROXY=""
want haproxy && E2E_HAPROXY=", $($HAPROXY -v 2>&1 | head -1 | cut -d' ' -f1-3)"
export E2E_META_CMD="benches/e2e/e2e.sh $ARGS_GIVEN" E2E_WALL=$((T_END - T_START)) \
    E2E_SETTINGS="rounds=$ROUNDS, pings=$PINGS (+$WARMUP warm-up), throughput ${DUR} s (64 B window 4096; 16 KiB window 128; 100 conns window 128 each), idle sessions=$IDLE_N, 48 ms pings=$DELAY_PINGS$(for t in "${TESTS[@]}"; do [ "$t" = upgrade ] && echo ", upgrades=$UPGRADES one at a time"; done)" \
    E2E_SYSTEMS="${SYSTEMS[*]}" E2E_PROCS="$(needed_procs | tr '\n' ' ')" E2E_NGINX="$($NGINX -v 2>&1 | head -1)" E2E_LOADGEN="$($LOADGEN --version 2>/dev/null)"
python3 - "$OUT/meta.json" <<'EOF'
import json, os, platform, sys, time
model = ""
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip(); break
except OSError:
    pass
labels = {
    "direct": "direct (no hop)",
    "forwarder": "copy forwarder (floor)",
    "relay-copy-fm": "ws-relay-core copy, first-message",
    "relay-copy-hdr": "ws-relay-core copy, header",
    "relay-splice-fm": "ws-relay-core splice, first-message",
    "relay-splice-hdr": "ws-relay-core splice, header",
    "nginx": "nginx (1 worker)",
    "relay-proxy": "ws-relay-core proxy, splice",
    "relay-proxy-copy": "ws-relay-core proxy, copy",
    "relay-proxy-ring": "ws-relay-core proxy, ring",
    "relay-ring-fm": "ws-relay-core ring, first-message",
    "relay-ring-hdr": "ws-relay-core ring, header",
    "relay-ring": "ws-relay-core ring",
    "haproxy": "HAProxy (1 thread)",
    "reframing": "tokio-tungstenite re-framing relay",
    "relay-copy": "ws-relay-core copy",
    "relay-splice": "ws-relay-core splice",
}
for s in os.environ["E2E_SYSTEMS"].split() + [p for p in os.environ["E2E_PROCS"].split()]:
    if s.startswith("old-") and s[4:] in labels:
        labels[s] = labels[s[4:]] + " (old build)"
meta = {
    "title": os.environ["E2E_TITLE"],
    "command": os.environ["E2E_META_CMD"].strip(),
    "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() - int(os.environ["E2E_WALL"]))),
    "wall_s": int(os.environ["E2E_WALL"]),
    "host": f"{os.cpu_count()} vCPU {model}, kernel {platform.release()}, {os.environ['E2E_LOADGEN']}, {os.environ['E2E_NGINX']}{os.environ['E2E_HAPROXY']}",
    "load": os.environ["E2E_LOAD"],
    "outdir": os.environ["E2E_OUT"],
    "settings": os.environ["E2E_SETTINGS"],
    "systems_order": os.environ["E2E_SYSTEMS"].split(),
    "labels": labels,
    "clk_tck": os.sysconf("SC_CLK_TCK"),
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
log "done in $E2E_WALL s; summary: $OUT/summary.md (copied to $PUBLISH/summary.md)"
$HELPER summarize "$OUT"
mkdir -p "$PUBLISH" && cp "$OUT/summary.md" "$PUBLISH/summary.md"
