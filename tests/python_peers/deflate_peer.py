"""Python `websockets` peers for the permessage-deflate route test.

    deflate_peer.py server          echo server on a free port; prints the port
    deflate_peer.py client URL N    sends N compressible messages, checks the
                                    echoes, prints one JSON line of results

Both ends use the library's default compression (permessage-deflate), so the
relay in between must pass the negotiation and the compressed frames through
untouched.
"""
import asyncio
import json
import sys

import websockets


async def serve():
    async def echo(ws):
        exts = [e.name for e in ws.protocol.extensions]
        await ws.send(json.dumps({"server_extensions": exts}))
        async for msg in ws:
            await ws.send(msg)

    async with websockets.serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.Future()


async def client(url, n):
    async with websockets.connect(url) as ws:
        hello = json.loads(await ws.recv())
        sent = 0
        for i in range(n):
            msg = (f"message {i} " + "compressible " * 5000)
            await ws.send(msg)
            assert await ws.recv() == msg, f"echo {i} differs"
            sent += len(msg)
        print(json.dumps({
            "client_extensions": [e.name for e in ws.protocol.extensions],
            "server_extensions": hello["server_extensions"],
            "response_extensions": ws.response.headers.get("Sec-WebSocket-Extensions"),
            "payload_bytes": sent,
        }), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(serve())
    else:
        asyncio.run(client(sys.argv[2], int(sys.argv[3])))
