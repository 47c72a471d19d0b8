#!/usr/bin/env bash
# Messages per second through the relay with 1, 2, ... N shards, the load
# generator and echo target on cores disjoint from the shards.
#
#   benches/scaling.sh                    # every shard count the host allows
#   SHARDS="1 2" CONNS=64 DURATION=5 FORWARD=copy benches/scaling.sh
#
# Shards n run on CPUs 0..n-1 (`taskset`; each shard pins itself to one of
# them); loadgen (`--threads` = the other CPUs) and the echo server run on
# CPUs n..N-1. When no CPU is left for them (n = N), they share the shards'
# CPUs and the row says "shared": that figure measures CPU sharing, not
# scaling. A host needs at least n+1 CPUs for an honest n-shard row, so on a
# 2-vCPU machine only "1 shard" is clean; the N-core claim needs a bigger
# host, and this script runs unchanged there.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

NCPU=$(nproc)
SHARDS=${SHARDS:-$(seq 1 "$NCPU")}
CONNS=${CONNS:-64}
DURATION=${DURATION:-5}
SIZE=${SIZE:-64}
FORWARD=${FORWARD:-splice}
ROUNDS=${ROUNDS:-3}

[ -x target/release/ws-relay-core ] && [ -x target/release/loadgen ] || cargo build --release -q

tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

cpus() { # cpus FROM TO -> "FROM-TO" (taskset list)
    echo "$1-$2"
}

echo "# benches/scaling.sh: $NCPU CPUs, forward=$FORWARD, $CONNS connections, ${SIZE} B, ${DURATION} s, median of $ROUNDS rounds"
printf '%-7s %-10s %-12s %14s %8s\n' shards relay_cpus load_cpus 'msg/s' '×1 shard'
base=""
for n in $SHARDS; do
    [ "$n" -le "$NCPU" ] || { echo "skip $n shards: only $NCPU CPUs"; continue; }
    relay_cpus=$(cpus 0 $((n - 1)))
    if [ "$n" -lt "$NCPU" ]; then
        load_cpus=$(cpus "$n" $((NCPU - 1)))
        load_threads=$((NCPU - n))
        note=""
    else
        load_cpus=$(cpus 0 $((NCPU - 1)))
        load_threads=$NCPU
        note=" (shared: no CPU left for the load)"
    fi
    port=$(free_port)
    write_relay_config "$tmp/relay.toml" "$port" false "$FORWARD" "$tmp"
    sed -i "s/^workers = 1$/workers = $n/" "$tmp/relay.toml"
    echo_port=$(free_port)
    taskset -c "$load_cpus" target/release/loadgen echo-server --listen "127.0.0.1:$echo_port" \
        --threads "$load_threads" >"$tmp/echo.log" 2>&1 &
    echo_pid=$!
    taskset -c "$relay_cpus" target/release/ws-relay-core --config "$tmp/relay.toml" >"$tmp/relay.log" 2>&1 &
    relay_pid=$!
    wait_port "$echo_port"
    wait_port "$port"
    rates=()
    for _ in $(seq "$ROUNDS"); do
        out=$(taskset -c "$load_cpus" target/release/loadgen throughput --size "$SIZE" -c "$CONNS" \
            -d "$DURATION" --threads "$load_threads" "ws://127.0.0.1:$echo_port/" \
            --relay "ws://127.0.0.1:$port/" --token bench-token --json)
        rates+=("$(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["runs"][0]["throughput"]["msg_per_s"]))' "$out")")
    done
    kill "$relay_pid" "$echo_pid" 2>/dev/null || true
    wait "$relay_pid" "$echo_pid" 2>/dev/null || true
    median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    [ -n "$base" ] || base=$median
    ratio=$(python3 -c "print(f'{$median / $base:.2f}')")
    printf '%-7s %-10s %-12s %14s %8s%s\n' "$n" "$relay_cpus" "$load_cpus" "$median" "${ratio}x" "$note"
done
