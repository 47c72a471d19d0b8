# Shared by benches/hub/run.sh, push_rate.sh and history.sh (sourced from
# the repository root): builds the hub and the load client, then gives hub
# instances with `workers = 1` on CPU 0, redis-server on CPU 1, and cleanup
# on exit (a caller may define its own `cleanup` after sourcing).
# RELAY= runs another build of the hub.

ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p ws-relay-core
cargo build --release -q --manifest-path benches/hub/Cargo.toml
RELAY=${RELAY:-target/release/ws-relay-core}
LOAD="taskset -c 1 benches/hub/target/release/hub-load"
KEY=bench-api-key-0123456789
WORK=$(mktemp -d)
PIDS=()
trap 'cleanup' EXIT

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    grep -h "WARN\|ERROR" "$WORK"/*.log 2>/dev/null | head -5 >&2 || true
    rm -rf "$WORK"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

start_hub() { # port [hub toml lines...]; sets LAST_PID
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

redis_up() { # sets RP (once)
    [ -n "${RP:-}" ] && return
    command -v redis-server >/dev/null || { echo "SKIP: redis-server not found" >&2; return 1; }
    RP=$(free_port)
    taskset -c 1 redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
    PIDS+=($!)
    wait_port "$RP"
}
