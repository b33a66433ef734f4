#!/usr/bin/env python3
"""py-server.py - Python's websockets (Debian python3-websockets) as an echo
server for gev's client: prints "listening on 127.0.0.1:PORT", echoes every
message with its type, runs until killed."""
import asyncio

import websockets


async def echo(ws, path=None):
    async for message in ws:
        await ws.send(message)


async def main():
    async with websockets.serve(echo, "127.0.0.1", 0, max_size=None,
                                compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        print("listening on 127.0.0.1:%d" % port, flush=True)
        await asyncio.Future()


asyncio.run(main())
