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


def redis_layer(*hosts: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": list(hosts)},
        }
    }


def test_w008_when_a_redis_host_would_time_out_with_the_blocking_read(
    settings: Any, monkeypatch: Any
) -> None:
    import redis

    from gateway_realtime.checks import check_relay_channel_layer

    monkeypatch.setattr(redis, "__version__", "8.2.0")
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "channels"]
    for broken in (
        "redis://127.0.0.1:6379/1",  # redis-py 8's default: 5 s
        {"address": "redis://127.0.0.1:6379/1"},
        {"address": "redis://127.0.0.1:6379/1", "socket_timeout": 5},
        "redis://127.0.0.1:6379/1?socket_timeout=3",
    ):
        settings.CHANNEL_LAYERS = redis_layer(broken)
        assert [m.id for m in check_relay_channel_layer()] == ["gateway_realtime.W008"], broken
    for fixed in (
        {"address": "redis://127.0.0.1:6379/1", "socket_timeout": 10},
        {"address": "redis://127.0.0.1:6379/1", "socket_timeout": None},
        "redis://127.0.0.1:6379/1?socket_timeout=10",
    ):
        settings.CHANNEL_LAYERS = redis_layer(fixed)
        assert check_relay_channel_layer() == [], fixed
    # redis-py before 8 set no socket time-out: a bare URL was fine.
    monkeypatch.setattr(redis, "__version__", "7.4.0")
    settings.CHANNEL_LAYERS = redis_layer("redis://127.0.0.1:6379/1")
    assert check_relay_channel_layer() == []


def test_the_documented_redis_layer_passes_w008(settings: Any) -> None:
    import re
    from pathlib import Path

    from gateway_realtime.checks import check_relay_channel_layer

    docs = (Path(__file__).resolve().parent.parent / "docs" / "relay.md").read_text()
    snippet = re.search(r"CHANNEL_LAYERS = (\{.*?\n   \})\n", docs, re.S)
    assert snippet is not None
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "channels"]
    settings.CHANNEL_LAYERS = eval(snippet.group(1))  # the docs' own dict literal
    assert check_relay_channel_layer() == []
