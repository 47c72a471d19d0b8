#!/usr/bin/env python3
"""Memory and thread count of ws-relay-core at N idle relayed sessions.

Starts a plain WebSocket echo target (python `websockets`), the relay binary
with a temp config, opens N sessions through it (first-message auth), lets
them sit idle, and reads the relay's RSS and thread count from /proc before
and after. Prints one line per forwarding mode.

    python3 benches/idle_memory.py --sessions 1000 --modes copy,splice
Needs: pip install websockets; target/release/ws-relay-core built.
"""
import argparse, asyncio, json, os, resource, socket, subprocess, tempfile, time

import websockets


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["Threads"])


async def echo(ws):
    async for m in ws:
        await ws.send(m)


async def run_mode(binary, mode, sessions, workers):
    tport, rport = free_port(), free_port()
    tmp = tempfile.mkdtemp()
    cfg = os.path.join(tmp, "config.toml")
    with open(cfg, "w") as f:
        f.write(f"""[server]
host = "127.0.0.1"
port = {rport}
enable_tls = false
allow_private_targets = true
workers = {workers}
forward = "{mode}"
idle_timeout_secs = 0
control_socket = "{tmp}/relay.sock"
[[users]]
name = "bench"
token = "bench-token"
[logging]
level = "warn"
directory = ""
""")
    server = await websockets.serve(echo, "127.0.0.1", tport, compression=None, max_queue=1)
    relay = subprocess.Popen([binary, "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", rport), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        await asyncio.sleep(0.3)
        rss0, threads0 = proc_status(relay.pid)
        conns = []
        auth = json.dumps({"token": "bench-token", "target": f"ws://127.0.0.1:{tport}/"})
        for i in range(sessions):
            ws = await websockets.connect(f"ws://127.0.0.1:{rport}/", compression=None, max_queue=1)
            await ws.send(auth)
            assert json.loads(await ws.recv()) == {"status": "已连接"}
            # One round trip so both directions have moved bytes once.
            await ws.send(f"hello {i}")
            assert await ws.recv() == f"hello {i}"
            conns.append(ws)
        await asyncio.sleep(1.0)
        rss1, threads1 = proc_status(relay.pid)
        per = (rss1 - rss0) / sessions
        print(f"mode={mode:6} workers={workers} sessions={sessions} rss_before={rss0} KiB rss_after={rss1} KiB "
              f"per_session={per:.2f} KiB threads_before={threads0} threads_after={threads1}", flush=True)
        for ws in conns:
            await ws.close()
    finally:
        relay.terminate()
        relay.wait(timeout=10)
        server.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--modes", default="copy,splice")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--binary", default="target/release/ws-relay-core")
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for mode in a.modes.split(","):
        asyncio.run(run_mode(a.binary, mode, a.sessions, a.workers))


if __name__ == "__main__":
    main()
