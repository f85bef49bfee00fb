"""``gateway_realtime.throttling``: the burst rate, per user, in fixed windows on the cache."""

import dataclasses
import types
from typing import ClassVar

import pytest
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.test import RequestFactory, override_settings
from django.urls import reverse
from rest_framework.exceptions import Throttled
from rest_framework.request import Request

from gateway_realtime.exceptions import LimitsUnavailable
from gateway_realtime.models import ClientSecretIssuance
from gateway_realtime.protocol import Kind
from gateway_realtime.throttling import ClientSecretRateThrottle, RateLimitExceeded
from tests.conftest import FROZEN_NOW, error_of, run_at_once

REALTIME = reverse("gateway_realtime:realtime")
SPEECH = reverse("gateway_realtime:speech")
pytestmark = pytest.mark.usefixtures("empty_cache", "limits_clock")


class BrokenCache(LocMemCache):
    """A cache whose every write fails, as a cache server that went away does."""

    def add(self, *args, **kwargs):
        raise ConnectionError("Connection refused")

    def incr(self, *args, **kwargs):
        raise ConnectionError("Connection refused")


def allow(user, kind="realtime"):
    """Ask the throttle about one request by ``user`` for ``kind``, as DRF does."""
    request = Request(RequestFactory().post("/"))
    request.user = user
    view = types.SimpleNamespace(get_kind=lambda: Kind(kind))
    return ClientSecretRateThrottle().allow_request(request, view)


def per_kind_rate(*, user, kind, request, policy):
    return dataclasses.replace(policy, rate="1/min" if kind == "realtime" else "2/h")


# --- counting ------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_RATE="3/min")
def test_counts_requests_in_fixed_clock_aligned_windows(user, limits_clock):
    for _ in range(3):
        assert allow(user)
    with pytest.raises(RateLimitExceeded) as caught:
        allow(user)
    assert caught.value.wait == 30  # until the minute ends, not a minute from now
    limits_clock.now = FROZEN_NOW + 29.5
    with pytest.raises(RateLimitExceeded) as caught:
        allow(user)
    assert caught.value.wait == 1
    limits_clock.now = FROZEN_NOW + 30  # the next minute: a fresh window
    for _ in range(3):
        assert allow(user)
    with pytest.raises(RateLimitExceeded):
        allow(user)


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_RATE="1/h")
def test_two_users_are_counted_apart(user, other_user):
    assert allow(user)
    with pytest.raises(RateLimitExceeded):
        allow(user)
    assert allow(other_user)


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_POLICY="tests.test_throttling.per_kind_rate")
def test_two_rates_of_one_user_are_counted_apart(user):
    # Each period has its own key: a used-up minute leaves the hour alone.
    assert allow(user, "realtime")
    with pytest.raises(RateLimitExceeded):
        allow(user, "realtime")
    assert allow(user, "speech")
    assert allow(user, "speech")
    with pytest.raises(RateLimitExceeded):
        allow(user, "speech")


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_RATE="20/min")
def test_concurrent_requests_never_pass_the_rate(user):
    # incr is atomic on the cache (locally: locmem; in the services run: Redis).
    allowed, refused = [], []

    def burst():
        for _ in range(5):
            try:
                allow(user)
                allowed.append(1)
            except RateLimitExceeded:
                refused.append(1)

    run_at_once(8, burst)
    assert (len(allowed), len(refused)) == (20, 20)


class CountingCache(LocMemCache):
    """A local cache that records the calls the counter makes."""

    calls: ClassVar[list[str]] = []

    def add(self, *args, **kwargs):
        self.calls.append("add")
        return super().add(*args, **kwargs)

    def incr(self, *args, **kwargs):
        self.calls.append("incr")
        return super().incr(*args, **kwargs)


class RacingCache(CountingCache):
    """A cache where another request starts each window between our incr and add."""

    def add(self, key, value, timeout=None, version=None):
        LocMemCache.add(self, key, 1, timeout, version)  # the other request's start
        return super().add(key, value, timeout, version)


COUNTING = {"default": {"BACKEND": "tests.test_throttling.CountingCache", "LOCATION": "counting"}}
RACING = {"default": {"BACKEND": "tests.test_throttling.RacingCache", "LOCATION": "racing"}}


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_RATE="3/min", CACHES=COUNTING)
def test_a_started_window_costs_one_counter_call(user):
    CountingCache.calls.clear()
    allow(user)
    assert CountingCache.calls == ["incr", "add"]  # the window's first request starts it
    CountingCache.calls.clear()
    allow(user)
    assert CountingCache.calls == ["incr"]


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_RATE="2/min", CACHES=RACING)
def test_a_window_started_by_a_concurrent_request_is_counted_on(user):
    RacingCache.calls.clear()
    assert allow(user)  # the other request's 1, then ours: 2
    assert RacingCache.calls == ["incr", "add", "incr"]
    with pytest.raises(RateLimitExceeded):
        allow(user)


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_RATE="3/min")
def test_the_counter_is_an_expiring_cache_entry(user):
    for _ in range(2):
        allow(user)
    if not isinstance(caches["default"], RedisCache):
        pytest.skip("needs Django's RedisCache (GATEWAY_REALTIME_TEST_SERVICES=1)")
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    keys = [key.decode() for key in client.scan_iter("*:rate:*")]
    assert len(keys) == 1
    # No counter outlives its window by more than a second.
    assert 0 < client.ttl(keys[0]) <= 61
    assert int(client.get(keys[0])) == 2


# --- refusing --------------------------------------------------------------------


def test_a_refusal_is_drf_throttled():
    # DRF's exception handler sets Retry-After from ``wait``.
    assert issubclass(RateLimitExceeded, Throttled)
    assert RateLimitExceeded(wait=7).wait == 7


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_RATE="2/min")
def test_rate_limit_429_before_anything_is_written_or_sent(same_origin, gateway, captured_logs):
    assert same_origin(REALTIME).status_code == 200
    assert same_origin(SPEECH).status_code == 200
    response = same_origin(REALTIME)
    assert response.status_code == 429
    assert error_of(response)["type"] == "rate_limited"
    assert response["Retry-After"] == "30"
    assert response["Cache-Control"] == "no-store, private"
    assert len(gateway.calls) == 2
    # Rate-limited requests are cheap on purpose: a log record, no audit row.
    assert ClientSecretIssuance.objects.count() == 2
    fields = [getattr(r, "gateway_realtime", None) for r in captured_logs.records]
    assert {"outcome": "rejected", "error_type": "rate_limited", "retry_after": 30}.items() <= next(
        f for f in fields if f and f.get("error_type") == "rate_limited"
    ).items()


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_RATE="1/h")
def test_rate_limit_is_per_user(same_origin, same_origin_as, gateway, other_user):
    assert same_origin(REALTIME).status_code == 200
    assert same_origin(REALTIME).status_code == 429
    assert same_origin_as(other_user)(REALTIME, {}).status_code == 200


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_RATE="1/min")
def test_anonymous_requests_are_refused_by_permissions_not_counted(same_origin_as, gateway):
    anonymous = same_origin_as(None)
    for _ in range(3):
        assert anonymous(REALTIME, {}).status_code in (401, 403)


# --- failing closed ----------------------------------------------------------------

DOWN_CACHES = {
    # A real Redis client pointed at a port nothing listens on.
    "redis": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:9/0",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    },
    "broken": {"BACKEND": "tests.test_throttling.BrokenCache"},
}


def rate_cache_down(down):
    """Settings whose rate cache is ``DOWN_CACHES[down]``; the default cache works."""
    return {
        "GATEWAY_REALTIME_RATE_CACHE": "down",
        "CACHES": {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "down": DOWN_CACHES[down],
        },
    }


@pytest.mark.django_db
@pytest.mark.parametrize("down", sorted(DOWN_CACHES))
def test_rate_cache_down_fails_closed(down, same_origin, gateway, captured_logs):
    with override_settings(GATEWAY_REALTIME_RATE="5/min", **rate_cache_down(down)):
        response = same_origin(REALTIME)
    assert response.status_code == 503
    assert error_of(response)["type"] == "limits_unavailable"
    assert len(gateway.calls) == 0
    assert ClientSecretIssuance.objects.count() == 0
    errors = [r for r in captured_logs.records if r.name == "gateway_realtime"]
    assert [r.levelname for r in errors] == ["ERROR"]
    assert errors[0].gateway_realtime["error_type"] == "limits_unavailable"


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_RATE="5/min", **rate_cache_down("broken"))
def test_the_throttle_itself_raises_limits_unavailable(user):
    with pytest.raises(LimitsUnavailable):
        allow(user)


@pytest.mark.django_db
@override_settings(GATEWAY_REALTIME_RATE=None, **rate_cache_down("broken"))
def test_without_a_rate_the_cache_is_not_asked(user):
    assert allow(user)
