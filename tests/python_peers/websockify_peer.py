"""A noVNC-style client: offers the `binary` subprotocol, sends binary
messages to a TCP echo service behind URL, and prints one JSON line that
describes what came back, so runs against websockify and against the relay
can be compared field by field.

    websockify_peer.py URL
"""
import asyncio
import hashlib
import json
import sys

import websockets


async def main(url):
    async with websockets.connect(url, subprotocols=["binary"], compression=None) as ws:
        sent = hashlib.sha256()
        got = hashlib.sha256()
        total = 0
        kinds = set()
        for i in range(50):
            msg = bytes((i * 31 + j) % 256 for j in range(1 + i * 997))
            sent.update(msg)
            total += len(msg)
            await ws.send(msg)
        have = 0
        while have < total:
            m = await ws.recv()
            kinds.add(type(m).__name__)
            got.update(m)
            have += len(m)
        pong = await ws.ping(b"novnc")
        await asyncio.wait_for(pong, 5)
        print(json.dumps({
            "subprotocol": ws.subprotocol,
            "message_types": sorted(kinds),
            "bytes": have,
            "echo_matches": sent.hexdigest() == got.hexdigest(),
            "pong": True,
        }), flush=True)


asyncio.run(main(sys.argv[1]))
