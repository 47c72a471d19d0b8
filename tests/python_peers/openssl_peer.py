#!/usr/bin/env python3
"""An OpenSSL peer for tests/tls_openssl.rs (issue 14, item 2).

It drives the system's libssl (OpenSSL 3) through ctypes. Python's own `ssl`
module cannot start a key update or choose TLS 1.3 suites, and the test needs
both. The TLS engine runs over memory BIOs and this script moves the bytes
itself, so it can cut them into tiny TCP writes (records split across the
relay's reads) or flip a bit in an incoming record (OpenSSL then answers with
a fatal bad_record_mac alert, as a real peer would).

  client  connects to the relay's TLS listener, upgrades with header auth to
          --target, streams --bytes of WebSocket frames through it in records
          of the sizes --records names, checks the echo by SHA-256, and ends
          the way --end says.
  server  is a wss:// echo target for the relay's target side; it writes its
          port to --port-file and echoes until killed.

Each session prints one JSON line on stdout (version, cipher, reused, ...).
Any failure is a message on stderr and exit status 1.
"""

import argparse
import base64
import ctypes
import ctypes.util
import hashlib
import json
import os
import socket
import sys
import threading
import time

P = ctypes.c_void_p


def _lib(name, soname):
    return ctypes.CDLL(ctypes.util.find_library(name) or soname)


SSL = _lib("ssl", "libssl.so.3")
CRYPTO = _lib("crypto", "libcrypto.so.3")


def _fn(lib, name, res, *args):
    f = getattr(lib, name)
    f.restype = res
    f.argtypes = list(args)
    return f


c_int, c_long, c_str = ctypes.c_int, ctypes.c_long, ctypes.c_char_p
TLS_client_method = _fn(SSL, "TLS_client_method", P)
TLS_server_method = _fn(SSL, "TLS_server_method", P)
SSL_CTX_new = _fn(SSL, "SSL_CTX_new", P, P)
SSL_CTX_ctrl = _fn(SSL, "SSL_CTX_ctrl", c_long, P, c_int, c_long, P)
SSL_CTX_set_ciphersuites = _fn(SSL, "SSL_CTX_set_ciphersuites", c_int, P, c_str)
SSL_CTX_set_cipher_list = _fn(SSL, "SSL_CTX_set_cipher_list", c_int, P, c_str)
SSL_CTX_load_verify_locations = _fn(SSL, "SSL_CTX_load_verify_locations", c_int, P, c_str, c_str)
SSL_CTX_set_verify = _fn(SSL, "SSL_CTX_set_verify", None, P, c_int, P)
SSL_CTX_use_certificate_chain_file = _fn(SSL, "SSL_CTX_use_certificate_chain_file", c_int, P, c_str)
SSL_CTX_use_PrivateKey_file = _fn(SSL, "SSL_CTX_use_PrivateKey_file", c_int, P, c_str, c_int)
SSL_new = _fn(SSL, "SSL_new", P, P)
SSL_free = _fn(SSL, "SSL_free", None, P)
SSL_set_bio = _fn(SSL, "SSL_set_bio", None, P, P, P)
SSL_set_connect_state = _fn(SSL, "SSL_set_connect_state", None, P)
SSL_set_accept_state = _fn(SSL, "SSL_set_accept_state", None, P)
SSL_do_handshake = _fn(SSL, "SSL_do_handshake", c_int, P)
SSL_read = _fn(SSL, "SSL_read", c_int, P, ctypes.POINTER(ctypes.c_char), c_int)
SSL_write = _fn(SSL, "SSL_write", c_int, P, c_str, c_int)
SSL_get_error = _fn(SSL, "SSL_get_error", c_int, P, c_int)
SSL_shutdown = _fn(SSL, "SSL_shutdown", c_int, P)
SSL_key_update = _fn(SSL, "SSL_key_update", c_int, P, c_int)
SSL_ctrl = _fn(SSL, "SSL_ctrl", c_long, P, c_int, c_long, P)
SSL_set1_host = _fn(SSL, "SSL_set1_host", c_int, P, c_str)
SSL_get_version = _fn(SSL, "SSL_get_version", c_str, P)
SSL_get_current_cipher = _fn(SSL, "SSL_get_current_cipher", P, P)
SSL_CIPHER_get_name = _fn(SSL, "SSL_CIPHER_get_name", c_str, P)
SSL_get1_session = _fn(SSL, "SSL_get1_session", P, P)
SSL_set_session = _fn(SSL, "SSL_set_session", c_int, P, P)
SSL_session_reused = _fn(SSL, "SSL_session_reused", c_int, P)
SSL_get_verify_result = _fn(SSL, "SSL_get_verify_result", c_long, P)
BIO_s_mem = _fn(CRYPTO, "BIO_s_mem", P)
BIO_new = _fn(CRYPTO, "BIO_new", P, P)
BIO_write = _fn(CRYPTO, "BIO_write", c_int, P, c_str, c_int)
BIO_read = _fn(CRYPTO, "BIO_read", c_int, P, ctypes.POINTER(ctypes.c_char), c_int)
BIO_ctrl_pending = _fn(CRYPTO, "BIO_ctrl_pending", ctypes.c_size_t, P)
ERR_get_error = _fn(CRYPTO, "ERR_get_error", ctypes.c_ulong)
ERR_error_string_n = _fn(CRYPTO, "ERR_error_string_n", None, ctypes.c_ulong, c_str, ctypes.c_size_t)

SSL_CTRL_SET_TLSEXT_HOSTNAME = 55
SSL_CTRL_SET_MIN_PROTO_VERSION = 123
SSL_CTRL_SET_MAX_PROTO_VERSION = 124
VERSIONS = {"1.2": 0x0303, "1.3": 0x0304}
SSL_ERROR_WANT_READ, SSL_ERROR_ZERO_RETURN = 2, 6
SSL_FILETYPE_PEM, SSL_VERIFY_PEER = 1, 1
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Failure(Exception):
    pass


def openssl_errors():
    out = []
    while True:
        e = ERR_get_error()
        if not e:
            return "; ".join(out) or "no OpenSSL error queued"
        buf = ctypes.create_string_buffer(256)
        ERR_error_string_n(e, buf, 256)
        out.append(buf.value.decode())


def context(server, args):
    ctx = SSL_CTX_new(TLS_server_method() if server else TLS_client_method())
    v = VERSIONS[args.version]
    SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, v, None)
    SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MAX_PROTO_VERSION, v, None)
    if args.suite:
        ok = (SSL_CTX_set_ciphersuites if args.version == "1.3" else SSL_CTX_set_cipher_list)(
            ctx, args.suite.encode()
        )
        if not ok:
            raise Failure(f"OpenSSL refused suite {args.suite}: {openssl_errors()}")
    if server:
        if SSL_CTX_use_certificate_chain_file(ctx, args.cert.encode()) != 1:
            raise Failure(f"load {args.cert}: {openssl_errors()}")
        if SSL_CTX_use_PrivateKey_file(ctx, args.key.encode(), SSL_FILETYPE_PEM) != 1:
            raise Failure(f"load {args.key}: {openssl_errors()}")
    else:
        if SSL_CTX_load_verify_locations(ctx, args.ca.encode(), None) != 1:
            raise Failure(f"load {args.ca}: {openssl_errors()}")
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, None)
    return ctx


class Tls:
    """One OpenSSL connection over memory BIOs on a blocking socket."""

    def __init__(self, ctx, sock, server, split=False, session=None):
        self.ssl = SSL_new(ctx)
        self.rbio, self.wbio = BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem())
        SSL_set_bio(self.ssl, self.rbio, self.wbio)
        if server:
            SSL_set_accept_state(self.ssl)
        else:
            SSL_set_connect_state(self.ssl)
            SSL_ctrl(self.ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, 0, ctypes.c_char_p(b"localhost"))
            SSL_set1_host(self.ssl, b"localhost")
            if session:
                SSL_set_session(self.ssl, session)
        self.sock, self.split, self.tamper = sock, split, False
        self.rbuf = ctypes.create_string_buffer(1 << 16)

    def flush(self):
        """Sends what OpenSSL wrote; in split mode a few bytes per TCP write."""
        while (n := BIO_ctrl_pending(self.wbio)) > 0:
            buf = ctypes.create_string_buffer(n)
            got = BIO_read(self.wbio, buf, n)
            data = buf.raw[:got]
            if not self.split:
                self.sock.sendall(data)
                continue
            step, i = 1, 0
            while i < len(data):
                self.sock.sendall(data[i : i + step])
                i += step
                step = step % 7 + 1
                time.sleep(0.0002)

    def feed(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise Failure("relay closed the TCP connection (no close_notify)")
        if self.tamper:
            # Flip the last byte received: part of a sealed record, so its
            # tag no longer verifies and OpenSSL sends a fatal alert.
            data = data[:-1] + bytes([data[-1] ^ 0x01])
            self.tamper = False
        BIO_write(self.rbio, data, len(data))

    def call(self, what, op):
        while True:
            r = op()
            self.flush()
            if r > 0:
                return r
            err = SSL_get_error(self.ssl, r)
            if err == SSL_ERROR_WANT_READ:
                self.feed()
            elif err == SSL_ERROR_ZERO_RETURN:
                return 0
            else:
                raise Failure(f"{what}: SSL error {err}: {openssl_errors()}")

    def handshake(self):
        self.call("handshake", lambda: SSL_do_handshake(self.ssl))

    def write(self, data):
        self.call("SSL_write", lambda: SSL_write(self.ssl, data, len(data)))

    def read(self):
        """Decrypted bytes; b"" once the peer's close_notify arrived."""
        n = self.call("SSL_read", lambda: SSL_read(self.ssl, self.rbuf, len(self.rbuf)))
        return self.rbuf.raw[:n]

    def key_update(self, requested):
        if SSL_key_update(self.ssl, 1 if requested else 0) != 1:
            raise Failure(f"SSL_key_update: {openssl_errors()}")
        self.handshake()

    def close_notify(self):
        """Sends close_notify, then reads until the relay's own close_notify;
        returns the application bytes that came before it."""
        if SSL_shutdown(self.ssl) < 0:
            raise Failure(f"SSL_shutdown: {openssl_errors()}")
        self.flush()
        rest = b""
        while data := self.read():
            rest += data
        return rest

    def describe(self):
        cipher = SSL_get_current_cipher(self.ssl)
        return {
            "version": SSL_get_version(self.ssl).decode(),
            "cipher": SSL_CIPHER_get_name(cipher).decode() if cipher else None,
            "reused": SSL_session_reused(self.ssl) == 1,
        }


# --- WebSocket framing -------------------------------------------------------


def mask(data, key):
    n = len(data)
    pad = (key * (n // 4 + 1))[:n]
    x = int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")
    return x.to_bytes(n, "little")


def frame(payload, opcode=0x2, masked=True):
    n = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + mask(payload, key)


class Frames:
    """Incremental frame parser: feed bytes, take (opcode, payload) or None."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data

    def take(self):
        b = self.buf
        if len(b) < 2:
            return None
        n, i = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, i = int.from_bytes(b[2:4], "big"), 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, i = int.from_bytes(b[2:10], "big"), 10
        key = None
        if b[1] & 0x80:
            if len(b) < i + 4:
                return None
            key, i = bytes(b[i : i + 4]), i + 4
        if len(b) < i + n:
            return None
        if not b[0] & 0x80:
            raise Failure("fragmented frame: this peer does not reassemble")
        opcode, payload = b[0] & 0x0F, bytes(b[i : i + n])
        del b[: i + n]
        return opcode, mask(payload, key) if key else payload


def read_head(tls):
    """Reads an HTTP head; returns (head text, bytes after it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = tls.read()
        if not data:
            raise Failure(f"close_notify inside the HTTP head: {buf!r}")
        buf += data
        if len(buf) > 16384:
            raise Failure("HTTP head over 16 KiB")
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def header(head, name):
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def record_sizes(plan):
    """The plaintext size of each record this peer writes, cycling."""
    if plan == "sweep":  # every size from 1 to 2^14
        sizes = list(range(1, (1 << 14) + 1))
    elif plan == "edges":  # 1..64, each power of two +-1, the maximum
        sizes = list(range(1, 65))
        for k in range(6, 15):
            sizes += [(1 << k) - 1, 1 << k, (1 << k) + 1]
        sizes = [s for s in sizes if s <= 1 << 14]
    else:
        sizes = [1 << 14]
    while True:
        yield from sizes


class Writer:
    """Writes a byte stream through TLS, one record per size from `sizes`."""

    def __init__(self, tls, plan):
        self.tls, self.sizes, self.pending = tls, record_sizes(plan), bytearray()
        self.size, self.records = next(self.sizes), 0

    def send(self, data):
        # A size larger than what is pending waits for more bytes rather than
        # being cut short; flush() writes the tail when a reply is awaited.
        self.pending += data
        while len(self.pending) >= self.size:
            self.tls.write(bytes(self.pending[: self.size]))
            del self.pending[: self.size]
            self.records += 1
            self.size = next(self.sizes)

    def flush(self):
        if self.pending:
            self.tls.write(bytes(self.pending))
            self.pending.clear()
            self.records += 1


def payload_stream(total, size):
    """Deterministic message payloads totalling `total` bytes."""
    seed, sent = hashlib.sha256(b"openssl-peer").digest(), 0
    block = (seed * (size // len(seed) + 1))[:size]
    i = 0
    while sent < total:
        n = min(size, total - sent)
        yield i.to_bytes(8, "big") + block[8:n] if n >= 8 else block[:n]
        sent += n
        i += 1


# --- client: the relay's TLS listener ----------------------------------------


def run_client(args):
    ctx = context(False, args)
    session = None
    for attempt in range(2 if args.resume else 1):
        sock = socket.create_connection(("127.0.0.1", args.port), timeout=20)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = Tls(ctx, sock, False, split=args.split, session=session)
        tls.handshake()
        if SSL_get_verify_result(tls.ssl) != 0:
            raise Failure("the relay's certificate did not verify")
        result = tls.describe()
        result.update(exchange(tls, args))
        if args.resume and attempt == 0:
            session = SSL_get1_session(tls.ssl)
        result.update(end(tls, sock, args.end))
        print(json.dumps(result), flush=True)
        SSL_free(tls.ssl)
        sock.close()


def exchange(tls, args):
    """Upgrade, then stream args.bytes of messages and check their echo."""
    key = base64.b64encode(os.urandom(16)).decode()
    req = (
        f"GET / HTTP/1.1\r\nHost: localhost:{args.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {args.token}\r\nX-Relay-Target: {args.target}\r\n\r\n"
    )
    tls.write(req.encode())
    head, rest = read_head(tls)
    if not head.startswith("HTTP/1.1 101") or header(head, "Sec-WebSocket-Accept") != accept_key(key):
        raise Failure(f"upgrade refused: {head!r}")
    frames, writer = Frames(), Writer(tls, args.records)
    frames.feed(rest)
    sent, got = hashlib.sha256(), hashlib.sha256()
    sent_n = got_n = messages = updates = 0

    def receive(until):
        nonlocal got_n
        while got_n < until:
            f = frames.take()
            if f is None:
                writer.flush()
                data = tls.read()
                if not data:
                    raise Failure(f"close_notify after {got_n} of {sent_n} echoed bytes")
                frames.feed(data)
                continue
            opcode, payload = f
            if opcode != 0x2:
                raise Failure(f"unexpected frame opcode {opcode} after {got_n} bytes")
            got.update(payload)
            got_n += len(payload)

    for payload in payload_stream(args.bytes, args.message):
        writer.send(frame(payload))
        sent.update(payload)
        sent_n += len(payload)
        messages += 1
        if args.key_update_every and messages % args.key_update_every == 0:
            writer.flush()
            tls.key_update(requested=updates % 2 == 1)
            updates += 1
        if sent_n - got_n > 256 * 1024:
            receive(sent_n - 64 * 1024)
    writer.flush()
    receive(sent_n)
    if sent.digest() != got.digest():
        raise Failure(f"echo differs from what was sent ({sent_n} bytes)")
    return {"bytes": got_n, "messages": messages, "records": writer.records, "key_updates": updates}


def end(tls, sock, how):
    if how == "notify":
        # No WebSocket Close: close_notify only, and the relay must answer.
        rest = tls.close_notify()
        if rest or sock.recv(1):
            raise Failure(f"bytes around the relay's close_notify: {rest!r}")
        return {"end": "close_notify answered"}
    if how == "alert":
        # Ask for one more echo and corrupt the relay's reply: OpenSSL
        # refuses it and sends a fatal alert; the relay must drop the session.
        tls.write(frame(b"ping-after-tamper"))
        tls.tamper = True
        try:
            while tls.read():
                pass
        except Failure as e:
            if "bad record mac" not in str(e).lower() and "decryption failed" not in str(e).lower():
                raise
        else:
            raise Failure("OpenSSL accepted a corrupted record")
        sock.settimeout(5)
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        return {"end": "fatal alert sent, relay closed"}
    # A WebSocket Close handshake, then close_notify both ways.
    tls.write(frame((1000).to_bytes(2, "big"), opcode=0x8))
    frames = Frames()
    while (f := frames.take()) is None:
        data = tls.read()
        if not data:
            raise Failure("close_notify before the Close frame")
        frames.feed(data)
    if f[0] != 0x8 or f[1][:2] != (1000).to_bytes(2, "big"):
        raise Failure(f"expected Close 1000, got opcode {f[0]} {f[1]!r}")
    rest = tls.close_notify()
    if rest:
        raise Failure(f"bytes after the Close frame: {rest!r}")
    return {"end": "close 1000"}


# --- server: a wss:// target -------------------------------------------------


def run_server(args):
    ctx = context(True, args)
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(lsock.getsockname()[1]))
    os.rename(tmp, args.port_file)
    lock = threading.Lock()
    while True:
        sock, _ = lsock.accept()
        threading.Thread(target=serve_one, args=(ctx, sock, args, lock), daemon=True).start()


def serve_one(ctx, sock, args, lock):
    sock.settimeout(30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with lock:  # OpenSSL objects are per thread; the context is shared
        tls = Tls(ctx, sock, True, split=args.split)
    result = {}
    try:
        tls.handshake()
        result = tls.describe()
        head, rest = read_head(tls)
        key = header(head, "Sec-WebSocket-Key")
        if not head.startswith("GET ") or not key:
            raise Failure(f"not a WebSocket upgrade: {head!r}")
        tls.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
            ).encode()
        )
        result.update(echo(tls, rest, args))
    except Failure as e:
        result["error"] = str(e)
        linger(sock)
    except OSError as e:
        result["error"] = f"socket: {e}"
    print(json.dumps(result), flush=True)
    sock.close()


def linger(sock):
    """After a fatal alert: half-close and drain, so closing with unread
    bytes does not turn into an RST that discards the alert in flight."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(2)
        while sock.recv(1 << 16):
            pass
    except OSError:
        pass


def echo(tls, rest, args):
    frames, writer = Frames(), Writer(tls, args.records)
    frames.feed(rest)
    messages = updates = 0
    while True:
        f = frames.take()
        if f is None:
            writer.flush()
            data = tls.read()
            if not data:
                return {"messages": messages, "records": writer.records, "end": "close_notify"}
            frames.feed(data)
            continue
        opcode, payload = f
        if opcode == 0x8:
            writer.flush()
            tls.write(frame(payload[:2], opcode=0x8, masked=False))
            tls.close_notify()
            return {"messages": messages, "records": writer.records, "key_updates": updates, "end": "close"}
        if opcode == 0x9:
            writer.send(frame(payload, opcode=0xA, masked=False))
            continue
        writer.send(frame(payload, opcode=opcode, masked=False))
        messages += 1
        if messages == args.end_after:
            writer.flush()
            if args.end == "notify":
                # The target goes away politely, with no WebSocket Close.
                rest = tls.close_notify()
                return {"messages": messages, "end": "close_notify answered", "after": len(rest)}
            # Corrupt the relay's next record: OpenSSL sends a fatal alert.
            tls.tamper = True
        if args.key_update_every and messages % args.key_update_every == 0:
            writer.flush()
            tls.key_update(requested=updates % 2 == 1)
            updates += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["client", "server"])
    ap.add_argument("--version", choices=sorted(VERSIONS), required=True)
    ap.add_argument("--suite", help="OpenSSL name of the one suite to offer")
    ap.add_argument("--ca", help="client: CA file that signs the relay's certificate")
    ap.add_argument("--cert", help="server: certificate chain PEM")
    ap.add_argument("--key", help="server: private key PEM")
    ap.add_argument("--port", type=int, help="client: the relay's TLS port")
    ap.add_argument("--port-file", help="server: where to write the listening port")
    ap.add_argument("--token", default="")
    ap.add_argument("--target", default="")
    ap.add_argument("--bytes", type=int, default=1 << 20, help="client: payload bytes to echo")
    ap.add_argument("--message", type=int, default=65536, help="client: payload bytes per message")
    ap.add_argument("--records", choices=["sweep", "edges", "max"], default="max")
    ap.add_argument("--split", action="store_true", help="a few bytes per TCP write")
    ap.add_argument("--key-update-every", type=int, default=0, help="messages between key updates")
    ap.add_argument("--end", choices=["close", "notify", "alert"], default="close")
    ap.add_argument("--end-after", type=int, default=0, help="server: end as --end says after N echoes")
    ap.add_argument("--resume", action="store_true", help="client: a second session resumes the first")
    args = ap.parse_args()
    try:
        (run_client if args.mode == "client" else run_server)(args)
    except (Failure, OSError) as e:
        print(f"openssl_peer: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
