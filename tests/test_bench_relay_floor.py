"""bench.relay's floor pipes frames both ways, authenticated as the relay is upstream."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from bench.relay_floor import proxy
from tests.relay.conftest import run_async


def test_the_floor_pipes_both_ways_with_header_authentication():
    seen = {}

    async def gateway(ws):
        seen["authorization"] = ws.request.headers["Authorization"]
        async for message in ws:
            await ws.send(message)

    async def scenario():
        async with serve(gateway, "127.0.0.1", 0) as upstream:
            port = upstream.sockets[0].getsockname()[1]
            handler = proxy(f"ws://127.0.0.1:{port}/", "bench-key")
            async with serve(handler, "127.0.0.1", 0) as floor:
                floor_port = floor.sockets[0].getsockname()[1]
                async with connect(f"ws://127.0.0.1:{floor_port}/") as browser:
                    await browser.send('{"type":"session-update"}')
                    await browser.send(b"\x00\x01")
                    return [
                        await asyncio.wait_for(browser.recv(), 5),
                        await asyncio.wait_for(browser.recv(), 5),
                    ]

    assert run_async(scenario) == ['{"type":"session-update"}', b"\x00\x01"]
    assert seen["authorization"] == "Bearer bench-key"
