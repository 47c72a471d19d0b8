#!/usr/bin/env bash
# What history costs and what recovery takes (docs/hub.md "Recovery"):
#   - push-to-delivery latency p50/p99, history off / in memory / in Redis
#     (hub-load latency: one push in flight, the next after delivery);
#   - recovery time for 1,000 and 100,000 missed messages, memory and Redis
#     (hub-load recover: a client reconnects with since=0 and gets them all);
#   - memory per kept message: the hub's own count (/metrics) and RSS for
#     memory history, Redis's used_memory for Redis history.
# Hubs `workers = 1` on CPU 0; Redis and the client on CPU 1 (cross-core,
# the deployment case). Redis rows push to A and read on B.
#
#   bash benches/hub/history.sh [ITERS]          # one JSON line per row
set -euo pipefail
cd "$(dirname "$0")/../.."
ITERS=${1:-3000}
BIG=100000
. benches/hub/lib.sh

tag() { sed "s/^{/{\"system\":\"$1\",/"; }
metric() { # port name: the sample's value
    curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# Latency: history off, in memory, in Redis.
for mode in off memory; do
    extra=(); [ $mode = memory ] && extra=("history_size = 1000")
    P=$(free_port); start_hub "$P" "${extra[@]}"
    $LOAD latency "$P" "$KEY" 1 "$ITERS" | tag "one instance, history $mode"
    kill "$LAST_PID"
done
if redis_up; then
    for mode in off redis; do
        extra=("redis_url = \"redis://127.0.0.1:$RP/\""); [ $mode = redis ] && extra+=("history_size = 1000")
        A=$(free_port); start_hub "$A" "${extra[@]}"; PA=$LAST_PID
        B=$(free_port); start_hub "$B" "${extra[@]}"; PB=$LAST_PID
        sleep 0.5
        HUB_LOAD_CLIENT_PORT=$B $LOAD latency "$A" "$KEY" 1 "$ITERS" | tag "A->B through Redis, history $mode"
        kill "$PA" "$PB"
    done
fi

# Recovery time, and memory per kept message.
for n in 1000 $BIG; do
    P=$(free_port); start_hub "$P" "history_size = $BIG"
    before=$(rss_kib "$LAST_PID")
    $LOAD recover "$P" "$KEY" "$n" | tag "memory history"
    after=$(rss_kib "$LAST_PID")
    bytes=$(metric "$P" ws_relay_hub_history_bytes)
    echo "{\"system\":\"memory history\",\"kept\":$n,\"history_bytes\":$bytes,\"bytes_per_message\":$((bytes / n)),\"rss_growth_kib\":$((after - before))}"
    kill "$LAST_PID"
done
if redis_up; then
    for n in 1000 $BIG; do
        redis-cli -p "$RP" FLUSHALL >/dev/null
        used0=$(redis-cli -p "$RP" INFO memory | awk -F: '/^used_memory:/ {print $2+0}')
        extra=("redis_url = \"redis://127.0.0.1:$RP/\"" "history_size = $BIG")
        A=$(free_port); start_hub "$A" "${extra[@]}"; PA=$LAST_PID
        B=$(free_port); start_hub "$B" "${extra[@]}"; PB=$LAST_PID
        sleep 0.5
        HUB_LOAD_CLIENT_PORT=$B $LOAD recover "$A" "$KEY" "$n" | tag "Redis history (push A, recover on B)"
        used1=$(redis-cli -p "$RP" INFO memory | awk -F: '/^used_memory:/ {print $2+0}')
        echo "{\"system\":\"Redis history\",\"kept\":$n,\"redis_used_memory_growth\":$((used1 - used0)),\"bytes_per_message\":$(((used1 - used0) / n))}"
        kill "$PA" "$PB"
    done
fi
