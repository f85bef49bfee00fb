"""The daily usage ledger: written as mints and relayed sessions end, rebuilt from the audit rows.

The concurrency test runs real processes against PostgreSQL
(``GATEWAY_REALTIME_TEST_SERVICES=1``); everything else runs on SQLite too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from gateway_realtime import usage
from gateway_realtime.dashboard import COUNTERS
from gateway_realtime.exceptions import GatewayError, QuotaExceeded
from gateway_realtime.limits import get_policy
from gateway_realtime.models import (
    ClientSecretIssuance,
    CloseSide,
    DailyFailure,
    DailyUsage,
    Outcome,
    RelaySession,
    SiteDailyFailure,
    SiteDailyUsage,
)
from gateway_realtime.services import mint_client_secret

from .conftest import answer, failing_writes, gateway_error

REALTIME = reverse("gateway_realtime:realtime")
MODEL = "openai/gpt-realtime-2"
ROOT = Path(__file__).resolve().parent.parent


def today() -> dt.date:
    return timezone.now().astimezone(dt.UTC).date()


LEDGER = (DailyUsage, DailyFailure, SiteDailyUsage, SiteDailyFailure)


def ledger() -> set[tuple[Any, ...]]:
    """Every row of the ledger's four tables as comparable values (floats rounded)."""
    rows = set()
    for model in LEDGER:
        for row in model.objects.all():
            values: list[Any] = [model.__name__]
            for field in model._meta.concrete_fields:
                if field.name == "id":
                    continue
                value = getattr(row, field.attname)
                values.append(round(value, 6) if isinstance(value, float) else value)
            rows.add(tuple(values))
    return rows


def assert_site_rows_sum_the_users() -> None:
    """The site's rows are the per-user rows summed over users (every attempt had a user)."""
    users: dict[tuple[Any, ...], dict[str, float]] = {}
    for row in DailyUsage.objects.all():
        sums = users.setdefault((row.day, row.kind, row.model), {})
        for name in COUNTERS:
            sums[name] = sums.get(name, 0) + getattr(row, name)
    site = {
        (row.day, row.kind, row.model): {name: getattr(row, name) for name in COUNTERS}
        for row in SiteDailyUsage.objects.all()
    }
    assert site.keys() == users.keys()
    for key, sums in users.items():
        assert site[key] == pytest.approx(sums)
    failures: dict[tuple[Any, ...], int] = {}
    for row in DailyFailure.objects.all():
        key = (row.day, row.kind, row.model, row.outcome, row.error_type)
        failures[key] = failures.get(key, 0) + row.count
    assert failures == {
        (r.day, r.kind, r.model, r.outcome, r.error_type): r.count
        for r in SiteDailyFailure.objects.all()
    }


def usage_of(user: Any, kind: str = "realtime", model: str = MODEL) -> DailyUsage:
    return DailyUsage.objects.get(day=today(), user=user, kind=kind, model=model)


# Written as mints complete ------------------------------------------------------


@pytest.mark.django_db
def test_an_issued_mint_counts_in_its_users_day(same_origin, gateway, user):
    assert same_origin(REALTIME).status_code == 200
    assert same_origin(REALTIME).status_code == 200
    row = usage_of(user)
    assert (row.issued, row.failed, row.rejected) == (2, 0, 0)
    assert not DailyFailure.objects.exists()


@pytest.mark.django_db
def test_a_failed_mint_counts_with_its_error_type(same_origin, gateway_mock, user):
    answer(gateway_mock, gateway_error("internal_server_error"), status=500)
    assert same_origin(REALTIME).status_code >= 500
    row = usage_of(user)
    assert (row.issued, row.failed, row.rejected) == (0, 1, 0)
    issuance = ClientSecretIssuance.objects.get()
    [failure] = DailyFailure.objects.all()
    assert (failure.outcome, failure.error_type, failure.count) == (
        "failed",
        issuance.error_type,
        1,
    )


@pytest.mark.django_db
def test_a_rejected_mint_counts_with_its_error_type(same_origin, gateway, user, settings):
    settings.GATEWAY_REALTIME_QUOTA = 1
    assert same_origin(REALTIME).status_code == 200
    assert same_origin(REALTIME).status_code == 429
    row = usage_of(user)
    assert (row.issued, row.failed, row.rejected) == (1, 0, 1)
    [failure] = DailyFailure.objects.all()
    assert (failure.outcome, failure.error_type, failure.count) == ("rejected", "quota_exceeded", 1)


@pytest.mark.django_db
def test_kinds_and_models_are_counted_apart(gateway, user, settings):
    settings.GATEWAY_REALTIME_ALLOWED_MODELS = {"realtime": [MODEL, "openai/gpt-realtime-mini"]}
    mint_client_secret(user=user, kind="realtime")
    mint_client_secret(user=user, kind="realtime", model="openai/gpt-realtime-mini")
    mint_client_secret(user=user, kind="transcription")
    assert DailyUsage.objects.count() == 3
    assert sum(DailyUsage.objects.values_list("issued", flat=True)) == 3


@pytest.mark.django_db
def test_a_mint_without_a_user_counts_in_the_sites_rows_only(gateway):
    mint_client_secret(user=None, kind="realtime")
    assert ClientSecretIssuance.objects.get().outcome == Outcome.ISSUED
    assert not DailyUsage.objects.exists()
    site = SiteDailyUsage.objects.get(day=today(), kind="realtime", model=MODEL)
    assert (site.issued, site.failed) == (1, 0)
    # And so does the rebuild.
    usage.rebuild(today(), today())
    assert not DailyUsage.objects.exists()
    assert SiteDailyUsage.objects.get().issued == 1


@pytest.mark.django_db
def test_the_sites_rows_are_the_users_rows_summed(gateway_mock, user, other_user, settings):
    pytest.importorskip("channels")
    settings.GATEWAY_REALTIME_QUOTA = 2
    settings.GATEWAY_REALTIME_ALLOWED_MODELS = {"realtime": [MODEL, "openai/gpt-realtime-mini"]}
    answer(gateway_mock)
    answer(gateway_mock, gateway_error("internal_server_error"), status=500)
    answer(gateway_mock)
    answer(gateway_mock)
    answer(gateway_mock)
    for who, model in ((user, MODEL), (user, MODEL), (other_user, MODEL), (user, MODEL)):
        with contextlib.suppress(GatewayError):
            mint_client_secret(user=who, kind="realtime", model=model)
    mint_client_secret(user=other_user, kind="realtime", model="openai/gpt-realtime-mini")
    with pytest.raises(QuotaExceeded):
        mint_client_secret(user=user, kind="realtime")
    relayed_session(other_user, audio_in=3.2, audio_out=1.1, tokens=(70, 30))
    relayed_session(user, audio_in=1.0, audio_out=2.0, tokens=(5, 6))
    assert SiteDailyUsage.objects.count() == 2
    assert SiteDailyUsage.objects.get(model=MODEL).issued == 2 + 1
    assert_site_rows_sum_the_users()


@pytest.mark.django_db
def test_a_ledger_that_cannot_be_written_costs_the_mint_nothing(
    same_origin, gateway, user, captured_logs
):
    with connection.execute_wrapper(failing_writes("gateway_realtime_dailyusage")):
        response = same_origin(REALTIME)
    assert response.status_code == 200
    assert ClientSecretIssuance.objects.get().outcome == Outcome.ISSUED
    assert not DailyUsage.objects.exists()
    [warning] = [r for r in captured_logs.records if "usage ledger" in r.getMessage()]
    assert "gateway_realtime_ledger rebuild" in warning.getMessage()
    # The day is recounted from the audit row.
    usage.rebuild(today(), today())
    assert usage_of(user).issued == 1


@pytest.mark.django_db(transaction=True)
def test_a_failed_ledger_write_leaves_the_callers_transaction_usable(gateway, user):
    with transaction.atomic():
        with connection.execute_wrapper(failing_writes("gateway_realtime_dailyusage")):
            mint_client_secret(user=user, kind="realtime")
        # Still usable: the failed write was in a savepoint.
        assert ClientSecretIssuance.objects.count() == 1
    assert ClientSecretIssuance.objects.get().outcome == Outcome.ISSUED


# Rebuilt from the audit rows --------------------------------------------------------


def relay_policy(user: Any, **changes: Any) -> Any:
    return dataclasses.replace(get_policy(user, "realtime"), **changes)


def relayed_session(user: Any, *, audio_in: float, audio_out: float, tokens: tuple[int, int]):
    from gateway_realtime.relay import sessions

    session = sessions.start_session(user, "realtime", MODEL, relay_policy(user, quota=None))
    meter = session.meter
    meter.audio_seconds_in, meter.audio_seconds_out = audio_in, audio_out
    meter.input_tokens, meter.output_tokens = tokens
    sessions.end_session(session, 1000, "browser closed", CloseSide.BROWSER)
    return session.row


@pytest.mark.django_db
def test_a_relayed_session_adds_its_metered_usage(user):
    pytest.importorskip("channels")
    relayed_session(user, audio_in=1.5, audio_out=2.25, tokens=(100, 40))
    relayed_session(user, audio_in=0.5, audio_out=0.0, tokens=(10, 0))
    row = usage_of(user)
    assert row.relayed_sessions == 2
    assert (row.audio_seconds_in, row.audio_seconds_out) == (2.0, 2.25)
    assert (row.input_tokens, row.output_tokens) == (110, 40)
    durations = RelaySession.objects.values_list("duration_ms", flat=True)
    assert row.relayed_seconds == pytest.approx(sum(durations) / 1000)
    assert row.issued == 0


@pytest.mark.django_db
def test_a_refused_relayed_start_counts_each_attempt(user):
    pytest.importorskip("channels")
    from gateway_realtime.relay import sessions

    policy = relay_policy(user, quota=None, max_sessions=1)
    live = sessions.start_session(user, "realtime", MODEL, policy)
    for _ in range(3):
        with pytest.raises(sessions.Refused):
            sessions.start_session(user, "realtime", MODEL, policy)
    row = usage_of(user)
    assert row.relay_refused == 3 and row.relayed_sessions == 0
    [failure] = DailyFailure.objects.all()
    assert (failure.outcome, failure.error_type, failure.count) == (
        "relay_refused",
        "too_many_sessions",
        3,
    )
    # One folded audit row holds the three attempts.
    assert RelaySession.objects.filter(duration_ms=0).get().attempts == 3
    sessions.end_session(live, 1000, "browser closed", CloseSide.BROWSER)


@pytest.mark.django_db
def test_rebuild_gives_the_ledger_written_live_and_is_idempotent(
    gateway_mock, user, other_user, settings
):
    pytest.importorskip("channels")
    settings.GATEWAY_REALTIME_QUOTA = 2  # a failed mint gives its unit back
    answer(gateway_mock)
    answer(gateway_mock, gateway_error("internal_server_error"), status=500)
    answer(gateway_mock)
    answer(gateway_mock)
    for who in (user, user, user, other_user):
        with contextlib.suppress(GatewayError):
            mint_client_secret(user=who, kind="realtime")
    with pytest.raises(QuotaExceeded):
        mint_client_secret(user=user, kind="realtime")
    relayed_session(other_user, audio_in=3.2, audio_out=1.1, tokens=(70, 30))
    live = ledger()
    assert len(live) > 3

    usage.rebuild(today(), today())
    assert ledger() == live
    usage.rebuild(today(), today())
    assert ledger() == live

    for model in LEDGER:
        model.objects.all().delete()
    usage.rebuild(today(), today())
    assert ledger() == live
    assert_site_rows_sum_the_users()


@pytest.mark.django_db
def test_rebuild_touches_only_its_days(gateway, user):
    mint_client_secret(user=user, kind="realtime")
    yesterday = today() - dt.timedelta(days=1)
    ClientSecretIssuance.objects.update(
        created_at=dt.datetime.combine(yesterday, dt.time(23, 59, 59), tzinfo=dt.UTC)
    )
    mint_client_secret(user=user, kind="realtime")
    usage.rebuild(today(), today())
    # Today's row is recounted from today's audit row only; yesterday's
    # ledger (none was written: the row was moved there) is left alone.
    assert usage_of(user).issued == 1
    assert not DailyUsage.objects.filter(day=yesterday).exists()
    usage.rebuild(yesterday, yesterday)
    assert DailyUsage.objects.get(day=yesterday).issued == 1
    assert usage_of(user).issued == 1


@pytest.mark.django_db
def test_the_command_rebuilds_a_range(gateway, user):
    mint_client_secret(user=user, kind="realtime")
    DailyUsage.objects.all().delete()
    out = StringIO()
    day = today().isoformat()
    call_command("gateway_realtime_ledger", "rebuild", "--since", day, "--until", day, stdout=out)
    assert (
        f"Rebuilt the ledger from {day} to {day}: 1 usage rows, 0 failure rows." in out.getvalue()
    )
    assert usage_of(user).issued == 1
    call_command("gateway_realtime_ledger", "rebuild", stdout=StringIO())  # today by default
    assert usage_of(user).issued == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "is not a day"),
        (["--since", "2026-12-02", "--until", "2026-12-01"], "--until is before --since"),
        (["--since", "2000-01-01"], "are pruned"),
    ],
)
def test_the_command_refuses_a_bad_range(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("gateway_realtime_ledger", "rebuild", *args)
    assert not DailyUsage.objects.exists()


@pytest.mark.django_db
def test_the_command_rebuilds_a_pruned_range_with_force():
    call_command("gateway_realtime_ledger", "rebuild", "--since", "2000-01-01", "--until",
                 "2000-01-02", "--force", stdout=StringIO())  # fmt: skip
    assert not DailyUsage.objects.exists()


# No lost update with many processes (PostgreSQL) -----------------------------------

WRITER = """
import json, sys
import django
django.setup()
from gateway_realtime import usage
from gateway_realtime.models import DailyUsage
key = json.loads(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # every process starts together
for _ in range(int(sys.argv[2])):
    usage.add(key, {"issued": 1, "audio_seconds_in": 0.5})
print("done", flush=True)
"""


@pytest.mark.django_db(transaction=True)
def test_concurrent_processes_lose_no_increment(user):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (GATEWAY_REALTIME_TEST_SERVICES=1): SQLite in memory")
    processes, each = 4, 150
    name = connection.settings_dict["NAME"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "GATEWAY_REALTIME_TEST_SERVICES": "1",
        "TEST_DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{name}",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    key = json.dumps(
        {"day": today().isoformat(), "user_id": user.pk, "kind": "realtime", "model": MODEL}
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, key, str(each)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        for worker in workers:  # released together: the first increments all race to create the row
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "done"
            assert worker.wait(60) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.communicate()  # closes the pipes
    row = usage_of(user)
    assert row.issued == processes * each
    assert row.audio_seconds_in == pytest.approx(processes * each * 0.5)
    assert DailyUsage.objects.count() == 1
    # The site's row, which every writer updates (a hot row), lost nothing either.
    site = SiteDailyUsage.objects.get()
    assert (site.issued, site.audio_seconds_in) == (row.issued, row.audio_seconds_in)


# Gathered writes (the default interval) ----------------------------------------------


@pytest.fixture
def gathering(settings):
    """The ledger gathered per process for an interval too long to end in a test."""
    settings.GATEWAY_REALTIME_LEDGER_FLUSH_INTERVAL = 3600
    yield
    usage.flush()


@pytest.mark.django_db(transaction=True)
def test_gathered_mints_cost_the_mint_no_ledger_statement(gathering, gateway, user, settings):
    from django.test.utils import CaptureQueriesContext

    settings.GATEWAY_REALTIME_QUOTA = 10
    mint_client_secret(user=user, kind="realtime")
    with CaptureQueriesContext(connection) as queries:
        mint_client_secret(user=user, kind="realtime")
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    # The claim, the pending row, the completion: the ledger waits.
    assert [s for s in statements if s not in {"BEGIN", "COMMIT"}] == ["UPDATE", "INSERT", "UPDATE"]
    assert not DailyUsage.objects.exists()
    with CaptureQueriesContext(connection) as queries:
        usage.flush()
    # Both mints in one increment of the user's row and one of the site's
    # (each created: its update found none).
    writes = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    assert [s for s in writes if s in {"INSERT", "UPDATE"}] == ["UPDATE", "INSERT"] * 2
    assert usage_of(user).issued == 2


@pytest.mark.django_db
def test_gathered_increments_are_summed_per_row(gathering, gateway_mock, user, other_user):
    answer(gateway_mock)
    for who in (user, user, other_user):
        mint_client_secret(user=who, kind="realtime")
    answer(gateway_mock, gateway_error("internal_server_error"), status=500)
    with pytest.raises(GatewayError):
        mint_client_secret(user=user, kind="realtime")
    usage.flush()
    assert (usage_of(user).issued, usage_of(user).failed) == (2, 1)
    assert usage_of(other_user).issued == 1
    assert DailyFailure.objects.get().count == 1
    assert SiteDailyUsage.objects.get().issued == 3
    usage.flush()  # nothing left: nothing counted twice
    assert usage_of(user).issued == 2
    assert_site_rows_sum_the_users()


@pytest.mark.django_db
def test_a_gathered_write_that_fails_is_logged(gathering, gateway, user, captured_logs):
    mint_client_secret(user=user, kind="realtime")
    with connection.execute_wrapper(failing_writes("gateway_realtime_dailyusage")):
        usage.flush()
    assert not DailyUsage.objects.exists()
    assert any("usage ledger missed" in r.getMessage() for r in captured_logs.records)


@pytest.mark.django_db(transaction=True)
def test_the_process_writes_its_gathered_increments_after_the_interval(gateway, user, settings):
    if connection.vendor != "postgresql":
        pytest.skip("needs a server database (GATEWAY_REALTIME_TEST_SERVICES=1): SQLite in memory")
    from .relay.test_consumer import wait_for

    settings.GATEWAY_REALTIME_LEDGER_FLUSH_INTERVAL = 0.05
    mint_client_secret(user=user, kind="realtime")
    mint_client_secret(user=user, kind="realtime")
    # Written by the timer's thread, with no call from the test.
    wait_for(lambda: DailyUsage.objects.filter(user=user, issued=2).exists())


def test_the_flush_interval_is_checked(settings):
    from gateway_realtime import checks

    for bad in (-1, "1", True, None):
        settings.GATEWAY_REALTIME_LEDGER_FLUSH_INTERVAL = bad
        assert "gateway_realtime.E024" in [m.id for m in checks.check_settings(None)]
    for good in (0, 0.5, 2):
        settings.GATEWAY_REALTIME_LEDGER_FLUSH_INTERVAL = good
        assert "gateway_realtime.E024" not in [m.id for m in checks.check_settings(None)]


@pytest.mark.django_db
def test_a_deleted_users_counts_stay_in_the_sites_rows(gateway, user, other_user):
    mint_client_secret(user=user, kind="realtime")
    mint_client_secret(user=other_user, kind="realtime")
    user.delete()
    # The user's rows leave with the user; the site's keep the count, as the
    # audit trail keeps the row, so a rebuild gives the same.
    assert list(DailyUsage.objects.values_list("user", flat=True)) == [other_user.pk]
    assert SiteDailyUsage.objects.get().issued == 2
    live = ledger()
    usage.rebuild(today(), today())
    assert ledger() == live
