#!/usr/bin/env bash
# Push rate as a new user tries it (issue 28, docs/hub.md "Benchmarks"):
# every hub instance has `workers = 1` on core 0; redis-server and the load
# client share core 1. 4 keep-alive pushers, one request in flight each,
# two ways per row:
#   - hub-load `pushes` for SECS seconds, which checks every acknowledged
#     push reached the one client of that user;
#   - `h2load --h1 -c 4 -m 1 -n N` (the issue's own tool; N = 20,000 x SECS),
#     with a hub-load `listen` client of that user counting what arrives.
#
#   bash benches/hub/push_rate.sh [SECS] [ROWS]
#
# ROWS (comma list, default all): single, single-history, redis, redis-history
#   single          one instance, no Redis, history off (the seed's behaviour)
#   single-history  one instance, history in memory
#   redis           pushes to A, the client on B, through Redis, history off
#   redis-history   the same with history in Redis
# Prints one JSON line per row.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-5}
ROWS=${2:-single,single-history,redis,redis-history}
HISTORY=${HISTORY:-1000}
ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p ws-relay-core
cargo build --release -q --manifest-path benches/hub/Cargo.toml
RELAY=${RELAY:-target/release/ws-relay-core}
LOAD="taskset -c 1 benches/hub/target/release/hub-load"
KEY=bench-api-key-0123456789
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    grep -h "WARN\|ERROR" "$WORK"/*.log 2>/dev/null | head -5 >&2 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

start_hub() { # port [hub toml lines...]
    local port=$1 cfg="$WORK/hub-$1.toml"; shift
    cat >"$cfg" <<TOML
[server]
host = "127.0.0.1"
port = $port
enable_tls = false
workers = 1
max_connections = 0
control_socket = "$WORK/hub-$port.sock"
[logging]
level = "warn"
directory = ""
[hub]
enabled = true
api_key = "$KEY"
max_queue_messages = 4096
TOML
    printf '%s\n' "$@" >>"$cfg"
    taskset -c 0 "$RELAY" --config "$cfg" serve >"$WORK/hub-$port.log" 2>&1 &
    PIDS+=($!); LAST_PID=$!
    wait_port "$port"
}

redis_up() {
    [ -n "${RP:-}" ] && return
    command -v redis-server >/dev/null || { echo "SKIP: redis-server not found" >&2; return 1; }
    RP=$(free_port)
    taskset -c 1 redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
    PIDS+=($!)
    wait_port "$RP"
}

BODY="$WORK/body.json"
echo '{"event_name":"bench","subject":{"n":1},"token":"bench"}' >"$BODY"
N=$((20000 * SECS))

row() { # label: runs 4 pushers against $PUSH, the client on $CLIENT
    HUB_LOAD_CLIENT_PORT=$CLIENT HUB_LOAD_SERVER_PID=$SERVER $LOAD pushes "$PUSH" "$KEY" 1 "$SECS" 4 \
        | sed "s/^{/{\"system\":\"$1\",\"cores\":\"hub 0, redis+client 1\",/"
    command -v h2load >/dev/null || { echo "SKIP: h2load not found (apt-get install nghttp2-client)" >&2; return; }
    local listened="$WORK/listen.json"
    $LOAD listen "$CLIENT" "$KEY" 1 $((SECS * 4 + 5)) >"$listened" 2>"$WORK/listen.err" &
    local lp=$!
    for _ in $(seq 100); do grep -q listening "$WORK/listen.err" 2>/dev/null && break; sleep 0.1; done
    local out; out=$(taskset -c 1 h2load --h1 -c 4 -m 1 -n "$N" -d "$BODY" \
        -H "X-API-KEY: $KEY" -H "Content-Type: application/json" "http://127.0.0.1:$PUSH/api/push")
    local rps ok; rps=$(grep -oP 'finished in [^,]+, \K[0-9.]+(?= req/s)' <<<"$out")
    ok=$(grep -oP 'requests: .* \K[0-9]+(?= succeeded)' <<<"$out")
    wait "$lp"
    local got; got=$(grep -oP '"received":\K[0-9]+' "$listened")
    echo "{\"system\":\"$1\",\"tool\":\"h2load --h1 -c 4 -m 1 -n $N\",\"req_per_s\":$rps,\"succeeded\":$ok,\"received\":$got,\"all_arrived\":$([ "$got" = "$ok" ] && echo true || echo false)}"
}

for r in ${ROWS//,/ }; do
    case $r in
    single | single-history)
        extra=(); [ "$r" = single-history ] && extra=("history_size = $HISTORY")
        P=$(free_port); start_hub "$P" "${extra[@]}"
        PUSH=$P CLIENT=$P SERVER=$LAST_PID row "$r"
        kill "$LAST_PID" ;;
    redis | redis-history)
        redis_up || continue
        url="redis_url = \"redis://127.0.0.1:$RP/\""
        extra=("$url"); [ "$r" = redis-history ] && extra+=("history_size = $HISTORY")
        A=$(free_port); start_hub "$A" "${extra[@]}"; PA=$LAST_PID
        B=$(free_port); start_hub "$B" "${extra[@]}"; PB=$LAST_PID
        sleep 0.5
        PUSH=$A CLIENT=$B SERVER=$PA row "$r (push A, client B)"
        kill "$PA" "$PB" ;;
    *) echo "unknown row $r" >&2; exit 2 ;;
    esac
done
