#!/usr/bin/env bash
# Relayed 64-byte ping through a TLS relay, side by side in one run and
# alternating: plain (ws->relay->ws), TLS toward the client (wss->relay->ws)
# and TLS on both sides (wss->relay->wss). Everything pinned to CPU 0
# (same-core, the clean case on this VM). Optional: OLD=path/to/ws-relay-core
# adds the same TLS rows for another build (e.g. the previous commit).
#
#   benches/tls/record_layer.sh [ROUNDS] [PINGS]
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/lib.sh

ROUNDS=${1:-3}
PINGS=${2:-20000}
CPU=${CPU:-0}
[ -x target/release/ws-relay-core ] && [ -x target/release/loadgen ] || cargo build --release -q

tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

ECHO_PORT=$(free_port)
taskset -c "$CPU" target/release/loadgen echo-server --listen "127.0.0.1:$ECHO_PORT" --threads 1 >"$tmp/echo.log" 2>&1 &
wait_port "$ECHO_PORT"
TLS_ECHO_PORT=$(free_port)
taskset -c "$CPU" target/release/loadgen echo-server --tls --listen "127.0.0.1:$TLS_ECHO_PORT" --threads 1 >"$tmp/echo-tls.log" 2>&1 &
wait_port "$TLS_ECHO_PORT"

# start_relay NAME BINARY TLS(true|false) -> sets PORT_<NAME>
start_relay() {
    local port dir="$tmp/$1"
    mkdir -p "$dir"
    port=$(free_port)
    write_relay_config "$dir/relay.toml" "$port" "$3" copy "$dir"
    sed -i '/^\[server\]/a insecure_skip_verify = true' "$dir/relay.toml"
    taskset -c "$CPU" "$2" --config "$dir/relay.toml" >"$dir/relay.log" 2>&1 &
    wait_port "$port"
    printf -v "PORT_$1" '%s' "$port"
}

start_relay plain target/release/ws-relay-core false
start_relay tls target/release/ws-relay-core true
rows="plain:ws:plain:ws tls-client:wss:tls:ws tls-both:wss:tls:wss"
if [ -n "${OLD:-}" ]; then
    start_relay oldtls "$OLD" true
    rows="$rows old-tls-client:wss:oldtls:ws old-tls-both:wss:oldtls:wss"
fi

ping_once() { # SCHEME RELAYPORT TARGETSCHEME -> "p50 p99"
    local target="ws://127.0.0.1:$ECHO_PORT/"
    [ "$3" = wss ] && target="wss://localhost:$TLS_ECHO_PORT/"
    taskset -c "$CPU" target/release/loadgen ping --relay "$1://127.0.0.1:$2/" --insecure \
        --token bench-token -n "$PINGS" --warmup 2000 --threads 1 --json "$target" \
        | python3 -c 'import json,sys; r=json.load(sys.stdin); l=r["runs"][0]["latency_us"]; print(l["p50"], l["p99"])'
}

for round in $(seq 1 "$ROUNDS"); do
    for row in $rows; do
        IFS=: read -r name scheme relay tscheme <<<"$row"
        port_var="PORT_$relay"
        echo "$round $name $(ping_once "$scheme" "${!port_var}" "$tscheme")"
    done
done | tee "$tmp/raw.txt"

echo
echo "medians over $ROUNDS rounds, $PINGS pings each, same-core (CPU $CPU), microseconds:"
python3 - "$tmp/raw.txt" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(lambda: ([], []))
order = []
for line in open(sys.argv[1]):
    _, name, p50, p99 = line.split()
    if name not in order: order.append(name)
    rows[name][0].append(float(p50)); rows[name][1].append(float(p99))
print(f"{'path':16} {'p50':>8} {'p99':>8}")
for n in order:
    print(f"{n:16} {statistics.median(rows[n][0]):8.1f} {statistics.median(rows[n][1]):8.1f}")
PY
