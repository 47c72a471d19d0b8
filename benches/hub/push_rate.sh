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
# ROWS (comma list, default all): single, single-history, redis, redis-history, go
#   single          one instance, no Redis, history off (the seed's behaviour)
#   single-history  one instance, history in memory
#   redis           pushes to A, the client on B, through Redis, history off
#   redis-history   the same with history in Redis
#   go              the seed's own stack (benches/hub/go, GOMAXPROCS=1 on CPU 0)
# Prints one JSON line per row.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-5}
ROWS=${2:-single,single-history,redis,redis-history,go}
HISTORY=${HISTORY:-1000}
. benches/hub/lib.sh

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
    go)
        bash benches/hub/go/build.sh
        [ -x benches/hub/target/go-hub ] || { echo "SKIP: no go-hub" >&2; continue; }
        P=$(free_port)
        GOMAXPROCS=1 RELAY_API_KEY="$KEY" taskset -c 0 benches/hub/target/go-hub "$P" >"$WORK/go.log" 2>&1 &
        PIDS+=($!); GP=$!
        wait_port "$P"
        PUSH=$P CLIENT=$P SERVER=$GP row "seed Go hub"
        kill "$GP" ;;
    *) echo "unknown row $r" >&2; exit 2 ;;
    esac
done
