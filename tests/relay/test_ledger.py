"""The relay's shared stores: the usage counter, the start rate and folded refusals."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import pytest
from django.db import OperationalError, connection

from gateway_realtime.exceptions import LimitsUnavailable
from gateway_realtime.limits import site_policy
from gateway_realtime.models import RelaySession, RelayUsage
from gateway_realtime.protocol import Kind
from gateway_realtime.relay import ledger


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


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_concurrent_adds_lose_no_update(user, policy):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (run make test-services)")
    threads, errors = [], []
    barrier = threading.Barrier(8)

    def add_many():
        try:
            barrier.wait()
            for _ in range(25):
                ledger.add_usage(user.pk, policy, audio_seconds=0.5, tokens=1)
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
