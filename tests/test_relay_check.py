"""W007: a site set up for Channels must have the layer relayed sessions are revoked through."""

from __future__ import annotations

from typing import Any


def test_w007_when_channels_is_installed_without_the_relays_layer(settings: Any) -> None:
    from gateway_realtime.checks import check_relay_channel_layer

    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "channels"]
    settings.CHANNEL_LAYERS = {}
    (message,) = check_relay_channel_layer()
    assert message.id == "gateway_realtime.W007"
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert check_relay_channel_layer() == []
    settings.GATEWAY_REALTIME_RELAY_CHANNEL_LAYER = "relay"
    assert [m.id for m in check_relay_channel_layer()] == ["gateway_realtime.W007"]


def test_no_w007_where_channels_is_not_in_use(settings: Any) -> None:
    from gateway_realtime.checks import check_relay_channel_layer

    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "channels"]
    assert check_relay_channel_layer() == []
