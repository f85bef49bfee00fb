"""The burst rate limit of the mint endpoints, on a cache every worker shares.

Counts requests per user in fixed windows aligned to the Unix epoch
(``"10/min"``: at most 10 in each clock minute) with an atomic increment:
on Django's ``RedisCache`` one round trip (``SET NX EX`` + ``INCR``), on any
other cache its ``incr`` (and ``add`` to start a window). So with a shared cache (Redis,
Memcached, the database cache) the limit holds across processes and hosts.
Local-memory caches are per process: fine for one worker, not for a
deployment.

It is a DRF throttle: the endpoints list it in ``throttle_classes``, and a
site can add it to its own views.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from gateway_realtime.conf import app_settings
from gateway_realtime.exceptions import GatewayConfigurationError, LimitsUnavailable
from gateway_realtime.limits import get_policy, parse_rate
from gateway_realtime.protocol import Kind

logger = logging.getLogger("gateway_realtime")


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
        try:
            limit, period = parse_rate(policy.rate)
        except ValueError as error:
            raise GatewayConfigurationError(f"GATEWAY_REALTIME_RATE: {error}") from None
        now = time.time()
        window = math.floor(now / period)
        key = f"{app_settings.RATE_KEY_PREFIX}:rate:{user.pk}:{period}:{window}"
        count = self._increment(key, period)
        self._wait = max(1, math.ceil((window + 1) * period - now))
        if count <= limit:
            return True
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

    def _increment(self, key: str, period: int) -> int:
        try:
            cache = caches[app_settings.RATE_CACHE]
            redis = _redis_client(cache)
            if redis is not None:
                # One round trip: create the key with its expiry if it is new
                # (atomically, so no key can outlive its window), then
                # increment. Django's incr() takes two (EXISTS, INCR) and
                # cannot create a key.
                redis_key = cache.make_and_validate_key(key)
                pipe = redis.pipeline(transaction=False)
                pipe.set(redis_key, 0, ex=period + 1, nx=True)
                pipe.incr(redis_key)
                return int(pipe.execute()[1])
            # Increment first: in a busy window the key exists, and this is the
            # only call. The key carries its window, so the timeout only has
            # to outlive it.
            try:
                return int(cache.incr(key))
            except ValueError:
                if cache.add(key, 1, timeout=period + 1):
                    return 1
                # Another worker created it between our incr and add.
                return int(cache.incr(key))
        except Exception as error:
            logger.error(
                "The rate limit cache is unreachable; refusing to mint",
                extra={
                    "gateway_realtime": {"outcome": "rejected", "error_type": "limits_unavailable"}
                },
            )
            raise LimitsUnavailable(
                f"The rate limit cache could not be reached ({type(error).__name__})."
            ) from None

    def wait(self) -> float | None:
        return self._wait


# One redis-py client per Django Redis cache client. Django builds a new
# redis.Redis (and its table of response callbacks) for every cache call,
# which costs more CPU than the round trip; the connection pool is Django's.
_redis_clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _redis_client(cache: Any) -> Any:
    """The redis-py client behind Django's ``RedisCache``, or ``None`` for other caches.

    Values written as integers are stored as plain Redis integers by Django's
    serializer, so ``cache.get()`` of a counter still works.
    """
    if not isinstance(cache, RedisCache):
        return None
    backend = cache._cache
    client = _redis_clients.get(backend)
    if client is None:
        get_pool = getattr(backend, "_get_connection_pool", None)
        factory = getattr(backend, "_client", None)
        if get_pool is None or factory is None:
            return None
        client = factory(connection_pool=get_pool(True))
        _redis_clients[backend] = client
    return client
