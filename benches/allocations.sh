#!/usr/bin/env bash
# Heap allocations the relay makes per relayed 64-byte round trip, counted by
# valgrind's DHAT: the relay runs twice, for N_SMALL and N_LARGE pings on one
# session, and the difference in allocated blocks is divided by the extra
# pings. Plain sessions should show 0; TLS shows what rustls allocates per
# record.
#
#   benches/allocations.sh            # plain and TLS client side
# Runs the epoll driver: valgrind does not reliably deliver io_uring's
# cross-thread wake-up that shutdown relies on.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

N_SMALL=${N_SMALL:-500}
N_LARGE=${N_LARGE:-2500}

command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
[ -x target/release/ws-relay-core ] && [ -x target/release/loadgen ] || cargo build --release -q

tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

start_echo "$tmp"
target_port=$ECHO_PORT

# Prints the number of heap blocks the relay allocated for $2 pings ($1: plain|tls).
blocks() {
    local mode=$1 n=$2 port scheme tls pid
    port=$(free_port)
    [ "$mode" = tls ] && { tls=true; scheme=wss; } || { tls=false; scheme=ws; }
    write_relay_config "$tmp/relay.toml" "$port" $tls copy "$tmp"
    WS_RELAY_DRIVER=legacy valgrind --tool=dhat --dhat-out-file="$tmp/dhat.$mode.$n" \
        target/release/ws-relay-core --config "$tmp/relay.toml" >"$tmp/relay.$mode.$n.log" 2>&1 &
    pid=$!
    wait_port "$port"
    target/release/loadgen ping --relay "$scheme://127.0.0.1:$port/" --insecure --token bench-token \
        -n "$n" --warmup 0 --threads 1 "ws://127.0.0.1:$target_port/" >"$tmp/ping.$mode.$n.log" 2>&1 \
        || { cat "$tmp/ping.$mode.$n.log" >&2; exit 1; }
    stop_relay "$pid"
    grep -oE 'Total: +[0-9,]+ bytes in [0-9,]+ blocks' "$tmp/relay.$mode.$n.log" | awk '{print $5}' | tr -d ,
}

for mode in plain tls; do
    small=$(blocks "$mode" "$N_SMALL")
    large=$(blocks "$mode" "$N_LARGE")
    per=$(python3 -c "print(round(($large - $small) / ($N_LARGE - $N_SMALL), 2))")
    echo "$mode client side: $small blocks for $N_SMALL pings, $large for $N_LARGE -> $per allocations per relayed round trip"
done
