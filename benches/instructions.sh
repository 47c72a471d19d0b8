#!/usr/bin/env bash
# Instructions the relay executes per relayed 64-byte round trip, counted by
# callgrind: repeatable on a noisy machine, unlike timings.
#
#   benches/instructions.sh              # copy mode, first-message auth
#   FORWARD=splice AUTH=header benches/instructions.sh
#
# The relay runs under valgrind twice, for N_SMALL and N_LARGE pings on one
# session; the difference divided by (N_LARGE - N_SMALL) cancels start-up,
# handshakes and shutdown. Counts user-space instructions only (kernel work in
# recv/send/splice is not included). Needs valgrind and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

N_SMALL=${N_SMALL:-1000}
N_LARGE=${N_LARGE:-5000}
FORWARD=${FORWARD:-copy}
AUTH=${AUTH:-first-message}
DRIVER=${DRIVER:-io_uring}

command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
[ -x target/release/ws-relay-core ] && [ -x target/release/loadgen ] || cargo build --release -q

tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$tmp"; }
trap cleanup EXIT

start_echo "$tmp"
target_port=$ECHO_PORT

# Runs the relay under callgrind for $1 pings; prints the instruction total.
count() {
    local n=$1 port out
    port=$(free_port)
    out="$tmp/callgrind.$n"
    write_relay_config "$tmp/relay.toml" "$port" false $FORWARD "$tmp"
    WS_RELAY_DRIVER=$DRIVER valgrind --tool=callgrind --callgrind-out-file="$out" \
        target/release/ws-relay-core --config "$tmp/relay.toml" >"$tmp/relay.$n.log" 2>&1 &
    local pid=$!
    wait_port "$port"
    target/release/loadgen ping --relay "ws://127.0.0.1:$port/" --token bench-token --auth "$AUTH" \
        -n "$n" --warmup 0 --threads 1 "ws://127.0.0.1:$target_port/" >"$tmp/ping.$n.log" 2>&1 \
        || { cat "$tmp/ping.$n.log" >&2; exit 1; }
    # Dump the counts while the relay runs (callgrind writes "$out.1"), then
    # stop it: under valgrind the shards do not always see io_uring's
    # cross-thread wake-up, so a SIGTERM may go unanswered (seen with
    # builds back to fb5e9d5), and the dump does not depend on it.
    callgrind_control -d "$pid" >/dev/null
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # callgrind writes "summary: N" (or "totals: N") with the Ir count.
    grep -E '^(summary|totals):' "$out.1" | head -1 | awk '{print $2}'
}

small=$(count "$N_SMALL")
large=$(count "$N_LARGE")
per=$(( (large - small) / (N_LARGE - N_SMALL) ))
echo "forward=$FORWARD auth=$AUTH driver=$DRIVER"
echo "relay instructions: $small for $N_SMALL pings, $large for $N_LARGE pings"
echo "instructions per relayed 64-byte round trip: $per"
# Heap allocations from the same runs (calls into malloc and friends), which
# works on io_uring where DHAT cannot (benches/allocations.sh).
allocators='^(malloc|calloc|realloc|posix_memalign|aligned_alloc)$'
a_small=$(python3 benches/callgrind_calls.py "$allocators" "$tmp/callgrind.$N_SMALL.1")
a_large=$(python3 benches/callgrind_calls.py "$allocators" "$tmp/callgrind.$N_LARGE.1")
echo "heap allocations: $a_small for $N_SMALL pings, $a_large for $N_LARGE pings -> $(python3 -c "print(round(($a_large - $a_small) / ($N_LARGE - $N_SMALL), 3))") per relayed round trip"
