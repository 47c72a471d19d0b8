#!/usr/bin/env bash
# Autobahn|Testsuite conformance harness (issue 25 item 2). Owns: the test
# certificates, the reference echo servers, loadgen's echo server, the
# relays and the forward tunnel client under test (configs generated here),
# one `wstest -m fuzzingclient` run over every path, the verdicts
# (verdicts.py) and stopping every process it started, however it exits.
#
# Environment:
#   RELAY_BIN      ws-relay-core binary   (default target/release/ws-relay-core)
#   LOADGEN_BIN    loadgen binary         (default target/release/loadgen)
#   AUTOBAHN_VENV  venv with wstest       (default target/autobahn-venv; .ci/run installs it)
#   OUT            output directory       (default target/autobahn)
#   CASES          comma-separated Autobahn case patterns (default "*": 1-7 and 10)
#   DEFLATE_CASES  permessage-deflate cases for the second pass (default
#                  "12.1.*,13.1.*", about a minute per path; "12.*,13.*" is
#                  all of them, about 10 minutes per path)
#   PYTHON3        Python 3 for the helpers (default python3)
# Output: OUT/reports (Autobahn's JSON and HTML), OUT/conformance.md (the
# table), OUT/run (configs, certificates, every process's log).
# Exit: 0 every path passes, 1 a path fails (named with its cases), 2 setup.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/tests/autobahn
abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
RELAY_BIN=$(abs "${RELAY_BIN:-$ROOT/target/release/ws-relay-core}")
LOADGEN_BIN=$(abs "${LOADGEN_BIN:-$ROOT/target/release/loadgen}")
AUTOBAHN_VENV=$(abs "${AUTOBAHN_VENV:-$ROOT/target/autobahn-venv}")
OUT=$(abs "${OUT:-$ROOT/target/autobahn}")
CASES=${CASES:-*}
DEFLATE_CASES=${DEFLATE_CASES:-12.1.*,13.1.*}
PY3=${PYTHON3:-python3}
TOKEN=autobahn-token-0123456789

die() { echo "autobahn: $*" >&2; exit 2; }
[ -x "$RELAY_BIN" ] || die "RELAY_BIN $RELAY_BIN is not an executable"
[ -x "$LOADGEN_BIN" ] || die "LOADGEN_BIN $LOADGEN_BIN is not an executable"
[ -x "$AUTOBAHN_VENV/bin/wstest" ] || die "no $AUTOBAHN_VENV/bin/wstest (.ci/run installs it)"
command -v "$PY3" >/dev/null || die "no $PY3"
command -v openssl >/dev/null || die "no openssl (makes the test certificates)"

# --- cleanup: every child's pid goes into PIDS; the EXIT trap stops them
# all (TERM, then KILL after 5 s), also on failure and on INT/TERM.
PIDS=()
declare -A PID # name -> pid, for wait_port and the after-run check
cleanup() {
    local rc=$? pid deadline
    trap - EXIT
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    deadline=$((SECONDS + 5))
    for pid in "${PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

START=$SECONDS
RUN=$OUT/run
rm -rf "$OUT/reports" "$OUT/reports-deflate" "$RUN" "$OUT/conformance.md" "$OUT/conformance-deflate.md"
mkdir -p "$RUN/logs" "$OUT/reports"

# spawn NAME CMD...: runs CMD in the background, output to logs/NAME.log.
spawn() {
    local name=$1
    shift
    "$@" </dev/null >"$RUN/logs/$name.log" 2>&1 &
    PIDS+=($!)
    PID[$name]=$!
}

# wait_port NAME PORT: until 127.0.0.1:PORT accepts; fails showing NAME's log.
wait_port() {
    local name=$1 port=$2 deadline=$((SECONDS + 20))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "${PID[$name]}" 2>/dev/null; then
            cat "$RUN/logs/$name.log" >&2
            die "$name exited before listening on $port (log above)"
        fi
        if [ $SECONDS -ge $deadline ]; then
            cat "$RUN/logs/$name.log" >&2
            die "$name never listened on $port (log above)"
        fi
        sleep 0.1
    done
}

urlenc() { "$PY3" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

# --- ports: all picked at once, so none is handed out twice. Another
# program could take one before its server binds it; wait_port then says so.
read -r P_REF P_REF_TLS P_REF_TUN P_REF_DEFL P_LOADGEN P_COPY P_SPLICE P_TLS P_TUN P_RING < <(
    "$PY3" -c 'import socket
socks = [socket.socket() for _ in range(10)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))'
)
[ -n "${P_RING:-}" ] || die "could not pick free ports"

# --- certificates: a CA and a leaf for 127.0.0.1 it signs. The TLS echo
# server and the TLS relay listener serve the leaf; the relay trusts the CA
# toward wss:// targets (target_ca_file) and the tunnel client toward the
# relay (ca_cert_path), so both verify for real. A self-signed leaf would
# not do: webpki refuses a CA certificate as an end entity, and openssl's
# `req -x509` marks its output as a CA.
CERTS=$RUN/certs
mkdir -p "$CERTS"
(
    cd "$CERTS"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=autobahn-test-ca -keyout ca.key -out ca.pem
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj /CN=127.0.0.1 -keyout key.pem -out leaf.csr
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >leaf.ext
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile leaf.ext -out cert.pem
) >"$RUN/logs/openssl.log" 2>&1 || { cat "$RUN/logs/openssl.log" >&2; die "openssl failed"; }

# --- the echo servers. Autobahn's reference: plain, TLS, and a plain one
# for the tunnel path that accepts the tunnel's local port in Host
# (refecho.py says why). Then the project's own, loadgen's.
spawn refecho "$AUTOBAHN_VENV/bin/python" "$HERE/refecho.py" \
    "ws:$P_REF" "wss:$P_REF_TLS:$CERTS/key.pem:$CERTS/cert.pem" "ws:$P_REF_TUN@$P_TUN" \
    "deflate:$P_REF_DEFL"
spawn loadgen-echo "$LOADGEN_BIN" echo-server --listen "127.0.0.1:$P_LOADGEN" --threads 1

# --- the relays. relay_config NAME PORT FORWARD TLS writes RUN/NAME/config.toml
# and has the relay check it. Each relay has the same user (every loopback
# target allowed, tcp:// for the tunnel) and the route "/ref" to the
# reference echo server, sent its own Host (upstream_host: Autobahn's
# server refuses another port in Host).
relay_config() {
    local name=$1 port=$2 forward=$3 tls=$4 dir=$RUN/$1
    mkdir -p "$dir"
    {
        echo "[server]"
        echo "host = \"127.0.0.1\""
        echo "port = $port"
        echo "enable_tls = $tls"
        if [ "$tls" = true ]; then
            echo "tls_cert = \"$CERTS/cert.pem\""
            echo "tls_key = \"$CERTS/key.pem\""
        fi
        # One shard is enough: the fuzzing client opens one connection at a time.
        echo "workers = 1"
        echo "forward = \"$forward\""
        echo "allow_private_targets = true"
        echo "target_ca_file = \"$CERTS/ca.pem\""
        # Cleanup sends SIGTERM; the default 30 s drain would only delay it.
        echo "shutdown_grace_secs = 1"
        echo "control_socket = \"$dir/relay.sock\""
        cat <<EOF

[[users]]
name = "autobahn"
token = "$TOKEN"
allowed_targets = ["ws://127.0.0.1:*", "wss://127.0.0.1:*", "tcp://127.0.0.1:*"]

[[routes]]
name = "ref"
path = "/ref"
upstream = ["ws://127.0.0.1:$P_REF"]
upstream_host = true

# permessage-deflate end to end: the route negotiates nothing itself.
[[routes]]
name = "deflate"
path = "/deflate"
upstream = ["ws://127.0.0.1:$P_REF_DEFL"]
upstream_host = true

[logging]
level = "info"
directory = ""
console_output = true
EOF
    } >"$dir/config.toml"
    "$RELAY_BIN" --config "$dir/config.toml" check >"$RUN/logs/$name-check.log" 2>&1 ||
        { cat "$RUN/logs/$name-check.log" >&2; die "$name: config refused ($dir/config.toml)"; }
}
relay_config relay-copy "$P_COPY" copy false
relay_config relay-splice "$P_SPLICE" splice false
relay_config relay-tls "$P_TLS" copy true
relay_config relay-ring "$P_RING" ring false
for r in relay-copy relay-splice relay-tls relay-ring; do
    spawn "$r" "$RELAY_BIN" --config "$RUN/$r/config.toml" serve
done

# --- the forward tunnel client: a local listener on P_TUN, each connection
# carried over wss:// through the TLS relay to the tunnel's reference
# server, as a client behind a firewall would use it.
mkdir -p "$RUN/tunnel"
cat >"$RUN/tunnel/client.toml" <<EOF
[client]
server = "wss://127.0.0.1:$P_TLS/"
token = "$TOKEN"
ca_cert_path = "$CERTS/ca.pem"

[[forwards]]
listen = "127.0.0.1:$P_TUN"
target = "tcp://127.0.0.1:$P_REF_TUN"
EOF
spawn tunnel "$RELAY_BIN" --config "$RUN/tunnel/client.toml" tunnel

wait_port refecho "$P_REF"
wait_port refecho "$P_REF_TLS"
wait_port refecho "$P_REF_TUN"
wait_port refecho "$P_REF_DEFL"
wait_port loadgen-echo "$P_LOADGEN"
wait_port relay-copy "$P_COPY"
wait_port relay-splice "$P_SPLICE"
wait_port relay-tls "$P_TLS"
wait_port relay-ring "$P_RING"
wait_port tunnel "$P_TUN"

# --- the paths: AGENT URL REF RULE (verdicts.py explains the rules). The
# relay paths use handshake-time auth (?token=&target=).
REF_WS="ws://127.0.0.1:$P_REF/"
REF_WSS="wss://127.0.0.1:$P_REF_TLS/"
relay_url() { echo "$1://127.0.0.1:$2/?token=$TOKEN&target=$(urlenc "$3")"; }
PATHS=(
    "direct-ws $REF_WS - ref"
    "direct-wss $REF_WSS - ref"
    "relay-copy-ws $(relay_url ws "$P_COPY" "$REF_WS") direct-ws same"
    "relay-copy-wss-target $(relay_url ws "$P_COPY" "$REF_WSS") direct-wss same"
    "relay-copy-tls-listener $(relay_url wss "$P_TLS" "$REF_WS") direct-ws same"
    "relay-splice-ws $(relay_url ws "$P_SPLICE" "$REF_WS") direct-ws same"
    "relay-ring-ws $(relay_url ws "$P_RING" "$REF_WS") direct-ws same"
    "relay-ring-wss-target $(relay_url ws "$P_RING" "$REF_WSS") direct-wss same"
    "route-copy ws://127.0.0.1:$P_COPY/ref direct-ws same"
    "route-splice ws://127.0.0.1:$P_SPLICE/ref direct-ws same"
    "route-ring ws://127.0.0.1:$P_RING/ref direct-ws same"
    "tunnel-forward ws://127.0.0.1:$P_TUN/ direct-ws same"
    "loadgen-echo ws://127.0.0.1:$P_LOADGEN/ direct-ws echo"
)
PLAN=()
SERVERS=()
for p in "${PATHS[@]}"; do
    read -r agent url ref rule <<<"$p"
    SERVERS+=("$agent" "$url")
    PLAN+=("$agent:$ref:$rule")
done

# fuzz_spec OUTDIR CASES EXCLUDED AGENT URL...: the fuzzing client's spec
# (CASES and EXCLUDED comma-separated) on stdout.
fuzz_spec() {
    "$PY3" -c 'import json, sys
outdir, cases, excluded, rest = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
split = lambda s: [c.strip() for c in s.split(",") if c.strip()]
print(json.dumps({
    "outdir": outdir,
    "servers": [{"agent": a, "url": u} for a, u in zip(rest[::2], rest[1::2])],
    "cases": split(cases),
    "exclude-cases": split(excluded),
    "exclude-agent-cases": {},
}, indent=1))' "$@"
}

SPEC=$RUN/fuzzingclient.json
fuzz_spec "$OUT/reports" "$CASES" "9.*,12.*,13.*" "${SERVERS[@]}" >"$SPEC"

echo "autobahn: ${#PATHS[@]} paths, cases \"$CASES\" minus 9.*, 12.*, 13.*; setup took $((SECONDS - START)) s"
for p in "${PATHS[@]}"; do
    read -r agent url _ <<<"$p"
    printf '  %-24s %s\n' "$agent" "$url"
done
echo "autobahn: running wstest -m fuzzingclient (log: $RUN/logs/wstest.log)"

# fuzz SPEC LOGNAME: one fuzzing-client run, in the background and waited
# for, so INT/TERM reach the trap at once.
fuzz() {
    local start=$SECONDS
    (cd "$RUN" && exec "$AUTOBAHN_VENV/bin/wstest" -m fuzzingclient -s "$1") \
        </dev/null >"$RUN/logs/$2.log" 2>&1 &
    PIDS+=($!)
    wait $! || { tail -n 30 "$RUN/logs/$2.log" >&2; die "$2 failed"; }
    echo "autobahn: $2 took $((SECONDS - start)) s"
}
fuzz "$SPEC" wstest

# A process under test that died mid-run explains its path's failures.
for name in "${!PID[@]}"; do
    kill -0 "${PID[$name]}" 2>/dev/null ||
        echo "autobahn: WARNING: $name exited during the run (log: $RUN/logs/$name.log)"
done

rc=0
"$PY3" "$HERE/verdicts.py" "$OUT/reports/index.json" --md "$OUT/conformance.md" "${PLAN[@]}" || rc=$?

# --- second pass: permessage-deflate (cases 12, 13) where it is negotiated
# end to end, Autobahn's deflate echo server direct and through the routes
# (the relay's ?target= path negotiates no extension: nothing to compare).
if [ -n "$DEFLATE_CASES" ]; then
    DSPEC=$RUN/fuzzingclient-deflate.json
    fuzz_spec "$OUT/reports-deflate" "$DEFLATE_CASES" "" \
        direct-deflate "ws://127.0.0.1:$P_REF_DEFL/" \
        route-copy-deflate "ws://127.0.0.1:$P_COPY/deflate" \
        route-splice-deflate "ws://127.0.0.1:$P_SPLICE/deflate" \
        route-tls-deflate "wss://127.0.0.1:$P_TLS/deflate" >"$DSPEC"
    echo "autobahn: permessage-deflate pass, cases \"$DEFLATE_CASES\" (log: $RUN/logs/wstest-deflate.log)"
    rm -rf "$OUT/reports-deflate"
    fuzz "$DSPEC" wstest-deflate
    "$PY3" "$HERE/verdicts.py" "$OUT/reports-deflate/index.json" --md "$OUT/conformance-deflate.md" \
        --cases "permessage-deflate cases $DEFLATE_CASES, Autobahn's echo server accepting the offer" \
        direct-deflate:-:ref route-copy-deflate:direct-deflate:same \
        route-splice-deflate:direct-deflate:same route-tls-deflate:direct-deflate:same || rc=$?
fi
echo "autobahn: total $((SECONDS - START)) s; report $OUT/reports/index.html, table $OUT/conformance.md"
exit "$rc"
