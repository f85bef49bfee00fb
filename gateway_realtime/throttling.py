"""The burst rate limit of the mint endpoints, on a cache every worker shares.

Counts requests per user in fixed windows aligned to the Unix epoch
(``"10/min"``: at most 10 in each clock minute) through Django's cache API:
``incr`` counts, ``add`` starts a window's counter when ``incr`` finds none. On a shared cache whose
``incr`` is atomic (Redis, Memcached) the limit holds across processes and
hosts. Local-memory caches are per process: fine for one worker, not for a
deployment.

It is a DRF throttle: the endpoints list it in ``throttle_classes``, and a
site can add it to its own views. Relay mode counts its session starts on
the same counters (``take_rate``, through ``relay.ledger.check_start_rate``).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from django.core.cache import caches
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from gateway_realtime.conf import app_settings
from gateway_realtime.exceptions import GatewayConfigurationError, LimitsUnavailable
from gateway_realtime.limits import get_policy, parse_rate
from gateway_realtime.protocol import Kind

logger = logging.getLogger("gateway_realtime")


def take_rate(user_id: Any, rate: str) -> int | None:
    """Count one request of ``user_id`` against ``rate``; ``None`` if allowed, else seconds to wait.

    The one counter behind every burst limit: the mint endpoints' throttle
    and relay mode's session starts (``gateway_realtime.relay.ledger``)
    count on it together, so one rate covers both ways of talking, as one
    quota does. The counter is keyed by user, the rate's period and the
    clock window, not by kind: a relayed ``realtime`` start and a
    ``realtime`` mint take from one counter, and so does any kind whose
    policy rate has the same period (each caller compares the shared count
    with its own rate's limit). Raises ``GatewayConfigurationError`` for a
    malformed rate and ``LimitsUnavailable`` when the cache cannot be
    reached (logged once here, naming no key).
    """
    try:
        limit, period = parse_rate(rate)
    except ValueError as error:
        raise GatewayConfigurationError(f"GATEWAY_REALTIME_RATE: {error}") from None
    now = time.time()
    window = math.floor(now / period)
    key = f"{app_settings.RATE_KEY_PREFIX}:rate:{user_id}:{period}:{window}"
    count = _increment(key, period)
    if count <= limit:
        return None
    return max(1, math.ceil((window + 1) * period - now))


def _increment(key: str, period: int) -> int:
    """Count one request in the window ``key`` names; the count so far."""
    try:
        cache = caches[app_settings.RATE_CACHE]
        # Counting first costs one call once the window has started, which is
        # every request but a window's first. incr() raises ValueError for a
        # missing key; add() then starts the window at 1, and when a
        # concurrent request started it first (add() is a no-op), that
        # request's counter is counted on. The key carries its window, so its
        # timeout only has to outlive the window.
        try:
            return int(cache.incr(key))
        except ValueError:
            if cache.add(key, 1, timeout=period + 1):
                return 1
            return int(cache.incr(key))
    except Exception as error:
        logger.error(
            "The rate limit cache is unreachable; refusing the request",
            extra={"gateway_realtime": {"outcome": "rejected", "error_type": "limits_unavailable"}},
        )
        raise LimitsUnavailable(
            f"The rate limit cache could not be reached ({type(error).__name__})."
        ) from None


class RateLimitExceeded(exceptions.Throttled):
    """429 with ``Retry-After`` and error type ``rate_limited``."""

    default_code = "rate_limited"


class ClientSecretRateThrottle(BaseThrottle):
    """Per-user burst rate from the user's ``Policy.rate`` (``GATEWAY_REALTIME_RATE``).

    Anonymous requests are left to the permission classes. The cache is
    ``GATEWAY_REALTIME_RATE_CACHE``, the key prefix
    ``GATEWAY_REALTIME_RATE_KEY_PREFIX``. A cache that cannot be reached fails
    closed with ``LimitsUnavailable`` (503).
    """

    def __init__(self) -> None:
        self._wait: float | None = None

    def get_kind(self, view: Any) -> Kind:
        get_kind = getattr(view, "get_kind", None)
        return get_kind() if callable(get_kind) else Kind.REALTIME

    def allow_request(self, request: Request, view: Any) -> bool:
        user = request.user
        if user is None or not user.is_authenticated:
            return True
        kind = self.get_kind(view)
        policy = get_policy(user, kind, request._request)
        if not policy.rate:
            return True
        wait = take_rate(user.pk, policy.rate)
        if wait is None:
            return True
        self._wait = wait
        logger.warning(
            "Rate limited a %s mint request",
            kind.value,
            extra={
                "gateway_realtime": {
                    "issuance_id": None,
                    "user_id": user.pk,
                    "kind": kind.value,
                    "outcome": "rejected",
                    "error_type": "rate_limited",
                    "retry_after": self._wait,
                }
            },
        )
        raise RateLimitExceeded(wait=self._wait)

    def wait(self) -> float | None:
        return self._wait
