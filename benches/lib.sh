# Shell helpers shared by the benchmark scripts (sourced, not run).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits up to 30 s for something to listen on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listening on $1" >&2
    return 1
}

# SIGTERM, then up to 20 s for a clean exit (valgrind writes its report on
# exit); fails loudly instead of hanging when the process does not stop.
stop_relay() {
    kill -TERM "$1"
    for _ in $(seq 1 200); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$1" 2>/dev/null; then
        kill -KILL "$1"
        echo "relay under valgrind did not exit after SIGTERM; rerun (or DRIVER=legacy)" >&2
        exit 1
    fi
    wait "$1" || true
}

# Starts `loadgen echo-server` on a free port; sets ECHO_PORT.
start_echo() {
    ECHO_PORT=$(free_port)
    target/release/loadgen echo-server --listen "127.0.0.1:$ECHO_PORT" --threads 1 >"$1/echo.log" 2>&1 &
    wait_port "$ECHO_PORT"
}

# Writes a one-shard relay config for user "bench" / token "bench-token".
# Usage: write_relay_config FILE PORT TLS(true|false) FORWARD(copy|splice) DIR
write_relay_config() {
    cat >"$1" <<TOML
[server]
host = "127.0.0.1"
port = $2
enable_tls = $3
tls_self_signed = true
workers = 1
forward = "$4"
allow_private_targets = true
shutdown_grace_secs = 0
control_socket = "$5/relay.sock"
[[users]]
name = "bench"
token = "bench-token"
[logging]
level = "warn"
directory = ""
TOML
}
