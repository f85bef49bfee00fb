"""bench.relay's floor (``bench.relay_floor``) against the Gateway emulator.

The emulator accepts a server socket only with the mint's header
authentication (the Bearer key, ``ai-gateway-auth-method``,
``ai-gateway-protocol-version``), so a frame that comes back proves the
floor authenticates upstream as the relay does and pipes both ways.
"""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from bench.relay_floor import proxy
from gateway_realtime.emulator import GatewayEmulator
from tests.relay.conftest import run_async

KEY = "vck_bench_floor_test_key"


async def reply_to(browser, frame: str) -> dict:
    await browser.send(frame)
    while True:
        event = json.loads(await asyncio.wait_for(browser.recv(), 5))
        if event["type"] != "session-created":
            return event


def test_the_floor_pipes_a_frame_each_way_with_the_relays_authentication():
    with GatewayEmulator(host="127.0.0.1", port=0, api_keys=(KEY,), allow_api_key_ws=True) as emu:
        upstream = f"{emu.ws_base_url}/realtime-model?ai-model-id=openai/gpt-realtime-2"

        async def scenario():
            async with serve(proxy(upstream, KEY), "127.0.0.1", 0) as floor:
                port = floor.sockets[0].getsockname()[1]
                async with connect(f"ws://127.0.0.1:{port}/") as browser:
                    update = {"type": "session-update", "config": {"instructions": "hi"}}
                    return await reply_to(browser, json.dumps(update))

        assert run_async(scenario)["type"] == "session-updated"
        assert [handshake.status for handshake in emu.ws_handshakes] == [101]
