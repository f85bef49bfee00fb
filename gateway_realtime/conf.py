"""Settings, read from ``django.conf.settings`` on every access.

Nothing is cached or written back onto ``settings``, so ``override_settings``
works in tests and a changed setting needs no reload. Every name is prefixed
``GATEWAY_REALTIME_``; docs/settings.md lists each one with its default.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from gateway_realtime.protocol import Kind

PREFIX = "GATEWAY_REALTIME_"

DEFAULT_BASE_URL = "https://ai-gateway.vercel.sh/v4/ai"

#: Every setting with its default. The settings table in docs/settings.md is checked
#: against this mapping by the test suite.
DEFAULTS: dict[str, Any] = {
    "API_KEY": None,
    "BASE_URL": DEFAULT_BASE_URL,
    "TEAM": None,
    "TRUST_VERCEL_OIDC_HEADER": None,
    "CONNECT_TIMEOUT": 2.0,
    "READ_TIMEOUT": 3.0,
    "TOTAL_TIMEOUT": 3.0,
    "SLOW_CALL_FACTOR": 4.0,
    "SLOW_CALL_MIN": 0.5,
    "TAG_TIMEOUT": 2.0,
    "MAX_CONCURRENT_MINTS": None,
    "BULKHEAD_WAIT": None,
    "BREAKER_FAILURE_RATE": 0.5,
    "BREAKER_MIN_CALLS": 10,
    "BREAKER_WINDOW": 10,
    "BREAKER_COOLDOWN": 15,
    "BREAKER_CACHE": "default",
    "CONNECT_RETRIES": 2,
    "MAX_RESPONSE_BYTES": 65536,
    "POOL_MAXSIZE": 16,
    "EXTRA_HEADERS": {},
    "DEFAULT_MODELS": {},
    "ALLOWED_MODELS": {},
    "REALTIME_API": {},
    "DEFAULT_LIFETIME": None,
    "MAX_LIFETIME": 600,
    "TOOLS_FUNCTION": None,
    "CLIENT_CLASS": "gateway_realtime.client.GatewayClient",
    "AUDIT_DATABASE": "default",
    "MAX_REQUEST_BYTES": 16384,
    "RATE": None,
    "RATE_KEY_PREFIX": "gateway_realtime",
    "RATE_CACHE": "default",
    "QUOTA": None,
    "QUOTA_PERIOD": 86400,
    "POLICY": None,
    "AUDIT_RETENTION_DAYS": 90,
    "LEDGER_FLUSH_INTERVAL": 1.0,
    "METRICS": True,
    "ELEMENT_MAX_SECONDS": 300,
    "RELAY_MAX_SESSIONS": 2,
    "RELAY_MAX_SESSION_SECONDS": 900,
    "RELAY_BUDGET": None,
    "RELAY_QUEUE_FRAMES": 16,
    "RELAY_MAX_BEHIND_SECONDS": 10,
    "RELAY_METER_INTERVAL": 1.0,
    "RELAY_MAX_FRAME_BYTES": 1048576,
    "RELAY_CHANNEL_LAYER": "default",
}


def _get(name: str) -> Any:
    return getattr(settings, PREFIX + name, DEFAULTS[name])


class AppSettings:
    """Typed accessors for the ``GATEWAY_REALTIME_*`` settings."""

    @property
    def API_KEY(self) -> str | Callable[[], str] | None:
        return _get("API_KEY")  # type: ignore[no-any-return]

    @property
    def BASE_URL(self) -> str:
        # The official provider strips one trailing slash before anything else.
        value = str(_get("BASE_URL") or DEFAULT_BASE_URL)
        return value[:-1] if value.endswith("/") else value

    @property
    def TEAM(self) -> str | None:
        return _get("TEAM") or None

    @property
    def TRUST_VERCEL_OIDC_HEADER(self) -> bool:
        value = _get("TRUST_VERCEL_OIDC_HEADER")
        if value is None:
            # Vercel sets VERCEL=1 in its runtime; only there does its proxy
            # guarantee that x-vercel-oidc-token came from Vercel, not a client.
            return os.environ.get("VERCEL") == "1"
        return bool(value)

    @property
    def CONNECT_TIMEOUT(self) -> float:
        return float(_get("CONNECT_TIMEOUT"))

    @property
    def READ_TIMEOUT(self) -> float:
        return float(_get("READ_TIMEOUT"))

    @property
    def TOTAL_TIMEOUT(self) -> float:
        return float(_get("TOTAL_TIMEOUT"))

    @property
    def SLOW_CALL_FACTOR(self) -> float:
        return float(_get("SLOW_CALL_FACTOR"))

    @property
    def SLOW_CALL_MIN(self) -> float:
        return float(_get("SLOW_CALL_MIN"))

    @property
    def TAG_TIMEOUT(self) -> float:
        return float(_get("TAG_TIMEOUT"))

    @property
    def MAX_CONCURRENT_MINTS(self) -> int | None:
        value = _get("MAX_CONCURRENT_MINTS")
        return None if value is None else int(value)

    @property
    def BULKHEAD_WAIT(self) -> float | None:
        value = _get("BULKHEAD_WAIT")
        return None if value is None else float(value)

    @property
    def BREAKER_FAILURE_RATE(self) -> float:
        return float(_get("BREAKER_FAILURE_RATE"))

    @property
    def BREAKER_MIN_CALLS(self) -> int:
        return int(_get("BREAKER_MIN_CALLS"))

    @property
    def BREAKER_WINDOW(self) -> float:
        return float(_get("BREAKER_WINDOW"))

    @property
    def BREAKER_COOLDOWN(self) -> float:
        return float(_get("BREAKER_COOLDOWN"))

    @property
    def BREAKER_CACHE(self) -> str:
        return str(_get("BREAKER_CACHE"))

    @property
    def CONNECT_RETRIES(self) -> int:
        return int(_get("CONNECT_RETRIES"))

    @property
    def MAX_RESPONSE_BYTES(self) -> int:
        return int(_get("MAX_RESPONSE_BYTES"))

    @property
    def POOL_MAXSIZE(self) -> int:
        return int(_get("POOL_MAXSIZE"))

    @property
    def EXTRA_HEADERS(self) -> Mapping[str, str]:
        return _get("EXTRA_HEADERS") or {}

    @property
    def DEFAULT_MODELS(self) -> Mapping[str, str]:
        return _get("DEFAULT_MODELS") or {}

    @property
    def REALTIME_API(self) -> Mapping[str, str]:
        return _get("REALTIME_API") or {}

    @property
    def ALLOWED_MODELS(self) -> Mapping[str, Sequence[str]]:
        return _get("ALLOWED_MODELS") or {}

    @property
    def DEFAULT_LIFETIME(self) -> int | None:
        return _get("DEFAULT_LIFETIME")  # type: ignore[no-any-return]

    @property
    def MAX_LIFETIME(self) -> int:
        return int(_get("MAX_LIFETIME"))

    @property
    def TOOLS_FUNCTION(self) -> str | Callable[..., Any] | None:
        return _get("TOOLS_FUNCTION")  # type: ignore[no-any-return]

    @property
    def CLIENT_CLASS(self) -> str:
        return str(_get("CLIENT_CLASS"))

    @property
    def AUDIT_DATABASE(self) -> str:
        return str(_get("AUDIT_DATABASE"))

    @property
    def MAX_REQUEST_BYTES(self) -> int:
        return int(_get("MAX_REQUEST_BYTES"))

    @property
    def RATE(self) -> str | None:
        return _get("RATE") or None

    @property
    def RATE_KEY_PREFIX(self) -> str:
        return str(_get("RATE_KEY_PREFIX"))

    @property
    def RATE_CACHE(self) -> str:
        return str(_get("RATE_CACHE"))

    @property
    def QUOTA(self) -> int | None:
        value = _get("QUOTA")
        return None if value is None else int(value)

    @property
    def QUOTA_PERIOD(self) -> int:
        return int(_get("QUOTA_PERIOD"))

    @property
    def POLICY(self) -> str | Callable[..., Any] | None:
        return _get("POLICY")  # type: ignore[no-any-return]

    @property
    def AUDIT_RETENTION_DAYS(self) -> int:
        return int(_get("AUDIT_RETENTION_DAYS"))

    @property
    def LEDGER_FLUSH_INTERVAL(self) -> float:
        return float(_get("LEDGER_FLUSH_INTERVAL"))

    @property
    def METRICS(self) -> bool:
        return bool(_get("METRICS"))

    @property
    def ELEMENT_MAX_SECONDS(self) -> float:
        return float(_get("ELEMENT_MAX_SECONDS"))

    @property
    def RELAY_MAX_SESSIONS(self) -> int | None:
        value = _get("RELAY_MAX_SESSIONS")
        return None if value is None else int(value)

    @property
    def RELAY_MAX_SESSION_SECONDS(self) -> float:
        return float(_get("RELAY_MAX_SESSION_SECONDS"))

    @property
    def RELAY_BUDGET(self) -> Mapping[str, float] | None:
        return _get("RELAY_BUDGET")  # type: ignore[no-any-return]

    @property
    def RELAY_QUEUE_FRAMES(self) -> int:
        return int(_get("RELAY_QUEUE_FRAMES"))

    @property
    def RELAY_MAX_BEHIND_SECONDS(self) -> float:
        return float(_get("RELAY_MAX_BEHIND_SECONDS"))

    @property
    def RELAY_METER_INTERVAL(self) -> float:
        return float(_get("RELAY_METER_INTERVAL"))

    @property
    def RELAY_MAX_FRAME_BYTES(self) -> int:
        return int(_get("RELAY_MAX_FRAME_BYTES"))

    @property
    def RELAY_CHANNEL_LAYER(self) -> str:
        return str(_get("RELAY_CHANNEL_LAYER"))

    # Derived values -------------------------------------------------------

    def default_model(self, kind: Kind) -> str | None:
        return self.DEFAULT_MODELS.get(kind.value) or None

    def allowed_models(self, kind: Kind) -> list[str]:
        """Models a client may ask for: the kind's default plus its allow-list."""
        models = [m for m in [self.default_model(kind)] if m]
        for model in self.ALLOWED_MODELS.get(kind.value, ()):
            if model not in models:
                models.append(model)
        return models


def resolve_callable(value: str | Callable[..., Any]) -> Callable[..., Any]:
    """A callable setting given as the callable itself or as its dotted path.

    Raises ``ImportError`` when the path cannot be imported and ``TypeError``
    when what it names (or the value) is not callable.
    """
    func = import_string(value) if isinstance(value, str) else value
    if not callable(func):
        raise TypeError(f"{value!r} is not callable")
    return func


app_settings = AppSettings()
