"""Ending a user's live relayed sessions on every process (through the channel layer)."""

from __future__ import annotations


def group_for(user_id: object) -> str:
    """The channel-layer group every relayed session of ``user_id`` joins."""
    return f"gateway_realtime.relay.user.{user_id}"
