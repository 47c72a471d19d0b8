#!/usr/bin/env bash
# Heap allocations the relay makes per relayed 64-byte round trip, counted by
# valgrind's DHAT: the relay runs twice, for N_SMALL and N_LARGE pings on one
# session, and the difference in allocated blocks is divided by the extra
# pings. Every mode should show 0: plain sessions, TLS toward the client, and
# TLS on both sides (the relay's own record layer; rustls only handshakes).
#
#   benches/allocations.sh            # plain, TLS client side, TLS both sides
# Runs the epoll driver: valgrind does not reliably deliver io_uring's
# cross-thread wake-up that shutdown relies on, and DHAT reports only at
# exit. On io_uring (ring mode included), benches/instructions.sh counts the
# calls into malloc from a callgrind dump taken while the relay runs.
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
tls_target_port=$(free_port)
target/release/loadgen echo-server --tls --listen "127.0.0.1:$tls_target_port" --threads 1 >"$tmp/echo-tls.log" 2>&1 &
wait_port "$tls_target_port"

# Prints the number of heap blocks the relay allocated for $2 pings
# ($1: plain | tls | tls-both).
blocks() {
    local mode=$1 n=$2 port scheme=ws tls=false target="ws://127.0.0.1:$target_port/" pid
    port=$(free_port)
    [ "$mode" != plain ] && { tls=true; scheme=wss; }
    [ "$mode" = tls-both ] && target="wss://localhost:$tls_target_port/"
    write_relay_config "$tmp/relay.toml" "$port" $tls copy "$tmp"
    # The TLS echo server's certificate is self-signed.
    sed -i '/^\[server\]/a insecure_skip_verify = true' "$tmp/relay.toml"
    WS_RELAY_DRIVER=legacy valgrind --tool=dhat --dhat-out-file="$tmp/dhat.$mode.$n" \
        target/release/ws-relay-core --config "$tmp/relay.toml" >"$tmp/relay.$mode.$n.log" 2>&1 &
    pid=$!
    wait_port "$port"
    target/release/loadgen ping --relay "$scheme://127.0.0.1:$port/" --insecure --token bench-token \
        -n "$n" --warmup 0 --threads 1 "$target" >"$tmp/ping.$mode.$n.log" 2>&1 \
        || { cat "$tmp/ping.$mode.$n.log" >&2; exit 1; }
    stop_relay "$pid"
    grep -oE 'Total: +[0-9,]+ bytes in [0-9,]+ blocks' "$tmp/relay.$mode.$n.log" | awk '{print $5}' | tr -d ,
}

for mode in plain tls tls-both; do
    small=$(blocks "$mode" "$N_SMALL")
    large=$(blocks "$mode" "$N_LARGE")
    per=$(python3 -c "print(round(($large - $small) / ($N_LARGE - $N_SMALL), 2))")
    echo "$mode: $small blocks for $N_SMALL pings, $large for $N_LARGE -> $per allocations per relayed round trip"
done
