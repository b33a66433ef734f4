#!/usr/bin/env python3
"""py-client.py URL - Python's websockets (Debian python3-websockets) as a
client of a gev WebSocket echo server: text and binary messages of every
length class, multi-byte UTF-8, a ping, a close handshake. Exit 0 when every
echo matched. For wss:// the environment's WS_CA names the PEM file of the
CA the server's certificate must chain to (host name verified too)."""
import asyncio
import os
import ssl
import sys

import websockets


async def main(url):
    sizes = [0, 1, 125, 126, 127, 65535, 65536, 1 << 20]
    extra = {}
    if url.startswith("wss://"):
        extra["ssl"] = ssl.create_default_context(cafile=os.environ["WS_CA"])
    async with websockets.connect(url, max_size=None, compression=None,
                                  **extra) as ws:
        n = 0
        for size in sizes:
            text = ("κόσμε a" * (size // 7 + 1))[:size]
            await ws.send(text)
            if await ws.recv() != text:
                sys.exit("py-client: text echo of %d differs" % size)
            data = bytes([size & 0xFF]) * size
            await ws.send(data)
            if await ws.recv() != data:
                sys.exit("py-client: binary echo of %d differs" % size)
            n += 2
        # A fragmented message: the server reassembles it.
        await ws.send(["frag", "ment", "ed"])
        if await ws.recv() != "fragmented":
            sys.exit("py-client: fragmented echo differs")
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
        await ws.close(1000, "bye")
        if ws.close_code != 1000:
            sys.exit("py-client: close code %s" % ws.close_code)
    print("py-client: %d echoes, fragments, ping, close 1000: ok" % (n + 1))


asyncio.run(asyncio.wait_for(main(sys.argv[1]), 20))
