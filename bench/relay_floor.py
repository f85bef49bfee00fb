"""The floor for ``bench.relay``: a bare ``websockets`` proxy, no Django.

    python -m bench.relay_floor --port 8100 --api-key KEY \
        --upstream ws://127.0.0.1:8200/v4/ai/realtime-model?ai-model-id=M

Each browser socket it accepts gets a Gateway socket opened with the same
header authentication the relay sends (``Authorization``, the protocol
version, the auth method, a user agent), then one task per direction pipes
frames through unchanged, each ``await``-ing its send (the sockets'
backpressure), and the first side to end closes the other. Nothing else: no
login, no origin check, no limits, no metering, no audit row. What the relay
costs beyond this is what Django, Channels and the relay's own work cost.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


async def pipe(source: Any, sink: Any) -> None:
    try:
        async for frame in source:
            await sink.send(frame)
    except ConnectionClosed:
        pass


def proxy(upstream_url: str, api_key: str) -> Any:
    headers = {
        "Authorization": f"Bearer {api_key}",
        "ai-gateway-protocol-version": "0.0.1",
        "ai-gateway-auth-method": "api-key",
    }

    async def handler(browser: ServerConnection) -> None:
        async with connect(
            upstream_url,
            additional_headers=headers,
            user_agent_header="bench-relay-floor",
            compression=None,
            max_size=2**20,
        ) as gateway:
            tasks = [
                asyncio.create_task(pipe(browser, gateway)),
                asyncio.create_task(pipe(gateway, browser)),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return handler


async def main(port: int, upstream: str, api_key: str) -> None:
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    async with serve(proxy(upstream, api_key), "127.0.0.1", port, compression=None, max_size=2**20):
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.relay_floor")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.upstream, args.api_key))
