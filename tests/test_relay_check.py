"""W007 and W008: the channel layer relayed sessions are revoked through.

W007: a site set up for Channels must have it. W008: a channels_redis layer's
Redis socket time-out must outlast its blocking read (tests/relay/test_channel_layer.py
shows, on a real Redis, that the check and redis-py agree)."""

from __future__ import annotations

import runpy
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer

from tests.relay.documented_layer import ROOT, documented_channel_layers


def test_w007_when_channels_is_installed_without_the_relays_layer(settings: Any) -> None:
    from gateway_realtime.checks import check_relay_channel_layer

    if "channels" not in settings.INSTALLED_APPS:
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


REDIS = "redis://127.0.0.1:6379/1"


def redis_layer(*hosts: Any, backend: str = "channels_redis.core.RedisChannelLayer") -> Any:
    return {"default": {"BACKEND": backend, "CONFIG": {"hosts": list(hosts)}}}


def w008(settings: Any, layers: Any) -> list[str]:
    from gateway_realtime.checks import check_relay_channel_layer

    if "channels" not in settings.INSTALLED_APPS:
        settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "channels"]
    settings.CHANNEL_LAYERS = layers
    return [m.id for m in check_relay_channel_layer()]


@pytest.mark.parametrize(
    "host",
    [
        REDIS,  # redis-py 8's default: 5 s, the blocking read's own length
        ("127.0.0.1", 6379),
        {"address": REDIS},
        {"host": "127.0.0.1", "port": 6379},
        {"address": REDIS, "socket_timeout": 5},
        {"address": REDIS, "socket_timeout": 5.5},  # no margin for the answer
        {"address": REDIS, "socket_timeout": "10"},  # redis-py wants a number
        f"{REDIS}?socket_timeout=3",
        # redis-py: the URL's query wins over the dict, its first value counts.
        {"address": f"{REDIS}?socket_timeout=3", "socket_timeout": 10},
        f"{REDIS}?socket_timeout=3&socket_timeout=10",
    ],
)
def test_w008_for_a_host_whose_read_times_out_with_the_blocking_read(
    settings: Any, host: Any
) -> None:
    assert w008(settings, redis_layer(host)) == ["gateway_realtime.W008"]


@pytest.mark.parametrize(
    "host",
    [
        {"address": REDIS, "socket_timeout": 10},
        {"address": REDIS, "socket_timeout": 6},
        {"address": REDIS, "socket_timeout": None},  # redis-py 7's default
        {"host": "127.0.0.1", "port": 6379, "socket_timeout": 10},
        f"{REDIS}?socket_timeout=10",
        {"address": f"{REDIS}?socket_timeout=10", "socket_timeout": 3},
    ],
)
def test_no_w008_for_a_host_whose_time_out_outlasts_the_blocking_read(
    settings: Any, host: Any
) -> None:
    assert w008(settings, redis_layer(host)) == []


def test_w008_for_each_host_and_for_channels_redis_default_host(settings: Any) -> None:
    fixed = {"address": REDIS, "socket_timeout": 10}
    assert w008(settings, redis_layer(REDIS, fixed, REDIS)) == ["gateway_realtime.W008"] * 2
    # No hosts: channels_redis connects to redis://localhost:6379 with redis-py's default.
    assert w008(settings, redis_layer()) == ["gateway_realtime.W008"]


def test_w008_reads_the_blocking_read_of_the_configured_layer_class(settings: Any) -> None:
    fixed = {"address": REDIS, "socket_timeout": 10}
    backend = f"{__name__}.SlowerBlockingRead"
    assert w008(settings, redis_layer(fixed, backend=backend)) == ["gateway_realtime.W008"]
    # Other layers have no blocking read to outlast (the pub/sub one polls).
    for backend in (
        "channels.layers.InMemoryChannelLayer",
        "channels_redis.pubsub.RedisPubSubChannelLayer",
    ):
        assert w008(settings, redis_layer(REDIS, backend=backend)) == [], backend


def test_no_w008_on_a_redis_py_without_a_default_socket_time_out(
    settings: Any, monkeypatch: Any
) -> None:
    import redis.asyncio

    class UnlimitedConnection:  # redis-py before 8
        socket_timeout = None

    monkeypatch.setattr(redis.asyncio, "Connection", UnlimitedConnection)
    assert w008(settings, redis_layer(REDIS)) == []
    assert w008(settings, redis_layer({"address": REDIS, "socket_timeout": 5})) == [
        "gateway_realtime.W008"
    ]


def test_w008_names_no_redis_url(settings: Any) -> None:
    from gateway_realtime.checks import check_relay_channel_layer

    w008(settings, redis_layer("redis://:hunter2-secret@127.0.0.1:6379/1"))
    (message,) = check_relay_channel_layer()
    assert "hunter2" not in f"{message.msg} {message.hint}"
    assert "host 0" in message.msg


def test_the_documented_redis_layer_passes_w008(settings: Any) -> None:
    assert w008(settings, documented_channel_layers()) == []


def test_the_example_projects_redis_layer_passes_w008(settings: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("RELAY_REDIS_URL", REDIS)
    example = runpy.run_path(str(ROOT / "example_project" / "settings.py"))
    backend = example["CHANNEL_LAYERS"]["default"]["BACKEND"]
    assert backend == "channels_redis.core.RedisChannelLayer"
    assert w008(settings, example["CHANNEL_LAYERS"]) == []


class SlowerBlockingRead(RedisChannelLayer):  # type: ignore[misc]
    brpop_timeout = 20
