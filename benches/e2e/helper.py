#!/usr/bin/env python3
"""Pieces of benches/e2e/e2e.sh that are easier in Python.

    helper.py freeport                       a free TCP port on 127.0.0.1
    helper.py wait-port PORT [SECS]          wait until 127.0.0.1:PORT accepts
    helper.py wait-health PORT [SECS]        wait for GET /health -> 200 {"status":"ok"}
    helper.py idle-hold ...                  open N idle WebSocket sessions, hold them
    helper.py summarize OUTDIR               build summary.md from OUTDIR/manifest.tsv

Standard library only (python3 >= 3.8).
"""
import asyncio
import base64
import json
import os
import resource
import signal
import socket
import statistics
import struct
import sys
import time


# --------------------------------------------------------------- small helpers

def freeport():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    print(port)


def wait_port(port, secs=20.0):
    give_up = time.time() + float(secs)
    while time.time() < give_up:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=0.2).close()
            return 0
        except OSError:
            time.sleep(0.05)
    print(f"127.0.0.1:{port} did not accept within {secs} s", file=sys.stderr)
    return 1


def wait_health(port, secs=20.0):
    give_up = time.time() + float(secs)
    while time.time() < give_up:
        try:
            s = socket.create_connection(("127.0.0.1", int(port)), timeout=0.5)
            s.settimeout(0.5)
            s.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            s.close()
            text = data.decode("utf-8", "replace")
            if text.startswith("HTTP/1.1 200") and '"status":"ok"' in text.replace(" ", ""):
                return 0
        except OSError:
            pass
        time.sleep(0.05)
    print(f"no healthy answer from 127.0.0.1:{port} within {secs} s", file=sys.stderr)
    return 1


# ------------------------------------------------------------------ idle hold

def ws_frame(opcode, payload):
    """A masked client frame (FIN set)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


async def read_frame(reader):
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    mask = await reader.readexactly(4) if b1 & 0x80 else None
    payload = await reader.readexactly(n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return b0 & 0x0F, payload


async def open_session(port, mode, target, token, i):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    head = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
    if mode == "header":
        head += f"Authorization: Bearer {token}\r\nX-Relay-Target: {target}\r\n"
    writer.write((head + "\r\n").encode())
    resp = await reader.readuntil(b"\r\n\r\n")
    if not resp.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"session {i}: upgrade refused: {resp[:80]!r}")
    if mode == "first-message":
        writer.write(ws_frame(0x1, json.dumps({"token": token, "target": target}).encode()))
        op, payload = await read_frame(reader)
        if op != 0x1 or b'"status"' not in payload or b"error" in payload:
            raise RuntimeError(f"session {i}: relay answered {payload[:120]!r}")
    # One round trip so both directions have moved bytes once.
    msg = f"hello {i}".encode()
    writer.write(ws_frame(0x2, msg))
    op, payload = await read_frame(reader)
    if payload != msg:
        raise RuntimeError(f"session {i}: bad echo {payload[:60]!r}")
    return reader, writer


async def idle_hold(args):
    port, n, mode = int(args["port"]), int(args["n"]), args.get("mode", "plain")
    target, token = args.get("target", ""), args.get("token", "")
    conc = int(args.get("concurrency", "100"))
    held, failed, first_err = [], 0, None
    sem = asyncio.Semaphore(conc)
    t0 = time.time()

    async def one(i):
        nonlocal failed, first_err
        async with sem:
            for attempt in range(3):
                try:
                    held.append(await asyncio.wait_for(open_session(port, mode, target, token, i), 20))
                    return
                except Exception as e:  # noqa: BLE001 (reported below)
                    err = e
                    await asyncio.sleep(0.05 * (attempt + 1))
            failed += 1
            if first_err is None:
                first_err = f"{type(err).__name__}: {err}"

    await asyncio.gather(*(one(i) for i in range(n)))
    print(json.dumps({"held": len(held), "failed": failed, "first_error": first_err,
                      "open_s": round(time.time() - t0, 2)}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for _, w in held:
        w.transport.abort()


# ------------------------------------------------------------------ summary

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_us(v):
    if v is None:
        return "–"
    if v >= 10000:
        return f"{v / 1000:.2f} ms"
    if v >= 1000:
        return f"{v / 1000:.3f} ms"
    return f"{v:.1f} µs"


def fmt_delta_us(v, base):
    if v is None or base is None:
        return "–"
    d = v - base
    s = "+" if d >= 0 else "−"
    return f"{s}{fmt_us(abs(d))}"


def fmt_int(v):
    return "–" if v is None else f"{v:,.0f}"


def fmt_ratio(v, base):
    if v is None or not base:
        return "–"
    return f"{v / base:.2f}×"


def summarize(outdir):
    rows = []
    with open(os.path.join(outdir, "manifest.tsv")) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            rec = dict(zip(header, line.rstrip("\n").split("\t")))
            rep = None
            path = os.path.join(outdir, rec["json"]) if rec.get("json") else None
            if path and os.path.exists(path) and os.path.getsize(path) > 0:
                try:
                    with open(path) as jf:
                        rep = json.load(jf)
                except ValueError:
                    rep = None
            rec["report"] = rep
            rows.append(rec)
    meta = {}
    if os.path.exists(os.path.join(outdir, "meta.json")):
        with open(os.path.join(outdir, "meta.json")) as f:
            meta = json.load(f)
    systems = meta.get("systems_order") or sorted({r["system"] for r in rows})
    labels = meta.get("labels", {})
    ticks = float(meta.get("clk_tck", 100))

    def runs(case, test, system):
        return [r for r in rows if r["case"] == case and r["test"] == test and r["system"] == system]

    def run_of(r):
        rep = r["report"]
        if not rep or not rep.get("runs"):
            return None
        return rep["runs"][0]

    def failed(rs):
        bad = []
        for r in rs:
            run = run_of(r)
            if r["rc"] != "0" or run is None or run["errors"]["total"]:
                first = run["errors"]["first"] if run else None
                bad.append(f"r{r['round']} rc={r['rc']}" + (f" ({first})" if first else ""))
        return bad

    def lat(case, test, system, key):
        return med([run_of(r)["latency_us"][key] for r in runs(case, test, system)
                    if run_of(r) and run_of(r)["latency_us"]])

    def thr(case, test, system, key="msg_per_s"):
        return med([run_of(r)["throughput"][key] for r in runs(case, test, system)
                    if run_of(r) and run_of(r)["throughput"]])

    def cpu_per_m(case, test, system):
        vals = []
        for r in runs(case, test, system):
            run = run_of(r)
            if not run or r.get("cpu_ticks", "") in ("", "-"):
                continue
            msgs = run["messages"]["sent"] + run["messages"]["received"]
            if msgs:
                vals.append(int(r["cpu_ticks"]) / ticks / msgs * 1e6)
        return med(vals)

    def cmd_of(case, test, system):
        rs = runs(case, test, system)
        return rs[0]["cmd"] if rs else ""

    idle_rows = []
    idle_path = os.path.join(outdir, "idle.tsv")
    if os.path.exists(idle_path):
        with open(idle_path) as f:
            hdr = f.readline().rstrip("\n").split("\t")
            for line in f:
                r = dict(zip(hdr, line.rstrip("\n").split("\t")))
                try:
                    held = int(r["held"])
                    r["per"] = (int(r["rss_after_kib"]) - int(r["rss_before_kib"])) / held if held else None
                except ValueError:
                    r["per"] = None
                idle_rows.append(r)
    idle_per = {r["system"]: r["per"] for r in idle_rows}

    out = []
    p = out.append
    p(f"# End-to-end comparison: {meta.get('title', '')}".rstrip())
    p("")
    p(f"- run: `{meta.get('command', '')}` ({meta.get('started', '')}, {meta.get('wall_s', '?')} s wall)")
    p(f"- host: {meta.get('host', '')}")
    p(f"- settings: {meta.get('settings', '')}")
    if meta.get("load"):
        p(f"- {meta['load']} (2 shared vCPUs: other work on the host shows up as noise)")
    p("- every figure is the **median over the rounds**; systems run in a rotated order each round")
    p("  (round r starts at system r), so drift hits all of them alike. Only 127.0.0.1.")
    p("- **same-core**: client, echo target and the system under test all on CPU 0 (`taskset -c 0`,"
      " loadgen `--threads 1 --pin 0`). **cross-core**: client and target on CPU 0, system under test"
      " on CPU 1. `direct` has no system in between (client → echo server).")
    p(f"- raw loadgen `--json` reports: `raw/`; system logs: `logs/`; every command: `commands.log`"
      f" (in the run's output directory, `{meta.get('outdir', outdir)}`, not committed).")
    p("")

    # ---- latency
    p("## Latency: ping, 64 B, one in flight")
    p("")
    p("Added = system − direct of the same case; ÷floor = added / the copy forwarder's added (the latency target"
      " ≤ 1.1× at p50 and p99, same-core).")
    p("")
    p("| system | same-core p50 | p99 | added p50 | added p99 | ÷floor p50 | ÷floor p99 |"
      " cross-core p50 | p99 | added p50 | added p99 |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    bases = {c: (lat(c, "ping", "direct", "p50"), lat(c, "ping", "direct", "p99")) for c in ("same-core", "cross-core")}
    def added(c, s, k):
        v, b = lat(c, "ping", s, k), lat(c, "ping", "direct", k)
        return None if v is None or b is None else v - b

    for s in systems:
        cells = [labels.get(s, s)]
        for c in ("same-core", "cross-core"):
            p50, p99 = lat(c, "ping", s, "p50"), lat(c, "ping", s, "p99")
            b50, b99 = bases[c]
            cells += [fmt_us(p50), fmt_us(p99),
                      "(baseline)" if s == "direct" else fmt_delta_us(p50, b50),
                      "(baseline)" if s == "direct" else fmt_delta_us(p99, b99)]
            if c == "same-core":
                for k in ("p50", "p99"):
                    a, f = added(c, s, k), added(c, "forwarder", k)
                    cells.append("–" if s == "direct" or a is None or not f or f <= 0 else f"{a / f:.2f}×")
        p("| " + " | ".join(cells) + " |")
    p("")

    # ---- throughput
    p("## Throughput and CPU cost")
    p("")
    p("Per-connection throughput (`loadgen throughput`, one connection, pipelined), aggregate with 100"
      " connections (one client thread), and the system under test's own CPU time (utime+stime of its"
      " process tree from /proc/PID/stat, read before and after the loadgen run) per million relayed"
      " messages (messages sent + echoes received by the client, i.e. both directions).")
    p("")
    p("| system | same-core 64 B msg/s | ×direct | ×floor | 16 KiB MB/s | ×direct | 100 conns msg/s | ×direct |"
      " CPU s / M msgs (64 B) | CPU s / M msgs (100 conns) | cross-core 64 B msg/s | ×direct |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    f64 = thr("same-core", "tput64", "forwarder")
    b64 = thr("same-core", "tput64", "direct")
    b16 = thr("same-core", "tput16k", "direct", "mb_per_s")
    bagg = thr("same-core", "agg100", "direct")
    bx = thr("cross-core", "tput64", "direct")
    for s in systems:
        v64 = thr("same-core", "tput64", s)
        v16 = thr("same-core", "tput16k", s, "mb_per_s")
        vagg = thr("same-core", "agg100", s)
        vx = thr("cross-core", "tput64", s)
        c64 = cpu_per_m("same-core", "tput64", s)
        cagg = cpu_per_m("same-core", "agg100", s)
        p("| " + " | ".join([
            labels.get(s, s), fmt_int(v64), fmt_ratio(v64, b64), fmt_ratio(v64, f64),
            "–" if v16 is None else f"{v16:,.1f}", fmt_ratio(v16, b16),
            fmt_int(vagg), fmt_ratio(vagg, bagg),
            "–" if c64 is None else f"{c64:.3f}", "–" if cagg is None else f"{cagg:.3f}",
            fmt_int(vx), fmt_ratio(vx, bx)]) + " |")
    p("")

    # ---- reverse proxy
    proxies = [s for s in ("direct", "relay-proxy", "relay-proxy-copy", "relay-proxy-ring", "nginx", "haproxy")
               if s in systems]
    if any(s in systems for s in ("relay-proxy", "relay-proxy-copy", "relay-proxy-ring", "haproxy")):
        p("## Reverse proxy: ws-relay-core `[[routes]]` vs nginx and HAProxy")
        p("")
        p("Same-core (client, echo target and proxy all on CPU 0). ws-relay-core: `relay_path = \"/relay\"`"
          " and one route `path = \"/\"` to the echo server, `forward = \"splice\"` (the default) or"
          " `\"copy\"`; nginx `proxy_pass` with the Upgrade headers (1 worker); HAProxy `mode http`,"
          " `nbthread 1`. Added = system − direct; ×direct = system / direct. CPU s / M msgs: the"
          " proxy's own utime+stime per million messages (both directions). Upgrade = TCP connect +"
          " `101` (`loadgen connect --concurrency 1`, one at a time, one verified echo after each, not"
          " timed). Idle: VmRSS growth per held session (idle phase, proxy alone on CPU 1).")
        p("")
        p("| system | ping p50 | ping p99 | added p50 | added p99 | 64 B msg/s | ×direct | 100 conns msg/s |"
          " ×direct | CPU s / M msgs (64 B) | CPU s / M msgs (100 conns) | upgrade p50 | upgrade p99 |"
          " idle KiB / session |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        b50, b99 = lat("same-core", "ping", "direct", "p50"), lat("same-core", "ping", "direct", "p99")
        b64, bagg = thr("same-core", "tput64", "direct"), thr("same-core", "agg100", "direct")
        for s in proxies:
            v50, v99 = lat("same-core", "ping", s, "p50"), lat("same-core", "ping", s, "p99")
            v64, vagg = thr("same-core", "tput64", s), thr("same-core", "agg100", s)
            c64, cagg = cpu_per_m("same-core", "tput64", s), cpu_per_m("same-core", "agg100", s)
            per = idle_per.get(s)
            base = s == "direct"
            p("| " + " | ".join([
                labels.get(s, s), fmt_us(v50), fmt_us(v99),
                "(baseline)" if base else fmt_delta_us(v50, b50),
                "(baseline)" if base else fmt_delta_us(v99, b99),
                fmt_int(v64), fmt_ratio(v64, b64), fmt_int(vagg), fmt_ratio(vagg, bagg),
                "–" if c64 is None else f"{c64:.3f}", "–" if cagg is None else f"{cagg:.3f}",
                fmt_us(lat("same-core", "upgrade", s, "p50")), fmt_us(lat("same-core", "upgrade", s, "p99")),
                "–" if per is None else f"{per:.2f}"]) + " |")
        p("")

    # ---- idle
    if idle_rows:
        p("## Idle sessions: memory and threads")
        p("")
        p("Sessions opened by `benches/e2e/helper.py idle-hold` (python asyncio, raw sockets: upgrade,"
          " the relay's first-message auth for the relay-copy/-splice rows, none for the proxies (they"
          " route the bare upgrade), one echo), then held idle. The system under"
          " test runs alone on CPU 1; RSS and threads are summed over its process tree (nginx: master +"
          " worker) from /proc/PID/status.")
        p("")
        p("| system | sessions held | VmRSS before | VmRSS after | per session | threads | open |")
        p("|---|---:|---:|---:|---:|---:|---:|")
        for r in idle_rows:
            per = r["per"]
            p("| " + " | ".join([
                labels.get(r["system"], r["system"]), f"{r['held']} of {r['asked']}" + (f" ({r['failed']} failed)" if r.get("failed", "0") not in ("0", "") else ""),
                f"{r['rss_before_kib']} KiB", f"{r['rss_after_kib']} KiB",
                "–" if per is None else f"{per:.2f} KiB", f"{r['threads_before']} → {r['threads_after']}",
                f"{r['open_s']} s"]) + " |")
        p("")

    # ---- delay
    variants = [("delay48", "CPU 0 idle between pings (its vCPU halts, as on a quiet host)"),
                ("delay48-awake", "CPU 0 kept awake by a SCHED_IDLE spinner (yields at once to real work)")]
    if any(r["test"].startswith("delay48") for r in rows):
        p("## A target 48 ms away (the original README's scenario)")
        p("")
        p("`loadgen echo-server --delay-ms 48`, ping 64 B, direct vs each hop, same-core, rounds"
          " rotating; medians of the rounds. Overhead = route − direct in the same variant.")
        for test, what in variants:
            present = [s for b in ("direct", "forwarder", "relay-copy-fm", "relay-splice-fm", "relay-ring-fm",
                                   "nginx", "relay-proxy", "relay-proxy-copy", "relay-proxy-ring", "haproxy")
                       for s in (b, "old-" + b) if runs("same-core", test, s)]
            if "direct" not in present:
                continue
            p("")
            p(f"**{test}**: {what}.")
            p("")
            p("| route | pings | p50 | p99 | mean | overhead p50 | overhead p99 | overhead mean |")
            p("|---|---:|---:|---:|---:|---:|---:|---:|")
            d = [lat("same-core", test, "direct", k) for k in ("p50", "p99", "mean")]
            for s in present:
                rs = runs("same-core", test, s)
                n = sum(run_of(r)["latency_us"]["count"] for r in rs if run_of(r) and run_of(r)["latency_us"])
                v = [lat("same-core", test, s, k) for k in ("p50", "p99", "mean")]
                over = ["–" if s == "direct" or a is None or b is None else f"{(a - b) / 1000:+.3f} ms"
                        for a, b in zip(v, d)]
                p(f"| {labels.get(s, s)} | {n:,} | " + " | ".join(fmt_us(x) for x in v) + " | "
                  + " | ".join(over) + " |")
        p("")

    # ---- failures
    bad_lines = []
    for (case, test, system) in sorted({(r["case"], r["test"], r["system"]) for r in rows}):
        bad = failed(runs(case, test, system))
        if bad:
            bad_lines.append(f"- {case} {test} {system}: " + "; ".join(bad))
    p("## Verification")
    p("")
    total = len(rows)
    nbad = sum(1 for r in rows if r["rc"] != "0" or run_of(r) is None or run_of(r)["errors"]["total"])
    p(f"{total - nbad} of {total} loadgen runs verified every echo (exit 0, no lost, duplicated or corrupted message).")
    p("")
    out.extend(bad_lines)
    if bad_lines:
        p("")

    # ---- rows with exact commands
    p("## Rows and exact commands")
    p("")
    p("One line per (case, test, system): the median figure and the exact loadgen command of round 1"
      " (later rounds differ only in the output file). How each system was started is listed below.")
    p("")
    p("| case | test | system | median | command |")
    p("|---|---|---|---|---|")
    names = {"ping": "ping 64 B", "tput64": "throughput 64 B, 1 conn", "tput16k": "throughput 16 KiB, 1 conn",
             "agg100": "throughput 64 B, 100 conns", "delay48": "ping 64 B, 48 ms target",
             "delay48-awake": "ping 64 B, 48 ms target, CPU kept awake",
             "upgrade": "upgrade (TCP connect + 101), 1 at a time"}
    for test in ("ping", "tput64", "tput16k", "agg100", "upgrade", "delay48", "delay48-awake"):
        for case in ("same-core", "cross-core"):
            for s in systems:
                if not runs(case, test, s):
                    continue
                if test in ("ping", "upgrade", "delay48", "delay48-awake"):
                    fig = f"p50 {fmt_us(lat(case, test, s, 'p50'))}, p99 {fmt_us(lat(case, test, s, 'p99'))}"
                elif test == "tput16k":
                    v = thr(case, test, s, "mb_per_s")
                    fig = "–" if v is None else f"{v:,.1f} MB/s"
                else:
                    fig = f"{fmt_int(thr(case, test, s))} msg/s"
                cmd = cmd_of(case, test, s).replace("|", "\\|")
                p(f"| {case} | {names[test]} | {labels.get(s, s)} | {fig} | `{cmd}` |")
    p("")
    starts = os.path.join(outdir, "systems.tsv")
    if os.path.exists(starts):
        p("### Systems as started")
        p("")
        p("| case | system | command |")
        p("|---|---|---|")
        with open(starts) as f:
            for line in f:
                case, system, cmd = line.rstrip("\n").split("\t", 2)
                p(f"| {case} | {system} | `{cmd}` |")
        p("")
    text = "\n".join(out) + "\n"
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write(text)
    print(text)


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 1
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "freeport":
        freeport()
        return 0
    if cmd == "wait-port":
        return wait_port(*rest)
    if cmd == "wait-health":
        return wait_health(*rest)
    if cmd == "idle-hold":
        args = dict(a.split("=", 1) for a in rest)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        asyncio.run(idle_hold(args))
        return 0
    if cmd == "summarize":
        summarize(rest[0])
        return 0
    print(__doc__, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
