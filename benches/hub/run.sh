#!/usr/bin/env bash
# Push-hub benchmarks: ws-relay-core's hub vs a minimal tokio-tungstenite hub
# of the seed's design (benches/hub/src/bin/baseline-hub.rs) and, when Go is
# installed, a minimal Go + gorilla/websocket hub of the seed's own design
# (benches/hub/go/main.go, built by benches/hub/go/build.sh into
# benches/hub/target/go-hub; rows "seed-go-gorilla"), side by side in one run.
# Each hub runs on core 0 with one worker (`taskset -c 0`; the Go hub with
# GOMAXPROCS=1), the load client on core 1 (`taskset -c 1`). With Redis: two
# hub instances, both on core 0, one redis-server on core 1 beside the client.
#
#   bash benches/hub/run.sh [--quick]        # prints one JSON line per run
#
# Needs: cargo build --release (the relay), redis-server for the Redis rows,
# golang-go + golang-github-gorilla-websocket-dev (Debian) for the Go rows
# (skipped with a SKIP line on stderr otherwise).
set -euo pipefail
cd "$(dirname "$0")/../.."
QUICK=${1:-}
SECS=5; ITERS=2000; BIG_ITERS=50; BIG=10000
[ "$QUICK" = "--quick" ] && { SECS=2; ITERS=300; BIG_ITERS=10; BIG=2000; }
. benches/hub/lib.sh
GOHUB=benches/hub/target/go-hub
# Go comparison hub: builds offline if Go is installed, else SKIPs (exit 0).
bash benches/hub/go/build.sh || echo "SKIP: benches/hub/go/build.sh failed; using any existing $GOHUB" >&2
LOAD0="taskset -c 0 benches/hub/target/release/hub-load"
BASE=benches/hub/target/release/baseline-hub
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    # Warnings the hubs logged (slow clients, Redis transitions) go to stderr.
    local warns; warns=$(grep -h "WARN" "$WORK"/*.log 2>/dev/null || true)
    [ -n "$warns" ] && { echo "hub warnings: $(grep -c . <<<"$warns") lines, first 3:"; head -3 <<<"$warns"; grep -c "too slow" <<<"$warns" | sed 's/^/slow clients closed: /'; } >&2
    rm -rf "$WORK"
}

start_base() {
    taskset -c 0 "$BASE" "$1" 1 >"$WORK/base.log" 2>&1 &
    PIDS+=($!); LAST_PID=$!
    wait_port "$1"
}

start_go() {
    GOMAXPROCS=1 RELAY_API_KEY="$KEY" taskset -c 0 "$GOHUB" "$1" >"$WORK/go.log" 2>&1 &
    PIDS+=($!); LAST_PID=$!
    wait_port "$1"
}

suite() { # label port pid
    local label=$1 port=$2 pid=$3
    tag() { sed "s/^{/{\"system\":\"$label\",/"; }
    $LOAD latency "$port" "$KEY" 1 "$ITERS" | tag
    # The same with the client on the hub's core: no cross-core wake-ups.
    $LOAD0 latency "$port" "$KEY" 1 "$ITERS" | sed 's/^{/{"same_core":true,/' | tag
    $LOAD latency "$port" "$KEY" "$BIG" "$BIG_ITERS" | tag
    for conns in 1 100 "$BIG"; do HUB_LOAD_SERVER_PID=$pid $LOAD pushes "$port" "$KEY" "$conns" "$SECS" 4 | tag; done
    HUB_LOAD_SERVER_PID=$pid $LOAD broadcast "$port" "$KEY" 1000 "$SECS" 2 | tag
}

# Memory per idle client, each on a fresh process (earlier rows leave freed
# memory in the allocator that new clients would reuse).
P=$(free_port); start_hub "$P"; $LOAD idle "$P" "$KEY" "$BIG" "$LAST_PID" | sed 's/^{/{"system":"ws-relay-core",/'; kill "$LAST_PID"
P=$(free_port); start_base "$P"; $LOAD idle "$P" "$KEY" "$BIG" "$LAST_PID" | sed 's/^{/{"system":"baseline-tokio-tungstenite",/'; kill "$LAST_PID"
if [ -x "$GOHUB" ]; then
    P=$(free_port); start_go "$P"; $LOAD idle "$P" "$KEY" "$BIG" "$LAST_PID" | sed 's/^{/{"system":"seed-go-gorilla",/'; kill "$LAST_PID"
fi

P=$(free_port); start_hub "$P"; suite ws-relay-core "$P" "$LAST_PID"; kill "$LAST_PID"
P=$(free_port); WS_RELAY_DRIVER=legacy start_hub "$P"; suite "ws-relay-core (epoll driver)" "$P" "$LAST_PID"; kill "$LAST_PID"
P=$(free_port); start_base "$P"; suite baseline-tokio-tungstenite "$P" "$LAST_PID"; kill "$LAST_PID"
if [ -x "$GOHUB" ]; then
    P=$(free_port); start_go "$P"; suite seed-go-gorilla "$P" "$LAST_PID"; kill "$LAST_PID"
else
    echo "SKIP: $GOHUB not built (apt-get install golang-go golang-github-gorilla-websocket-dev); no seed-go-gorilla rows" >&2
fi

if redis_up; then
    A=$(free_port); start_hub "$A" "redis_url = \"redis://127.0.0.1:$RP/\""
    B=$(free_port); start_hub "$B" "redis_url = \"redis://127.0.0.1:$RP/\""
    sleep 0.5
    # Pushes go to A, clients sit on B (HUB_LOAD_CLIENT_PORT): every row
    # crosses Redis.
    tag() { sed "s/^{/{\"system\":\"ws-relay-core+redis (push A, clients B)\",/"; }
    HUB_LOAD_CLIENT_PORT=$B $LOAD latency "$A" "$KEY" 1 "$ITERS" | tag
    HUB_LOAD_CLIENT_PORT=$B $LOAD latency "$A" "$KEY" "$BIG" "$BIG_ITERS" | tag
    # Open-loop rows: A accepts pushes faster than B's clients (sharing
    # core 1 with redis-server) can read them, so keep the fan-out small.
    HUB_LOAD_CLIENT_PORT=$B $LOAD pushes "$A" "$KEY" 1 "$SECS" 1 | tag
    HUB_LOAD_CLIENT_PORT=$B $LOAD broadcast "$A" "$KEY" 10 "$SECS" 1 | tag
fi
