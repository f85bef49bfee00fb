"""The channel layer as docs/relay.md configures it keeps an idle session's read alive.

channels_redis receives with a blocking read that Redis answers empty after
``RedisChannelLayer.brpop_timeout`` (5 s); redis-py 8 gives each connection a
5 s socket time-out by default, so with a bare URL that read raises
``TimeoutError`` first and the idle consumer dies. These tests run the
documented configuration and the bare URL side by side on the test Redis,
idle past one whole blocking read, and check that what happened is what check
W008 says of each. They wait for outcomes (bounded generously); they assert
no duration.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway_realtime.checks import BLOCKING_READ_MARGIN, check_relay_channel_layer

from .conftest import run_async
from .documented_layer import documented_channel_layers

pytestmark = pytest.mark.services

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
MESSAGE = {"type": "relay.revoke", "reason": "still here"}


def on_the_test_redis(host: Any) -> Any:
    """A ``CONFIG["hosts"]`` entry pointed at the test Redis, all else kept (its query too)."""
    test = urlsplit(REDIS_URL)
    address = host["address"] if isinstance(host, dict) else host
    moved = urlsplit(address)._replace(netloc=test.netloc, path=test.path).geturl()
    return {**host, "address": moved} if isinstance(host, dict) else moved


def layer_config(hosts: list[Any]) -> dict[str, Any]:
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": hosts, "prefix": f"idletest-{uuid.uuid4().hex[:8]}"},
    }


def flagged_by_w008(settings: Any, config: dict[str, Any]) -> bool:
    if "channels" not in settings.INSTALLED_APPS:
        settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "channels"]
    settings.CHANNEL_LAYERS = {"default": config}
    return [m.id for m in check_relay_channel_layer()] == ["gateway_realtime.W008"]


def test_an_idle_receive_survives_exactly_where_w008_says_it_does(settings: Any) -> None:
    pytest.importorskip("channels_redis")
    if os.environ.get("GATEWAY_REALTIME_TEST_SERVICES") != "1":
        pytest.skip("needs Redis: run make test-services (GATEWAY_REALTIME_TEST_SERVICES=1)")
    from channels_redis.core import RedisChannelLayer
    from redis.exceptions import TimeoutError as RedisTimeoutError

    documented_hosts = documented_channel_layers()["default"]["CONFIG"]["hosts"]
    documented = layer_config([on_the_test_redis(host) for host in documented_hosts])
    bare = layer_config([REDIS_URL])
    assert not flagged_by_w008(settings, documented)
    bare_flagged = flagged_by_w008(settings, bare)
    blocking_read = RedisChannelLayer.brpop_timeout

    async def scenario() -> tuple[Any, BaseException | None]:
        layers = [RedisChannelLayer(**documented["CONFIG"]), RedisChannelLayer(**bare["CONFIG"])]
        channels = [await layer.new_channel() for layer in layers]
        receives = [
            asyncio.ensure_future(layer.receive(channel))
            for layer, channel in zip(layers, channels, strict=True)
        ]
        try:
            # Idle past one whole blocking read and the answer's margin, so the
            # documented layer has had an empty answer and read again.
            await asyncio.sleep(blocking_read + BLOCKING_READ_MARGIN + 1)
            kept, dropped = receives
            assert not kept.done(), kept.exception()
            await layers[0].send(channels[0], MESSAGE)
            received = await asyncio.wait_for(kept, 4 * blocking_read)
            # The bare URL's read: dead by now, or alive for good.
            await asyncio.wait({dropped}, timeout=2 * blocking_read)
            bare_error = dropped.exception() if dropped.done() else None
            return received, bare_error
        finally:
            for receive in receives:
                receive.cancel()
            await asyncio.gather(*receives, return_exceptions=True)
            for layer in layers:
                await layer.flush()

    received, bare_error = run_async(scenario)
    assert received == MESSAGE
    assert bare_flagged == isinstance(bare_error, RedisTimeoutError), bare_error
