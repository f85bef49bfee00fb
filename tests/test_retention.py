"""``manage.py gateway_realtime_prune``: audit retention in batches."""

import datetime as dt
import json
from io import StringIO

import pytest
import responses as responses_lib
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from gateway_realtime.models import ClientSecretIssuance, Outcome, QuotaCounter, RelaySession
from gateway_realtime.services import mint_client_secret
from tests.conftest import MINT_URL

pytestmark = pytest.mark.django_db


def make_rows(count, *, days_ago, user=None):
    rows = [
        ClientSecretIssuance.objects.create(
            user=user, kind="realtime", model="openai/gpt-realtime-2", outcome=Outcome.ISSUED
        )
        for _ in range(count)
    ]
    when = timezone.now() - dt.timedelta(days=days_ago)
    ClientSecretIssuance.objects.filter(pk__in=[r.pk for r in rows]).update(created_at=when)
    return rows


def prune(*args):
    out = StringIO()
    call_command("gateway_realtime_prune", *args, stdout=out)
    return out.getvalue()


def test_deletes_rows_older_than_the_setting_and_keeps_the_rest():
    old = make_rows(5, days_ago=91)
    recent = make_rows(3, days_ago=89)
    output = prune()
    assert "Deleted 5 audit rows" in output
    remaining = set(ClientSecretIssuance.objects.values_list("pk", flat=True))
    assert remaining == {r.pk for r in recent}
    assert not remaining & {r.pk for r in old}


@override_settings(GATEWAY_REALTIME_AUDIT_RETENTION_DAYS=7)
def test_the_setting_and_the_days_option():
    make_rows(2, days_ago=8)
    make_rows(2, days_ago=3)
    assert "Deleted 2 audit rows" in prune()
    assert "Deleted 2 audit rows" in prune("--days", "2")
    assert ClientSecretIssuance.objects.count() == 0


def test_dry_run_deletes_nothing():
    make_rows(4, days_ago=100)
    output = prune("--dry-run")
    assert "Would delete 4 audit rows" in output
    assert ClientSecretIssuance.objects.count() == 4


def test_batches_cover_primary_key_ranges_and_skip_gaps():
    rows = make_rows(25, days_ago=200)
    # A hole in the keys must not cost one empty batch per missing key.
    ClientSecretIssuance.objects.filter(pk__in=[r.pk for r in rows[5:20]]).delete()
    output = prune("--batch-size", "3")
    assert "Deleted 10 audit rows" in output
    assert "in 4 batches" in output
    assert ClientSecretIssuance.objects.count() == 0


def test_nothing_to_do():
    make_rows(1, days_ago=1)
    assert "Deleted 0 audit rows" in prune()
    assert "in 0 batches" in prune()


@pytest.mark.parametrize(
    "args",
    [
        ("--days", "0"),
        ("--days", "-3"),
        ("--days", "soon"),
        ("--batch-size", "0"),
        ("--batch-size", "x"),
        ("--unknown",),
    ],
)
def test_bad_arguments_are_command_errors(args):
    with pytest.raises(CommandError):
        prune(*args)


@override_settings(GATEWAY_REALTIME_AUDIT_RETENTION_DAYS=0)
def test_a_bad_setting_is_a_command_error():
    with pytest.raises(CommandError):
        prune()


def test_expired_quota_counters_go_current_ones_stay(user):
    now = timezone.now()
    QuotaCounter.objects.create(
        user=user,
        window_start=now - dt.timedelta(days=2),
        window_end=now - dt.timedelta(days=1),
        used=4,
    )
    current = QuotaCounter.objects.create(
        user=user,
        window_start=now - dt.timedelta(hours=1),
        window_end=now + dt.timedelta(hours=23),
        used=2,
    )
    assert "1 expired quota counters" in prune("--dry-run")
    assert "and 1 expired quota counters" in prune()
    assert list(QuotaCounter.objects.all()) == [current]


def test_a_mint_in_flight_while_pruning_completes(user, gateway_mock):
    make_rows(3, days_ago=400)

    def gateway_answer(request):
        # The prune runs between the pending row's insert and its completion.
        prune("--days", "1", "--batch-size", "1")
        return 200, {}, json.dumps({"token": "vcst_inflight0123456789", "expiresAt": 4102444800})

    gateway_mock.add_callback(responses_lib.POST, MINT_URL, callback=gateway_answer)
    secret = mint_client_secret(user=user, kind="realtime")
    assert len(gateway_mock.calls) == 1
    row = ClientSecretIssuance.objects.get()
    assert row.pk == secret.issuance.pk
    assert row.outcome == Outcome.ISSUED


def make_relayed(count, *, days_ago, ended=True, user=None):
    rows = [
        RelaySession.objects.create(user=user, kind="realtime", model="openai/gpt-realtime-2")
        for _ in range(count)
    ]
    when = timezone.now() - dt.timedelta(days=days_ago)
    RelaySession.objects.filter(pk__in=[r.pk for r in rows]).update(
        started_at=when,
        ended_at=when + dt.timedelta(minutes=5) if ended else None,
        duration_ms=300_000 if ended else None,
    )
    return rows


def test_old_ended_relayed_sessions_go_live_and_recent_ones_stay(user):
    old = make_relayed(4, days_ago=91, user=user)
    recent = make_relayed(2, days_ago=89, user=user)
    # Never ended and older than any session may last: its process died.
    abandoned = make_relayed(1, days_ago=400, ended=False, user=user)
    live_now = make_relayed(1, days_ago=0, ended=False, user=user)
    make_rows(1, days_ago=91)
    assert "Would delete 1 audit rows" in prune("--dry-run")
    assert "5 relayed sessions" in prune("--dry-run")
    assert RelaySession.objects.count() == 8
    output = prune()
    assert "Deleted 1 audit rows" in output
    assert "5 relayed sessions started before then (ended or abandoned) in 1 batches" in output
    remaining = set(RelaySession.objects.values_list("pk", flat=True))
    assert remaining == {r.pk for r in recent + live_now}
    assert not remaining & {r.pk for r in old + abandoned}


@override_settings(GATEWAY_REALTIME_AUDIT_RETENTION_DAYS=7)
def test_relayed_sessions_follow_the_setting_the_option_and_batches():
    rows = make_relayed(12, days_ago=8)
    make_relayed(3, days_ago=3)
    RelaySession.objects.filter(pk__in=[r.pk for r in rows[2:9]]).delete()
    output = prune("--batch-size", "2")
    assert "5 relayed sessions started before then (ended or abandoned) in 3 batches" in output
    output = prune("--days", "2")
    assert "3 relayed sessions" in output
    assert RelaySession.objects.count() == 0


@override_settings(GATEWAY_REALTIME_RELAY_MAX_SESSION_SECONDS=400 * 86400)
def test_a_live_session_is_never_pruned_an_abandoned_one_is(user):
    # A site whose sessions may last 400 days: one started 100 days ago may be live.
    [live] = make_relayed(1, days_ago=100, ended=False, user=user)
    make_relayed(1, days_ago=500, ended=False, user=user)  # abandoned
    assert "1 relayed sessions" in prune()
    assert set(RelaySession.objects.values_list("pk", flat=True)) == {live.pk}
    RelaySession.objects.filter(pk=live.pk).update(ended_at=timezone.now())
    assert "1 relayed sessions" in prune()
    assert not RelaySession.objects.exists()
