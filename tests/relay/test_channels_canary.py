"""Canary: what ``RelayConsumer.dispatch`` assumes of the installed Channels.

The relay hands ``websocket.receive`` straight to ``websocket_receive``,
skipping ``AsyncConsumer.dispatch``'s ``aclose_old_connections()`` (a hop to
the database thread per frame). That is the same as Channels' own path only
while Channels' ``dispatch`` does exactly two things for that message: close
old connections, then call the handler its ``get_handler_name`` names. If a
Channels release changes that, these tests fail and the override must be
looked at again.
"""

from __future__ import annotations

import channels.consumer
from channels.consumer import AsyncConsumer, get_handler_name

from gateway_realtime.relay.consumers import RelayConsumer

from .conftest import run_async


def test_the_handler_name_of_a_frame_is_websocket_receive():
    assert get_handler_name({"type": "websocket.receive"}) == "websocket_receive"


def test_channels_dispatch_closes_old_connections_then_calls_the_handler(monkeypatch):
    calls = []

    async def closed():
        calls.append("aclose_old_connections")

    class Probe(AsyncConsumer):
        async def websocket_receive(self, message):
            calls.append(("websocket_receive", message))

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", closed)
    message = {"type": "websocket.receive", "text": "x"}

    async def scenario():
        await Probe().dispatch(message)

    run_async(scenario)
    assert calls == ["aclose_old_connections", ("websocket_receive", message)]


def test_the_relay_hands_a_frame_to_websocket_receive_and_nothing_else(monkeypatch):
    calls = []

    async def closed():
        calls.append("aclose_old_connections")

    async def websocket_receive(self, message):
        calls.append(("websocket_receive", message))

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", closed)
    monkeypatch.setattr(RelayConsumer, "websocket_receive", websocket_receive)
    message = {"type": "websocket.receive", "bytes": b"\x00"}

    async def scenario():
        await RelayConsumer().dispatch(message)

    run_async(scenario)
    assert calls == [("websocket_receive", message)]


def test_other_messages_keep_channels_path(monkeypatch):
    calls = []

    async def closed():
        calls.append("aclose_old_connections")

    async def relay_revoke(self, message):
        calls.append("relay_revoke")

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", closed)
    monkeypatch.setattr(RelayConsumer, "relay_revoke", relay_revoke)

    async def scenario():
        await RelayConsumer().dispatch({"type": "relay.revoke"})

    run_async(scenario)
    assert calls == ["aclose_old_connections", "relay_revoke"]
