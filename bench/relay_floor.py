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
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from gateway_realtime.protocol import PROTOCOL_VERSION

#: The largest frame, as the relay's default (``GATEWAY_REALTIME_RELAY_MAX_FRAME_BYTES``).
MAX_FRAME = 2**20


def gateway_headers(api_key: str) -> dict[str, str]:
    """The header authentication the relay sends upstream (the mint's), for an API key."""
    return {
        "Authorization": f"Bearer {api_key}",
        "ai-gateway-protocol-version": PROTOCOL_VERSION,
        "ai-gateway-auth-method": "api-key",
    }


async def pipe(
    source: ServerConnection | ClientConnection, sink: ServerConnection | ClientConnection
) -> None:
    """Send every frame of ``source`` to ``sink`` as it came; return when either closes."""
    try:
        async for frame in source:
            await sink.send(frame)
    except ConnectionClosed:
        pass


def proxy(upstream_url: str, api_key: str) -> Callable[[ServerConnection], Awaitable[None]]:
    """A ``serve()`` handler: each browser socket piped to a Gateway socket of its own.

    The session ends when either side closes: the other pipe is cancelled and
    both sockets are closed. A Gateway that refuses the handshake ends the
    handler with that error (``websockets`` then closes the browser's 1011).
    """
    headers = gateway_headers(api_key)

    async def handler(browser: ServerConnection) -> None:
        async with connect(
            upstream_url,
            additional_headers=headers,
            user_agent_header="bench-relay-floor",
            compression=None,
            max_size=MAX_FRAME,
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
    async with serve(
        proxy(upstream, api_key), "127.0.0.1", port, compression=None, max_size=MAX_FRAME
    ):
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.relay_floor")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.upstream, args.api_key))
