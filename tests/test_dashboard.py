"""``gateway_realtime.dashboard``: the staff dashboard in the admin, its user page and CSV export.

The ledger is built by real mints through the fake Gateway (``gateway``,
``same_origin``) and by the ledger's own writers (``usage.increment``,
``usage.record_relay_session``) for what the relay meters.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from gateway_realtime import charts, usage
from gateway_realtime.dashboard import (
    CSV_HEADER,
    PeriodForm,
    content_security_policy,
    neutralise,
)
from gateway_realtime.models import DailyFailure, DailyUsage, Dashboard, RelaySession
from gateway_realtime.relay import revocation

from .conftest import answer, gateway_error
from .relay.groups import first_message, in_memory_layer, join

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/gateway_realtime/dashboard/"
EXPORT = DASHBOARD + "export.csv"
REALTIME = reverse("gateway_realtime:realtime")
MODEL = "openai/gpt-realtime-2"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def today() -> dt.date:
    return timezone.now().astimezone(dt.UTC).date()


def user_page(user: Any) -> str:
    return f"{DASHBOARD}user/{user.pk}/"


def end_url(user: Any) -> str:
    return f"{DASHBOARD}user/{user.pk}/end/"


@pytest.fixture
def staff(django_user_model: Any) -> Any:
    """``staff("name", "app.codename", ...)``: a client logged in as staff with those perms."""

    def make(name: str, *perms: str) -> Client:
        member = django_user_model.objects.create_user(
            username=name, password="pw-" + name, is_staff=True
        )
        for perm in perms:
            app_label, codename = perm.split(".")
            member.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        client = Client()
        client.force_login(member)
        return client

    return make


@pytest.fixture
def viewer(staff: Any) -> Client:
    return staff("viewer", "gateway_realtime.view_dashboard")


@pytest.fixture
def manager(staff: Any) -> Client:
    return staff("manager", "gateway_realtime.view_dashboard", "auth.change_user")


def bars_of(html: str, chart_id: str) -> int:
    """How many bars the chart ``chart_id`` drew."""
    match = re.search(rf'<svg[^>]* id="{chart_id}".*?</svg>', html, re.S)
    assert match, chart_id
    return match.group(0).count('<g class="gwrt-bar">')


def relayed(
    user: Any, *, seconds: float, audio: tuple[float, float], tokens: tuple[int, int]
) -> None:
    """A relayed session of ``user`` that ended today, counted in the ledger as the relay does."""
    row = RelaySession.objects.create(
        user=user, username=user.username, kind="realtime", model=MODEL
    )
    row.ended_at = row.started_at + dt.timedelta(seconds=seconds)
    row.duration_ms = int(seconds * 1000)
    row.audio_seconds_in, row.audio_seconds_out = audio
    row.input_tokens, row.output_tokens = tokens
    row.save()
    usage.record_relay_session(row)


@pytest.fixture
def ledger(
    same_origin: Any,
    same_origin_as: Any,
    gateway_mock: Any,
    user: Any,
    other_user: Any,
    settings: Any,
) -> dict[str, Any]:
    """Today: alice 4 issued, 1 failed, 1 rejected (quota 4); bob 1 issued, 10 minutes relayed."""
    settings.GATEWAY_REALTIME_QUOTA = 4
    for _ in range(3):
        answer(gateway_mock)
    answer(gateway_mock, gateway_error("internal_server_error"), status=500)
    answer(gateway_mock)
    for expected in (200, 200, 200):
        assert same_origin(REALTIME).status_code == expected
    assert same_origin(REALTIME).status_code >= 500
    # The failed mint's claim was given back (a 5xx is certainly not issued): a fourth, then none.
    assert same_origin_as(other_user)(REALTIME).status_code == 200
    assert same_origin(REALTIME).status_code == 200
    assert same_origin(REALTIME).status_code == 429
    relayed(other_user, seconds=600, audio=(240.0, 300.0), tokens=(1000, 4000))
    return {"alice": user, "bob": other_user}


# Who may see it -------------------------------------------------------------------


def test_anonymous_is_sent_to_the_admin_login(client: Client) -> None:
    for url in (DASHBOARD, EXPORT, f"{DASHBOARD}user/1/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=")


def test_a_user_who_is_not_staff_is_sent_to_log_in(django_user_model: Any) -> None:
    member = django_user_model.objects.create_user(username="carol", password="pw")
    member.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client = Client()
    client.force_login(member)
    assert client.get(DASHBOARD).status_code == 302


def test_staff_without_the_view_permission_are_refused(staff: Any, user: Any) -> None:
    client = staff("clerk")
    for url in (DASHBOARD, EXPORT, user_page(user)):
        assert client.get(url).status_code == 403
    assert client.post(end_url(user)).status_code == 403
    assert b"Usage dashboard" not in client.get("/admin/").content


def test_staff_with_the_view_permission_see_it_in_the_app_index(viewer: Client) -> None:
    response = viewer.get(DASHBOARD)
    assert response.status_code == 200
    index = viewer.get("/admin/gateway_realtime/").content.decode()
    assert f'href="{DASHBOARD}"' in index
    assert "Usage dashboard" in index
    # Nothing else of the app: the permission is the dashboard's alone.
    assert "Client secret issuances" not in index


def test_superusers_see_it(admin_client: Client) -> None:
    assert admin_client.get(DASHBOARD).status_code == 200


def test_the_proxy_has_only_a_view_permission() -> None:
    codenames = set(
        Permission.objects.filter(content_type__model="dashboard").values_list(
            "codename", flat=True
        )
    )
    assert codenames == {"view_dashboard"}
    assert Dashboard._meta.proxy


@pytest.mark.parametrize("path", ["1/change/", "1/", "add/", "1/delete/", "1/history/"])
def test_there_is_no_add_change_or_delete(admin_client: Client, path: str) -> None:
    assert admin_client.get(DASHBOARD + path).status_code == 404


# The period -------------------------------------------------------------------------


def test_the_default_period_is_the_last_30_utc_days(viewer: Client) -> None:
    response = viewer.get(DASHBOARD)
    assert response.context["until"] == today()
    assert response.context["since"] == today() - dt.timedelta(days=29)
    assert bars_of(response.content.decode(), "site-mints") == 30


def test_a_chosen_period_draws_a_bar_per_day(viewer: Client) -> None:
    response = viewer.get(DASHBOARD, {"since": "2026-02-20", "until": "2026-03-05"})
    assert response.status_code == 200
    html = response.content.decode()
    # 2026 is not a leap year: 9 days of February, 5 of March.
    for chart in ("site-mints", "site-minutes", "site-tokens"):
        assert bars_of(html, chart) == 14


def test_one_end_of_the_period_is_enough(viewer: Client) -> None:
    response = viewer.get(DASHBOARD, {"since": "2026-03-01"})
    assert (response.context["since"], response.context["until"]) == (
        dt.date(2026, 3, 1),
        today(),
    )
    response = viewer.get(DASHBOARD, {"until": "2026-03-10"})
    assert response.context["since"] == dt.date(2026, 2, 9)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "2026-03-02", "until": "2026-03-01"}, "The period ends before it starts."),
        ({"since": "2025-01-01", "until": "2026-01-02"}, "at most 366 days"),
        ({"since": "2026-13-01"}, "Enter a valid date."),
        ({"until": "yesterday"}, "Enter a valid date."),
        ({"until": "0001-01-01"}, "Choose a day from 2000-01-01"),
        ({"since": "9999-12-31"}, "Choose a day from 2000-01-01"),
        ({"since": "2026-01-01\x00"}, "Enter a valid date."),
    ],
)
def test_a_bad_period_is_a_400_with_the_form_errors(
    viewer: Client, user: Any, params: dict[str, str], message: str
) -> None:
    for url in (DASHBOARD, user_page(user)):
        response = viewer.get(url, params)
        assert response.status_code == 400
        assert message in response.content.decode()
        assert response["Content-Security-Policy"] == CSP
        assert "days" not in response.context
    response = viewer.get(EXPORT, params)
    assert response.status_code == 400
    assert message in response.content.decode()


def test_the_longest_period_is_a_year_and_a_day(viewer: Client) -> None:
    response = viewer.get(DASHBOARD, {"since": "2024-01-01", "until": "2024-12-31"})
    assert response.status_code == 200  # 366 days
    assert bars_of(response.content.decode(), "site-mints") == PeriodForm.MAX_DAYS


# What it shows -----------------------------------------------------------------------


def test_totals_charts_and_failures_from_real_mints(viewer: Client, ledger: dict[str, Any]) -> None:
    response = viewer.get(DASHBOARD)
    assert response.status_code == 200
    totals = response.context["totals"].counts
    assert (totals["issued"], totals["failed"], totals["rejected"]) == (5, 1, 1)
    assert totals["relayed_sessions"] == 1
    assert totals["relayed_seconds"] == pytest.approx(600)
    assert (totals["input_tokens"], totals["output_tokens"]) == (1000, 4000)
    [day] = [d for d in response.context["days"] if d.day == today()]
    assert (day.counts["issued"], day.counts["failed"], day.counts["rejected"]) == (5, 1, 1)
    assert day.relayed_minutes == pytest.approx(10)
    assert sum(d.counts["issued"] for d in response.context["days"]) == 5
    assert [(f.outcome, f.error_type, f.count) for f in response.context["failures"]] == [
        ("failed", DailyFailure.objects.get(outcome="failed").error_type, 1),
        ("rejected", "quota_exceeded", 1),
    ]
    html = response.content.decode()
    assert bars_of(html, "site-failures") == 2
    # Today's bar: its tooltip and a segment per outcome that happened.
    assert f"<title>{today().isoformat()}: issued 5, failed 1, rejected 1</title>" in html
    assert f"<title>{today().isoformat()}: relayed minutes 10.0</title>" in html
    assert 'data-figure="issued">5<' in html
    assert 'data-figure="relayed_minutes">10.0<' in html


def test_top_users_rank_by_metered_audio_then_tokens_then_secrets(
    viewer: Client, ledger: dict[str, Any], django_user_model: Any
) -> None:
    carol = django_user_model.objects.create_user(username="carol")
    key = {"day": today(), "user_id": carol.pk, "kind": "speech", "model": "elevenlabs/eleven-v3"}
    usage.add(key, {"issued": 50, "input_tokens": 9})
    spenders = viewer.get(DASHBOARD).context["spenders"]
    # bob: 9 audio minutes; carol: no audio, 9 tokens; alice: no audio, no tokens, 4 secrets.
    assert [spender.username for spender, _ in spenders] == ["bob", "carol", "alice"]
    bob, url = spenders[0]
    assert bob.audio_minutes == pytest.approx(9)
    assert bob.tokens == 5000
    assert url == user_page(ledger["bob"])
    html = viewer.get(DASHBOARD).content.decode()
    since = today() - dt.timedelta(days=29)
    assert f'href="{user_page(ledger["alice"])}?since={since}&amp;until={today()}">alice<' in html


def test_rows_outside_the_period_are_not_counted(viewer: Client, user: Any) -> None:
    for day, issued in (
        (dt.date(2026, 3, 1), 1),
        (dt.date(2026, 3, 2), 2),
        (dt.date(2026, 3, 3), 4),
    ):
        key = {"day": day, "user_id": user.pk, "kind": "realtime", "model": MODEL}
        usage.add(key, {"issued": issued})
    response = viewer.get(DASHBOARD, {"since": "2026-03-02", "until": "2026-03-02"})
    assert response.context["totals"].counts["issued"] == 2
    assert [day.counts["issued"] for day in response.context["days"]] == [2]


def test_the_queries_do_not_grow_with_mints_or_users(
    viewer: Client, django_user_model: Any
) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert viewer.get(DASHBOARD).status_code == 200
        return len(captured)

    few = queries()
    for n in range(12):
        member = django_user_model.objects.create_user(username=f"user{n}")
        for day in range(5):
            key = {
                "day": today() - dt.timedelta(days=day),
                "user_id": member.pk,
                "kind": "realtime",
                "model": MODEL,
            }
            failure = {"outcome": "failed", "error_type": "gateway_timeout"}
            usage.add(key, {"issued": 3, "failed": 1}, failure)
    assert queries() == few + 1  # the top users' names, in one query


def test_the_sites_charts_read_the_sites_rows_and_only_the_top_users_the_users(
    viewer: Client, ledger: dict[str, Any]
) -> None:
    with CaptureQueriesContext(connection) as captured:
        assert viewer.get(DASHBOARD).status_code == 200
    per_user = [
        q["sql"]
        for q in captured.captured_queries
        if '"gateway_realtime_dailyusage"' in q["sql"] or "_dailyfailure" in q["sql"]
    ]
    site = [q["sql"] for q in captured.captured_queries if "gateway_realtime_sitedaily" in q["sql"]]
    # Per day, the period's totals, the failures by type, and the period's
    # attempts (which decide how the top users are ranked): a few rows a day.
    assert len(site) == 4
    # The top users, grouped by user: the one query that reads the users' rows.
    [top] = per_user
    assert top.startswith('SELECT "gateway_realtime_dailyusage"."user_id"') and "GROUP BY" in top


def test_a_mint_without_a_user_is_in_the_sites_charts(
    viewer: Client, gateway: Any, django_user_model: Any
) -> None:
    from gateway_realtime.services import mint_client_secret

    mint_client_secret(user=None, kind="realtime")
    response = viewer.get(DASHBOARD)
    assert response.context["totals"].counts["issued"] == 1
    assert response.context["spenders"] == []


def test_the_page_reads_no_audit_rows(viewer: Client, ledger: dict[str, Any]) -> None:
    with CaptureQueriesContext(connection) as captured:
        viewer.get(DASHBOARD)
    tables = " ".join(q["sql"] for q in captured.captured_queries)
    assert "gateway_realtime_clientsecretissuance" not in tables
    # The relayed sessions' table only for the live count (rows with no end).
    relay = [
        q["sql"] for q in captured.captured_queries if "gateway_realtime_relaysession" in q["sql"]
    ]
    assert len(relay) == 1
    assert '"ended_at" IS NULL' in relay[0]


def test_the_breaker_state_now(
    viewer: Client, same_origin: Any, gateway_mock: Any, settings: Any
) -> None:
    assert 'data-figure="breaker">closed<' in viewer.get(DASHBOARD).content.decode()
    settings.GATEWAY_REALTIME_BREAKER_MIN_CALLS = 1
    answer(gateway_mock, gateway_error("internal_server_error"), status=500)
    assert same_origin(REALTIME).status_code >= 500
    response = viewer.get(DASHBOARD)
    assert response.context["breaker"].state == "open"
    html = response.content.decode()
    assert 'data-figure="breaker">open<' in html
    assert "s left of the cool-down" in html


def test_a_breaker_cache_that_cannot_be_read_shows_unknown(
    viewer: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise ConnectionError("cache down")

    monkeypatch.setattr("gateway_realtime.dashboard.circuit_state", broken)
    response = viewer.get(DASHBOARD)
    assert response.status_code == 200
    assert 'data-figure="breaker">unknown<' in response.content.decode()


def test_markup_from_the_ledger_is_escaped(viewer: Client, user: Any) -> None:
    key = {"day": today(), "user_id": user.pk, "kind": "realtime", "model": MODEL}
    failure = {"outcome": "failed", "error_type": "<script>alert(1)</script>"}
    for _ in range(2):
        usage.add(key, {"failed": 1}, failure)
    html = viewer.get(DASHBOARD).content.decode()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# The strict CSP ------------------------------------------------------------------


def test_every_page_carries_the_strict_csp_and_no_inline_script_or_style(
    viewer: Client, ledger: dict[str, Any]
) -> None:
    for url in (DASHBOARD, user_page(ledger["alice"])):
        response = viewer.get(url)
        assert response.status_code == 200
        assert response["Content-Security-Policy"] == CSP
        html = response.content.decode()
        assert " style=" not in html
        assert "<style" not in html
        for tag in re.findall(r"<script[^>]*>", html):
            assert " src=" in tag, tag  # no inline script: every one is a file
        assert "gateway_realtime/dashboard.css" in html
    assert viewer.get(EXPORT)["Content-Security-Policy"] == CSP


def test_a_static_url_on_another_origin_is_allowed(settings: Any) -> None:
    settings.STATIC_URL = "https://cdn.example.com/static/"
    policy = content_security_policy()
    assert "script-src 'self' https://cdn.example.com;" in policy
    assert "style-src 'self' https://cdn.example.com;" in policy
    assert "object-src 'none'" in policy


# A user's page -------------------------------------------------------------------------


def live_row(user: Any, *, minutes_ago: float = 1) -> RelaySession:
    row = RelaySession.objects.create(
        user=user, username=user.username, kind="realtime", model=MODEL, ip_address="192.0.2.7"
    )
    started = timezone.now() - dt.timedelta(minutes=minutes_ago)
    RelaySession.objects.filter(pk=row.pk).update(started_at=started)
    return row


def test_a_users_page(viewer: Client, ledger: dict[str, Any], settings: Any) -> None:
    alice, bob = ledger["alice"], ledger["bob"]
    live_row(alice)
    live_row(alice, minutes_ago=16)  # older than the longest session (15 min): its process died
    live_row(bob)
    response = viewer.get(user_page(alice))
    assert response.status_code == 200
    assert response.context["shown_user"] == alice
    totals = response.context["totals"].counts
    assert (totals["issued"], totals["failed"], totals["rejected"]) == (4, 1, 1)
    assert totals["relayed_sessions"] == 0
    assert len(response.context["live"]) == 1
    # The quota (4) counts every kind: 4 issued (the failed mint's claim was given back).
    assert {q.kind: q.left for q in response.context["quotas"]} == {
        "realtime": 0,
        "transcription": 0,
        "speech": 0,
    }
    html = response.content.decode()
    assert bars_of(html, "user-mints") == 30
    assert "192.0.2.7" in html
    assert 'data-quota="realtime">0<' in html
    # A viewer may not end sessions: no button.
    assert end_url(alice) not in html
    assert "Ending sessions needs the permission to change users." in html

    bob_page = viewer.get(user_page(bob))
    assert bob_page.context["totals"].counts["relayed_seconds"] == pytest.approx(600)
    assert len(bob_page.context["live"]) == 1


def test_a_users_page_without_a_quota(viewer: Client, user: Any) -> None:
    response = viewer.get(user_page(user))
    assert {q.left for q in response.context["quotas"]} == {None}
    assert 'data-quota="speech">no quota<' in response.content.decode()


def test_a_quota_store_that_cannot_be_read(
    viewer: Client, user: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway_realtime.exceptions import LimitsUnavailable

    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise LimitsUnavailable("down")

    monkeypatch.setattr("gateway_realtime.dashboard.quota_left", unavailable)
    response = viewer.get(user_page(user))
    assert response.status_code == 200
    assert 'data-quota="realtime">unavailable<' in response.content.decode()


@pytest.mark.parametrize("pk", ["999999", "abc", "1.5"])
def test_an_unknown_user_is_a_404(viewer: Client, pk: str) -> None:
    assert viewer.get(f"{DASHBOARD}user/{pk}/").status_code == 404


# Ending a user's live sessions ------------------------------------------------------------


@pytest.fixture
def layer() -> Any:
    with in_memory_layer() as layer:
        yield layer


def test_end_needs_the_change_user_permission(
    viewer: Client, manager: Client, user: Any, layer: Any
) -> None:
    live_row(user)
    channel = join(layer, user)
    assert viewer.post(end_url(user)).status_code == 403
    page = manager.get(user_page(user)).content.decode()
    assert f'action="{end_url(user)}"' in page
    response = manager.post(end_url(user) + "?since=2026-03-01", follow=True)
    assert response.redirect_chain == [(user_page(user) + "?since=2026-03-01", 302)]
    assert [str(m) for m in response.context["messages"]] == ["Ending the live sessions of alice."]
    assert first_message(layer, channel) == {
        "type": "relay.revoke",
        "reason": "ended by an administrator",
    }


def test_end_is_post_only_and_csrf_protected(
    staff: Any, manager: Client, user: Any, layer: Any
) -> None:
    assert manager.get(end_url(user)).status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.cookies = manager.cookies
    assert strict.post(end_url(user)).status_code == 403


@override_settings(CHANNEL_LAYERS={})
def test_end_without_a_channel_layer_says_so(manager: Client, user: Any) -> None:
    response = manager.post(end_url(user), follow=True)
    assert [str(m) for m in response.context["messages"]] == [
        "No channel layer is configured (CHANNEL_LAYERS): no session was ended."
    ]


def test_end_when_the_channel_layer_fails(
    manager: Client, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("redis down")

    monkeypatch.setattr(revocation, "revoke_sessions", down)
    response = manager.post(end_url(user), follow=True)
    assert [str(m) for m in response.context["messages"]] == [
        "Could not reach the channel layer: no session was ended. See the log."
    ]


# The CSV export -------------------------------------------------------------------------


def read_csv(response: Any) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def test_the_export_has_a_row_per_ledger_row(viewer: Client, ledger: dict[str, Any]) -> None:
    response = viewer.get(EXPORT)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    since = today() - dt.timedelta(days=29)
    assert response["Content-Disposition"] == (
        f'attachment; filename="gateway-realtime-usage-{since}-{today()}.csv"'
    )
    header, *rows = read_csv(response)
    assert tuple(header) == CSV_HEADER
    alice, bob = ledger["alice"], ledger["bob"]
    assert rows == [
        [str(today()), str(alice.pk), "alice", "realtime", MODEL, "4", "1", "1", "0", "0",
         "0.0", "0.0", "0.0", "0", "0"],
        [str(today()), str(bob.pk), "bob", "realtime", MODEL, "1", "0", "0", "1", "0",
         "600.0", "240.0", "300.0", "1000", "4000"],
    ]  # fmt: skip
    assert len(rows) == DailyUsage.objects.count()


def test_the_export_of_another_period(viewer: Client, ledger: dict[str, Any]) -> None:
    _, *rows = read_csv(viewer.get(EXPORT, {"since": "2026-01-01", "until": "2026-01-31"}))
    assert rows == []


def test_the_export_neutralises_formulas(viewer: Client, django_user_model: Any) -> None:
    for name, model in (("=cmd|' /C calc'!A0", "+SUM(1)"), ("@attacker", "-2+3"), ("plain", "a=b")):
        member = django_user_model.objects.create_user(username=name)
        key = {"day": today(), "user_id": member.pk, "kind": "speech", "model": model}
        usage.add(key, {"issued": 1})
    _, *rows = read_csv(viewer.get(EXPORT))
    assert sorted((row[2], row[4]) for row in rows) == [
        ("'=cmd|' /C calc'!A0", "'+SUM(1)"),
        ("'@attacker", "'-2+3"),
        ("plain", "a=b"),
    ]


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("alice", "alice"),
        ("", ""),
        (-1, -1),
        (2.5, 2.5),
    ],
)
def test_neutralise(value: Any, cell: Any) -> None:
    assert neutralise(value) == cell


# The charts -----------------------------------------------------------------------------


def test_columns_stack_their_series_and_escape_labels() -> None:
    svg = charts.columns(
        chart_id="c",
        title="T <1>",
        labels=["a<b", "day 2"],
        series=[charts.Series("issued", "issued"), charts.Series("failed", "failed")],
        values=[[3, 1], [0, 0]],
    )
    assert svg.count('<g class="gwrt-bar">') == 2
    assert svg.count('class="gwrt-s-issued"') == 1
    assert svg.count('class="gwrt-s-failed"') == 1
    assert "<title>a&lt;b: issued 3, failed 1</title>" in svg
    assert '<title id="c-title">T &lt;1&gt;</title>' in svg
    assert 'aria-labelledby="c-title c-desc"' in svg
    assert "style" not in svg
    # The axis: 0 to 4 by 1, for a tallest column of 4.
    assert [int(t) for t in re.findall(r'text-anchor="end">(\d+)<', svg)] == [0, 1, 2, 3, 4]


def test_bars_are_one_per_row() -> None:
    svg = charts.bars(
        chart_id="f",
        title="F",
        rows=[
            charts.Bar("failed: gateway_timeout", 7, "failed"),
            charts.Bar("x" * 60, 1, "rejected"),
        ],
    )
    assert svg.count('<g class="gwrt-bar">') == 2
    assert "…" in svg  # a long label is shortened on the chart, whole in its tooltip
    assert f"<title>{'x' * 60}: 1</title>" in svg


@pytest.mark.parametrize(
    ("largest", "integer", "axis"),
    [
        (0, True, (1, 1)),
        (3, True, (3, 1)),
        (0.3, True, (1, 1)),
        (7, True, (8, 2)),
        (1234, True, (1500, 500)),
        (1, False, (1, 0.5)),
    ],
)
def test_scale(largest: float, integer: bool, axis: tuple[float, float]) -> None:
    top, step = charts.scale(largest, integer=integer)
    assert (top, step) == pytest.approx(axis)


@pytest.mark.parametrize(
    ("value", "text"), [(0, "0"), (950, "950"), (1200, "1.2k"), (3_400_000, "3.4M"), (0.25, "0.2")]
)
def test_compact(value: float, text: str) -> None:
    assert charts.compact(value) == text
