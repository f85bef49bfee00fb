"""``gateway_realtime.conf``: every setting read at use, with its default and its type.

The README's settings table against ``DEFAULTS``: tests/test_docs.py.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from django.test import override_settings

from gateway_realtime.conf import (
    DEFAULT_BASE_URL,
    DEFAULTS,
    PREFIX,
    AppSettings,
    app_settings,
    resolve_callable,
)
from gateway_realtime.protocol import Kind


def hook(**kwargs: Any) -> None:
    return None


NOT_CALLABLE = 42

#: The names AppSettings has a property for.
SETTINGS = [
    name for name, _ in inspect.getmembers(AppSettings, inspect.isdatadescriptor) if name.isupper()
]

# name -> (a value a site may set, what app_settings reads for it)
VALUES: dict[str, tuple[Any, Any]] = {
    "API_KEY": ("site-key", "site-key"),
    "BASE_URL": ("http://127.0.0.1:8765/v4/ai", "http://127.0.0.1:8765/v4/ai"),
    "TEAM": ("my-team", "my-team"),
    "TRUST_VERCEL_OIDC_HEADER": (1, True),
    "CONNECT_TIMEOUT": ("1.5", 1.5),
    "READ_TIMEOUT": (4, 4.0),
    "TOTAL_TIMEOUT": (20, 20.0),
    "TAG_TIMEOUT": ("0.5", 0.5),
    "SLOW_CALL_FACTOR": ("3", 3.0),
    "SLOW_CALL_MIN": ("0.25", 0.25),
    "MAX_CONCURRENT_MINTS": ("8", 8),
    "BULKHEAD_WAIT": ("0.5", 0.5),
    "BREAKER_FAILURE_RATE": ("0.25", 0.25),
    "BREAKER_MIN_CALLS": ("3", 3),
    "BREAKER_WINDOW": (60, 60.0),
    "BREAKER_COOLDOWN": ("2.5", 2.5),
    "BREAKER_CACHE": ("breaker", "breaker"),
    "CONNECT_RETRIES": ("0", 0),
    "MAX_RESPONSE_BYTES": (1024, 1024),
    "POOL_MAXSIZE": ("4", 4),
    "EXTRA_HEADERS": ({"x-a": "b"}, {"x-a": "b"}),
    "DEFAULT_MODELS": ({"speech": "a/b"}, {"speech": "a/b"}),
    "ALLOWED_MODELS": ({"speech": ["a/c"]}, {"speech": ["a/c"]}),
    "DEFAULT_LIFETIME": (60, 60),
    "MAX_LIFETIME": ("90", 90),
    "TOOLS_FUNCTION": ("tests.test_conf.hook", "tests.test_conf.hook"),
    "CLIENT_CLASS": ("tests.test_client.CustomClient", "tests.test_client.CustomClient"),
    "AUDIT_DATABASE": ("audit", "audit"),
    "MAX_REQUEST_BYTES": ("2048", 2048),
    "RATE": ("5/min", "5/min"),
    "RATE_KEY_PREFIX": ("site:gw", "site:gw"),
    "RATE_CACHE": ("limits", "limits"),
    "QUOTA": ("100", 100),
    "QUOTA_PERIOD": (3600, 3600),
    "POLICY": (hook, hook),
    "AUDIT_RETENTION_DAYS": ("30", 30),
    "LEDGER_FLUSH_INTERVAL": ("0.5", 0.5),
    "METRICS": (0, False),
    "ELEMENT_MAX_SECONDS": ("60", 60.0),
    "RELAY_MAX_SESSIONS": ("3", 3),
    "RELAY_MAX_SESSION_SECONDS": ("120", 120.0),
    "RELAY_BUDGET": ({"tokens": 1000}, {"tokens": 1000}),
    "REALTIME_API": ({"acme/continuous": "live"}, {"acme/continuous": "live"}),
    "RELAY_QUEUE_FRAMES": ("8", 8),
    "RELAY_MAX_BEHIND_SECONDS": ("2.5", 2.5),
    "RELAY_METER_INTERVAL": ("0.5", 0.5),
    "RELAY_MAX_FRAME_BYTES": ("4096", 4096),
    "RELAY_CHANNEL_LAYER": ("relay", "relay"),
}

# name -> what app_settings reads when the setting is absent, where that is
# not DEFAULTS[name] itself.
READ_DEFAULTS: dict[str, Any] = {"TRUST_VERCEL_OIDC_HEADER": False}


def test_every_setting_has_a_default_and_an_accessor() -> None:
    assert set(SETTINGS) == set(DEFAULTS) == set(VALUES)


@pytest.mark.parametrize("name", SETTINGS)
def test_each_setting_is_read_at_use(settings: Any, name: str) -> None:
    value, read = VALUES[name]
    setattr(settings, PREFIX + name, value)
    assert getattr(app_settings, name) == read
    with override_settings(**{PREFIX + name: DEFAULTS[name]}):
        assert getattr(app_settings, name) == READ_DEFAULTS.get(name, DEFAULTS[name])
    assert getattr(app_settings, name) == read


@pytest.mark.parametrize("name", SETTINGS)
def test_each_setting_falls_back_to_its_default(settings: Any, name: str) -> None:
    if hasattr(settings, PREFIX + name):
        delattr(settings, PREFIX + name)
    assert getattr(app_settings, name) == READ_DEFAULTS.get(name, DEFAULTS[name])


def test_nothing_is_written_onto_django_settings(settings: Any) -> None:
    for name in SETTINGS:
        if hasattr(settings, PREFIX + name):
            delattr(settings, PREFIX + name)
    for name in SETTINGS:
        getattr(app_settings, name)
    from django.conf import settings as live

    assert not [name for name in dir(live) if name.startswith(PREFIX)]


@pytest.mark.parametrize(
    ("value", "read"),
    [
        ("https://gateway.test/v4/ai", "https://gateway.test/v4/ai"),
        # The official provider strips one trailing slash, and only one.
        ("https://gateway.test/v4/ai/", "https://gateway.test/v4/ai"),
        ("https://gateway.test/v4/ai//", "https://gateway.test/v4/ai/"),
        ("", DEFAULT_BASE_URL),
        (None, DEFAULT_BASE_URL),
    ],
)
def test_base_url(settings: Any, value: str | None, read: str) -> None:
    settings.GATEWAY_REALTIME_BASE_URL = value
    assert read == app_settings.BASE_URL


@pytest.mark.parametrize(
    ("name", "empty"),
    [
        ("TEAM", ""),
        ("RATE", ""),
        ("EXTRA_HEADERS", None),
        ("DEFAULT_MODELS", None),
        ("ALLOWED_MODELS", None),
    ],
)
def test_empty_values_read_as_unset(settings: Any, name: str, empty: Any) -> None:
    setattr(settings, PREFIX + name, empty)
    assert getattr(app_settings, name) == DEFAULTS[name]


# Models a client may ask for ------------------------------------------------------


@pytest.mark.parametrize(
    ("defaults", "allowed", "expected"),
    [
        pytest.param({"realtime": "a/default"}, {}, ["a/default"], id="default-only"),
        pytest.param(
            {"realtime": "a/default"},
            {"realtime": ["c/third", "b/second"]},
            ["a/default", "c/third", "b/second"],
            id="default-first-then-the-list-in-order",
        ),
        pytest.param(
            {"realtime": "a/default"},
            {"realtime": ["b/x", "a/default", "b/x"]},
            ["a/default", "b/x"],
            id="each-once",
        ),
        pytest.param({}, {"realtime": ["b/x"]}, ["b/x"], id="no-default"),
        pytest.param({"realtime": ""}, {"realtime": ("b/x",)}, ["b/x"], id="empty-default"),
        pytest.param({"speech": "a/b"}, {"speech": ["c/d"]}, [], id="other-kinds-only"),
    ],
)
def test_allowed_models(
    settings: Any, defaults: dict[str, str], allowed: dict[str, Any], expected: list[str]
) -> None:
    settings.GATEWAY_REALTIME_DEFAULT_MODELS = defaults
    settings.GATEWAY_REALTIME_ALLOWED_MODELS = allowed
    assert app_settings.allowed_models(Kind.REALTIME) == expected
    assert app_settings.default_model(Kind.REALTIME) == (defaults.get("realtime") or None)


# Callable settings ------------------------------------------------------------------


def test_resolve_callable_takes_the_callable_or_its_dotted_path() -> None:
    assert resolve_callable(hook) is hook
    assert resolve_callable("tests.test_conf.hook") is hook


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("tests.nowhere.hook", ImportError),
        ("not a path", ImportError),
        ("tests.test_conf.NOT_CALLABLE", TypeError),
        (NOT_CALLABLE, TypeError),
    ],
)
def test_resolve_callable_refuses(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        resolve_callable(value)
