"""The relay's shared stores: the usage counter, the start rate and folded refusals."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import types

import pytest
from django.core.cache import caches
from django.db import OperationalError, connection
from django.test import RequestFactory, override_settings
from django.utils import timezone
from rest_framework.request import Request

from gateway_realtime.exceptions import LimitsUnavailable
from gateway_realtime.limits import get_policy, site_policy
from gateway_realtime.models import RelaySession, RelayUsage
from gateway_realtime.protocol import Kind
from gateway_realtime.relay import ledger
from gateway_realtime.throttling import ClientSecretRateThrottle, RateLimitExceeded


@pytest.fixture
def policy():
    return dataclasses.replace(
        site_policy(Kind.REALTIME), quota_period=3600, budget={"audio_seconds": 10, "tokens": 100}
    )


@pytest.mark.django_db
def test_add_usage_adds_and_returns_the_windows_total(user, policy):
    assert ledger.read_usage(user.pk, policy) == ledger.Usage(0.0, 0)
    assert ledger.add_usage(user.pk, policy, audio_seconds=1.5, tokens=3) == ledger.Usage(1.5, 3)
    assert ledger.add_usage(user.pk, policy, audio_seconds=2.0, tokens=0) == ledger.Usage(3.5, 3)
    assert ledger.read_usage(user.pk, policy) == ledger.Usage(3.5, 3)
    assert RelayUsage.objects.count() == 1


@pytest.mark.django_db
def test_over_budget_at_either_limit(policy):
    assert not ledger.over_budget(ledger.Usage(9.9, 99), policy)
    assert ledger.over_budget(ledger.Usage(10.0, 0), policy)
    assert ledger.over_budget(ledger.Usage(0.0, 100), policy)
    assert not ledger.over_budget(
        ledger.Usage(1e9, 10**9), dataclasses.replace(policy, budget=None)
    )


@pytest.mark.django_db
def test_an_unreachable_counter_is_limits_unavailable(user, policy, monkeypatch):
    def broken(*args, **kwargs):
        raise OperationalError("the database is gone (credential vck_secret_value)")

    monkeypatch.setattr(RelayUsage.objects, "using", broken)
    with pytest.raises(LimitsUnavailable) as raised:
        ledger.add_usage(user.pk, policy, audio_seconds=1.0, tokens=0)
    assert "OperationalError" in str(raised.value) and "vck_" not in str(raised.value)
    with pytest.raises(LimitsUnavailable):
        ledger.read_usage(user.pk, policy)


@pytest.mark.django_db
def test_starts_share_the_mints_burst_rate(user, policy, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    limited = dataclasses.replace(policy, rate="2/min")
    ledger.check_start_rate(user.pk, limited)
    ledger.check_start_rate(user.pk, limited)
    with pytest.raises(ledger.RateLimited) as raised:
        ledger.check_start_rate(user.pk, limited)
    assert 1 <= raised.value.retry_after <= 60
    ledger.check_start_rate(user.pk, dataclasses.replace(policy, rate=None))  # no rate: no limit


@pytest.mark.django_db
@pytest.mark.usefixtures("empty_cache", "limits_clock")
@override_settings(GATEWAY_REALTIME_RATE="3/min")
def test_a_start_and_a_mint_take_from_one_counter(user):
    # Two realtime mints through the endpoints' throttle, then relayed starts
    # of the same kind: the third request of the minute is the last allowed.
    policy = get_policy(user, Kind.REALTIME)
    throttle = ClientSecretRateThrottle()
    view = types.SimpleNamespace(get_kind=lambda: Kind.REALTIME)
    for _ in range(2):
        request = Request(RequestFactory().post("/"))
        request.user = user
        assert throttle.allow_request(request, view)
    ledger.check_start_rate(user.pk, policy)
    with pytest.raises(ledger.RateLimited) as raised:
        ledger.check_start_rate(user.pk, policy)
    assert raised.value.retry_after == 30  # limits_clock stands 30 s into a minute
    request = Request(RequestFactory().post("/"))
    request.user = user
    with pytest.raises(RateLimitExceeded):
        throttle.allow_request(request, view)


@pytest.mark.django_db
@pytest.mark.usefixtures("empty_cache", "limits_clock")
@override_settings(GATEWAY_REALTIME_RATE="3/min")
def test_an_unreachable_rate_cache_is_limits_unavailable(user, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("Connection refused (credential vck_secret_value)")

    monkeypatch.setattr(caches["default"], "incr", broken)
    with pytest.raises(LimitsUnavailable) as raised:
        ledger.check_start_rate(user.pk, get_policy(user, Kind.REALTIME))
    assert "ConnectionError" in str(raised.value) and "vck_" not in str(raised.value)


def refuse(user, now, reason="too many sessions", code=4429):
    return ledger.record_refusal(
        user,
        "realtime",
        "openai/gpt-realtime-2",
        code,
        reason,
        "limit",
        ip_address="127.0.0.1",
        user_agent="hostile/1.0",
        now=now,
    )


@pytest.mark.django_db
def test_refusals_of_a_minute_are_one_row(user):
    now = dt.datetime(2026, 12, 5, 10, 0, 7, tzinfo=dt.UTC)
    for second in range(200):
        ledger.record_refusal(
            user,
            "realtime",
            "openai/gpt-realtime-2",
            4429,
            "too many sessions",
            "limit",
            ip_address="127.0.0.1",
            user_agent="hostile/1.0",
            now=now + dt.timedelta(milliseconds=250 * second),
        )
    rows = list(RelaySession.objects.order_by("started_at"))
    # 200 refusals over 50 s of one minute: one row that counts them.
    assert [(row.attempts, row.close_code, row.closed_by) for row in rows] == [(200, 4429, "limit")]
    # Another minute, or another reason, is another row.
    later = now + dt.timedelta(minutes=1)
    for reason in ("too many sessions", "rate limited"):
        ledger.record_refusal(
            user,
            "realtime",
            "m",
            4429,
            reason,
            "limit",
            ip_address=None,
            user_agent="",
            now=later,
        )
    assert RelaySession.objects.count() == 3


@pytest.mark.django_db
def test_the_returned_row_counts_its_refusals(user):
    now = dt.datetime(2026, 12, 5, 10, 0, 0, tzinfo=dt.UTC)
    first = refuse(user, now)
    assert (first.attempts, first.ended_at, first.duration_ms) == (1, now, 0)
    assert first.started_at == now  # the caller's clock, not the database's
    second = refuse(user, now + dt.timedelta(seconds=59))
    assert second.pk == first.pk
    assert (second.attempts, second.ended_at) == (2, now + dt.timedelta(seconds=59))
    second.refresh_from_db()
    assert (second.attempts, second.ended_at) == (2, now + dt.timedelta(seconds=59))


@pytest.mark.django_db
def test_a_refusal_never_folds_into_a_started_sessions_row(user):
    now = timezone.now()
    fields = ledger.who_and_what(
        user, "realtime", "openai/gpt-realtime-2", ip_address=None, user_agent=""
    )
    live = RelaySession.objects.create(**fields)
    ended = RelaySession.objects.create(
        **fields,
        ended_at=now,
        duration_ms=1200,
        close_code=4429,
        close_reason="too many sessions",
        closed_by="limit",
    )
    refused = refuse(user, now)
    assert refused.pk not in (live.pk, ended.pk)
    assert list(RelaySession.objects.order_by("pk").values_list("attempts", flat=True)) == [1, 1, 1]


@pytest.mark.django_db
def test_a_long_reason_folds_as_it_is_stored(user):
    # The stored reason is cut to 123 bytes (a WebSocket close reason's
    # limit), and the lookup compares the cut reason, so long ones fold too.
    now = dt.datetime(2026, 12, 5, 10, 0, 0, tzinfo=dt.UTC)
    reason = "é" * 100
    for _ in range(3):
        row = refuse(user, now, reason=reason)
    assert row.attempts == 3
    assert len(row.close_reason.encode()) <= 123
    assert RelaySession.objects.count() == 1


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_concurrent_adds_lose_no_update(user, policy):
    # Eight writers start together on a window with no row yet, so the
    # create race (IntegrityError, then the update again) is run too.
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (run make test-services)")
    threads, errors, totals = [], [], []
    barrier = threading.Barrier(8)

    def add_many():
        try:
            barrier.wait()
            for _ in range(25):
                totals.append(ledger.add_usage(user.pk, policy, audio_seconds=0.5, tokens=1))
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    for _ in range(8):
        threads.append(threading.Thread(target=add_many))
        threads[-1].start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert ledger.read_usage(user.pk, policy) == ledger.Usage(100.0, 200)
    assert RelayUsage.objects.count() == 1
    # Each add read back the total its own update made (the row stays locked
    # until the read): every running total from 1 to 200 exactly once.
    assert sorted(total.tokens for total in totals) == list(range(1, 201))
    assert all(total.audio_seconds == total.tokens / 2 for total in totals)
