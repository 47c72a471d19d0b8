#!/usr/bin/env bash
# Reverse-tunnel stability (issue 13, item 5): the release relay and our
# tunnel client publish a TCP echo service (`[[proxies]]`, one control
# session); for --secs seconds, --workers threads open a public connection,
# send a random 1 B–256 KiB payload, check the echo byte for byte (SHA-256),
# close, and go again; meanwhile one long-lived connection echoes a ping
# every second for the whole run (wstunnel's users report reverse tunnels
# dying after 20–30 minutes). Every failure is counted and the first ones
# are logged. The target is 0 failures. Not run in CI.
#
#   cargo build --release --bin ws-relay-core
#   benches/tunnel/stability.sh                 # 30 minutes
#   benches/tunnel/stability.sh --secs 60       # smoke
#
# Output: docs/bench/tunnel-stability-<stamp>/summary.md; logs under
# target/bench/tunnel-stability-<stamp>/.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

SECS=1800 WORKERS=4 PAUSE_MS=20 KEEPALIVE=10
while [ $# -gt 0 ]; do
    case "$1" in
        --secs) SECS=$2; shift ;;
        --workers) WORKERS=$2; shift ;;
        --pause-ms) PAUSE_MS=$2; shift ;;
        --keepalive) KEEPALIVE=$2; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 1 ;;
    esac
    shift
done

STAMP=$(date -u +%Y%m%d-%H%M%S)
RAW="target/bench/tunnel-stability-$STAMP"
SUM="docs/bench/tunnel-stability-$STAMP"
mkdir -p "$RAW" "$SUM"
RELAY=$(readlink -f target/release/ws-relay-core)
[ -x "$RELAY" ] || { echo "build first: cargo build --release --bin ws-relay-core" >&2; exit 1; }
TOKEN=stability-token-0123456789

# free_port, wait_port
. benches/lib.sh

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done' EXIT

ECHO=$(free_port) RP=$(free_port) PUB=$(free_port)
python3 - "$ECHO" >"$RAW/echo.log" 2>&1 <<'PY' &
import socket, sys, threading
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(512)
def serve(c):
    with c:
        while True:
            b = c.recv(65536)
            if not b:
                return
            c.sendall(b)
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
PIDS+=($!)
wait_port "$ECHO" || { echo "echo did not start" >&2; exit 1; }

cat >"$RAW/relay.toml" <<TOML
[server]
host = "127.0.0.1"
port = $RP
enable_tls = false
workers = 1
allow_private_targets = true
control_socket = "$PWD/$RAW/relay.sock"
[[users]]
name = "stability"
token = "$TOKEN"
publish_ports = [$PUB]
[logging]
level = "warn"
directory = ""
TOML
cat >"$RAW/client.toml" <<TOML
[client]
server = "ws://127.0.0.1:$RP/"
token = "$TOKEN"
keepalive_secs = $KEEPALIVE
[[proxies]]
name = "echo"
publish_addr = "127.0.0.1"
publish_port = $PUB
local_port = $ECHO
TOML
"$RELAY" --config "$RAW/relay.toml" >"$RAW/relay.log" 2>&1 &
PIDS+=($!)
wait_port "$RP" || { echo "relay did not start" >&2; exit 1; }
RUST_LOG=info "$RELAY" tunnel --config "$RAW/client.toml" >"$RAW/client.log" 2>&1 &
PIDS+=($!)
wait_port "$PUB" || { echo "reverse tunnel not published" >&2; exit 1; }

LOAD_BEFORE=$(uptime)
echo "publishing 127.0.0.1:$PUB -> echo :$ECHO; running ${SECS}s with $WORKERS workers" >&2
python3 - "$PUB" "$SECS" "$WORKERS" "$PAUSE_MS" >"$RAW/result.json" 2>"$RAW/churn.log" <<'PY'
import hashlib, json, os, random, socket, sys, threading, time
port, secs, workers, pause = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) / 1000
stop = time.time() + secs
lock = threading.Lock()
stats = {"streams_ok": 0, "streams_failed": 0, "bytes_echoed": 0,
         "long_pings_ok": 0, "long_pings_failed": 0, "first_failures": []}
def fail(what):
    with lock:
        if len(stats["first_failures"]) < 20:
            stats["first_failures"].append(f"{time.strftime('%H:%M:%S')} {what}")
def churn(seed):
    rnd = random.Random(seed)
    while time.time() < stop:
        n = rnd.randint(1, 256 * 1024)
        data = os.urandom(n)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                got = bytearray()
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    got += b
            ok = hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
            with lock:
                stats["streams_ok" if ok else "streams_failed"] += 1
                stats["bytes_echoed"] += len(got) if ok else 0
            if not ok:
                fail(f"stream: sent {n} B, got {len(got)} B back (checksum differs)")
        except Exception as e:
            with lock:
                stats["streams_failed"] += 1
            fail(f"stream: {e!r}")
        time.sleep(pause)
def long_lived():
    s = None
    while time.time() < stop:
        try:
            if s is None:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
            msg = os.urandom(64)
            s.sendall(msg)
            got = b""
            while len(got) < 64:
                b = s.recv(64 - len(got))
                if not b:
                    raise ConnectionError("closed")
                got += b
            if got != msg:
                raise ValueError("ping bytes differ")
            with lock:
                stats["long_pings_ok"] += 1
        except Exception as e:
            with lock:
                stats["long_pings_failed"] += 1
            fail(f"long-lived connection: {e!r} (reconnecting)")
            s = None
        time.sleep(1)
threads = [threading.Thread(target=churn, args=(i,)) for i in range(workers)]
threads.append(threading.Thread(target=long_lived))
t0 = time.time()
for t in threads: t.start()
last = t0
while any(t.is_alive() for t in threads):
    time.sleep(1)
    if time.time() - last < 60:
        continue
    last = time.time()
    with lock:
        print(f"{int(time.time() - t0)}s: {stats['streams_ok']} ok, {stats['streams_failed']} failed, "
              f"long-lived {stats['long_pings_ok']} ok / {stats['long_pings_failed']} failed", file=sys.stderr, flush=True)
for t in threads: t.join()
stats["secs"] = round(time.time() - t0, 1)
print(json.dumps(stats))
PY
LOAD_AFTER=$(uptime)
RELAY_RSS=$(ps -o rss= -p "${PIDS[1]}" 2>/dev/null | tr -d ' ')
CLIENT_RSS=$(ps -o rss= -p "${PIDS[2]}" 2>/dev/null | tr -d ' ')
PUBLISHED=$(grep -c "reverse tunnel published" "$RAW/client.log")
ENDED=$(grep -c "reverse tunnel ended" "$RAW/client.log")
export SECS WORKERS PAUSE_MS KEEPALIVE LOAD_BEFORE LOAD_AFTER RELAY_RSS CLIENT_RSS PUBLISHED ENDED RAW STAMP
export REV=$(git rev-parse --short HEAD)
python3 - "$RAW/result.json" >"$SUM/summary.md" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1])); E = os.environ
out = [f"# Reverse-tunnel stability {E['STAMP']} (ws-relay-core {E['REV']})\n",
       f"Command: `benches/tunnel/stability.sh --secs {E['SECS']} --workers {E['WORKERS']} --pause-ms {E['PAUSE_MS']} --keepalive {E['KEEPALIVE']}` "
       "(release relay, `workers = 1`; our tunnel client with one `[[proxies]]` entry; a Python echo service; not pinned).\n",
       f"- ran {r['secs']} s; load before `{E['LOAD_BEFORE'].strip()}`, after `{E['LOAD_AFTER'].strip()}` (2 shared, noisy cores)",
       f"- short streams (open, 1 B–256 KiB echoed and SHA-256 checked, close): **{r['streams_ok']} ok, {r['streams_failed']} failed**; {r['bytes_echoed'] / 1e9:.2f} GB echoed",
       f"- one long-lived stream, a 64 B ping each second: **{r['long_pings_ok']} ok, {r['long_pings_failed']} failed**",
       f"- control sessions: published {E['PUBLISHED']} time(s), ended {E['ENDED']} time(s) (1 and 0 = one session for the whole run)",
       f"- RSS at the end: relay {E['RELAY_RSS']} KiB, client {E['CLIENT_RSS']} KiB"]
if r["first_failures"]:
    out.append("\n## First failures\n")
    out += [f"- {x}" for x in r["first_failures"]]
out.append(f"\nLogs (not committed): `{E['RAW']}/`.")
print("\n".join(out))
PY
cat "$SUM/summary.md"
