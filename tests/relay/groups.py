"""A user's revocation group on the in-memory channel layer, for the tests that end sessions.

A relay consumer joins ``group_for(user.pk)``; in these tests a bare channel
stands in for it (``join``), and what reaches it is read back
(``first_message``, ``got_nothing``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import async_to_sync
from django.test import override_settings

IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
SENTINEL = {"type": "test.sentinel"}


@contextmanager
def in_memory_layer() -> Iterator[Any]:
    """The revocation module's channel layer, on ``IN_MEMORY`` while the block runs."""
    from gateway_realtime.relay import revocation

    with override_settings(CHANNEL_LAYERS=IN_MEMORY):
        yield revocation._channel_layer()


def join(layer: Any, user: Any) -> str:
    """A channel in ``user``'s group, as a relay consumer's would be."""
    from gateway_realtime.relay.revocation import group_for

    async def go() -> str:
        channel = await layer.new_channel()
        await layer.group_add(group_for(user.pk), channel)
        return channel

    return async_to_sync(go)()


def first_message(layer: Any, channel: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        return await asyncio.wait_for(layer.receive(channel), timeout=5)

    return async_to_sync(go)()


def got_nothing(layer: Any, channel: str) -> bool:
    """True when ``channel`` holds no message: a sentinel sent now comes out first."""
    async_to_sync(layer.send)(channel, SENTINEL)
    return first_message(layer, channel) == SENTINEL
