"""The channel layer as docs/relay.md configures it keeps an idle session's read alive.

redis-py 8 gives every connection a 5 s socket time-out, exactly
channels_redis's blocking read: with a bare URL an idle consumer's receive
raises ``TimeoutError`` after about 5 s (check W008). With the documented
``socket_timeout`` it waits as long as nothing comes. The test waits for a
message sent after the blocking read has timed out once on the server side;
it asserts no duration.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from gateway_realtime.checks import CHANNELS_REDIS_BLOCKING_READ, RELAY_REDIS_SOCKET_TIMEOUT

from .conftest import run_async

pytestmark = pytest.mark.services

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def test_an_idle_receive_outlives_the_blocking_read():
    pytest.importorskip("channels_redis")
    if os.environ.get("GATEWAY_REALTIME_TEST_SERVICES") != "1":
        pytest.skip("needs Redis: run make test-services (GATEWAY_REALTIME_TEST_SERVICES=1)")
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(
        hosts=[{"address": REDIS_URL, "socket_timeout": RELAY_REDIS_SOCKET_TIMEOUT}],
        prefix=f"idletest-{uuid.uuid4().hex[:8]}",
    )

    async def scenario():
        channel = await layer.new_channel()
        receiving = asyncio.ensure_future(layer.receive(channel))
        # Idle past one whole blocking read (the server answers it empty).
        await asyncio.sleep(CHANNELS_REDIS_BLOCKING_READ + 1)
        assert not receiving.done(), receiving.exception()
        await layer.send(channel, {"type": "relay.revoke", "reason": "still here"})
        message = await asyncio.wait_for(receiving, RELAY_REDIS_SOCKET_TIMEOUT)
        await layer.flush()
        return message

    assert run_async(scenario) == {"type": "relay.revoke", "reason": "still here"}
