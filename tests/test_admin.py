"""``gateway_realtime.admin``: a read-only, searchable audit trail."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib import admin
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from gateway_realtime.admin import ClientSecretIssuanceAdmin, ReadOnlyAdmin
from gateway_realtime.models import (
    ClientSecretIssuance,
    DailyFailure,
    DailyUsage,
    Outcome,
    QuotaCounter,
    RelaySession,
    RelayUsage,
)
from gateway_realtime.services import mint_client_secret

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:gateway_realtime_clientsecretissuance_changelist"


@pytest.fixture
def rows(gateway: Any, user: Any, other_user: Any) -> list[Any]:
    first = mint_client_secret(user=user, kind="realtime")
    second = mint_client_secret(user=other_user, kind="speech")
    ClientSecretIssuance.objects.create(
        kind="transcription",
        model="openai/gpt-4o-transcribe",
        username="carol",
        outcome=Outcome.FAILED,
        error_type="rate_limit_exceeded",
        upstream_status=429,
    )
    return [first, second]


def changelist(admin_client: Any, **params: str) -> Any:
    response = admin_client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    return response


def shown(response: Any) -> set[int]:
    return {row.pk for row in response.context["cl"].result_list}


def test_changelist(admin_client: Any, rows: list[Any]) -> None:
    response = changelist(admin_client)
    assert len(shown(response)) == 3
    for secret in rows:
        assert secret.token.encode() not in response.content
        assert secret.issuance.token_hint in response.content.decode()


@pytest.mark.parametrize(
    ("params", "count"),
    [
        ({"outcome__exact": "issued"}, 2),
        ({"outcome__exact": "failed"}, 1),
        ({"kind__exact": "speech"}, 1),
        ({"source__exact": "other"}, 2),
        ({"auth_method__exact": "api-key"}, 2),
        ({"error_type__exact": "rate_limit_exceeded"}, 1),
        ({"q": "alice"}, 1),
        ({"q": "eleven"}, 1),
        ({"q": "nobody"}, 0),
    ],
)
def test_filters_and_search(
    admin_client: Any, rows: list[Any], params: dict[str, str], count: int
) -> None:
    assert len(shown(changelist(admin_client, **params))) == count


def test_date_hierarchy(admin_client: Any, rows: list[Any]) -> None:
    today = timezone.now()
    response = changelist(
        admin_client,
        created_at__year=str(today.year),
        created_at__month=str(today.month),
        created_at__day=str(today.day),
    )
    assert len(shown(response)) == 3


def test_search_by_full_token_finds_its_row(admin_client: Any, rows: list[Any]) -> None:
    secret = rows[1]
    response = changelist(admin_client, q=secret.token)
    assert shown(response) == {secret.issuance.pk}
    response = changelist(admin_client, q=f"  {secret.token}  ")
    assert shown(response) == {secret.issuance.pk}
    # A token that was never issued finds nothing.
    assert shown(changelist(admin_client, q=secret.token + "x")) == set()


def test_search_by_hint(admin_client: Any, rows: list[Any]) -> None:
    secret = rows[0]
    # Hints are short, so several tokens may share one.
    assert secret.issuance.pk in shown(changelist(admin_client, q=secret.issuance.token_hint))


def test_detail_page_is_read_only(admin_client: Any, rows: list[Any]) -> None:
    row = rows[0].issuance
    url = reverse("admin:gateway_realtime_clientsecretissuance_change", args=[row.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    content = response.content.decode()
    assert row.token_fingerprint in content
    assert rows[0].token not in content
    assert 'name="_save"' not in content
    response = admin_client.post(url, {"model": "changed/model"})
    assert response.status_code == 403
    row.refresh_from_db()
    assert row.model == "openai/gpt-realtime-2"


def test_no_add(admin_client: Any) -> None:
    url = reverse("admin:gateway_realtime_clientsecretissuance_add")
    assert admin_client.get(url).status_code == 403


def test_permissions() -> None:
    model_admin = admin.site._registry[ClientSecretIssuance]
    assert isinstance(model_admin, ClientSecretIssuanceAdmin)
    request = RequestFactory().get("/")
    assert model_admin.has_add_permission(request) is False
    assert model_admin.has_change_permission(request) is False
    assert set(model_admin.get_readonly_fields(request)) >= {
        f.name for f in ClientSecretIssuance._meta.fields
    }


@pytest.mark.django_db
def test_quota_counter_admin_is_read_only_and_loads(admin_client, django_user_model):
    from django.utils import timezone

    from gateway_realtime.models import QuotaCounter

    owner = django_user_model.objects.create_user(username="quota-owner", password="pw")
    now = timezone.now()
    counter = QuotaCounter.objects.create(
        user=owner, window_start=now, window_end=now + timezone.timedelta(days=1), used=3
    )
    listing = admin_client.get("/admin/gateway_realtime/quotacounter/?q=quota-owner")
    assert listing.status_code == 200
    assert b"quota-owner" in listing.content
    detail = admin_client.get(f"/admin/gateway_realtime/quotacounter/{counter.pk}/change/")
    assert detail.status_code == 200
    assert admin_client.get("/admin/gateway_realtime/quotacounter/add/").status_code == 403


@pytest.mark.parametrize(
    ("model", "deletable"),
    [
        (ClientSecretIssuance, False),
        (RelaySession, False),
        (QuotaCounter, True),
        (RelayUsage, True),
        (DailyUsage, False),
        (DailyFailure, False),
    ],
)
def test_read_only_admins_keep_their_delete_rule(
    model: Any, deletable: bool, django_user_model: Any
) -> None:
    """No admin adds or changes rows; staff with the permission may delete only counters."""
    model_admin = admin.site._registry[model]
    assert isinstance(model_admin, ReadOnlyAdmin)
    request = RequestFactory().get("/")
    request.user = django_user_model.objects.create_superuser("root", password="pw")
    assert model_admin.has_add_permission(request) is False
    assert model_admin.has_change_permission(request) is False
    assert model_admin.has_delete_permission(request) is deletable
    request.user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    assert model_admin.has_delete_permission(request) is False


# At scale (docs/scaling.md) ----------------------------------------------------------


def test_the_changelist_never_reads_the_whole_audit_table(
    admin_client: Any, rows: list[Any]
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        changelist(admin_client)
    audit = [q["sql"] for q in queries.captured_queries if "clientsecretissuance" in q["sql"]]
    # No DISTINCT for a filter's choices or the date links; the count is capped.
    assert not [sql for sql in audit if "DISTINCT" in sql.upper()]
    [count] = [sql for sql in audit if "COUNT(" in sql.upper()]
    assert "LIMIT 10000" in count.upper()


def test_the_count_is_capped(
    admin_client: Any, rows: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway_realtime.admin import CappedPaginator

    monkeypatch.setattr(CappedPaginator, "CAP", 2)
    assert changelist(admin_client).context["cl"].result_count == 2


def test_error_type_choices_come_from_the_ledger(
    admin_client: Any, rows: list[Any], gateway_mock: Any, user: Any
) -> None:
    from .conftest import answer, gateway_error

    answer(gateway_mock, gateway_error("internal_server_error"), status=500)
    with pytest.raises(Exception):  # noqa: B017 - any Gateway error
        mint_client_secret(user=user, kind="realtime")
    spec = next(
        s for s in changelist(admin_client).context["cl"].filter_specs if s.title == "error type"
    )
    failed = ClientSecretIssuance.objects.get(user=user, outcome=Outcome.FAILED)
    # The ledger counted the mint that failed; the row made by hand is not in it.
    assert [value for value, _ in spec.lookup_choices] == [failed.error_type]


def test_an_exact_username_finds_the_users_rows_by_id(
    admin_client: Any, rows: list[Any], user: Any
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = changelist(admin_client, q=user.get_username())
    assert shown(response) == {rows[0].issuance.pk}
    audit = [q["sql"] for q in queries.captured_queries if "clientsecretissuance" in q["sql"]]
    assert not [sql for sql in audit if "LIKE" in sql.upper()]


@pytest.mark.parametrize(
    ("path", "shows"),
    [
        ("dailyusage", "openai/gpt-realtime-2"),
        ("dailyfailure", "gateway_timeout"),
    ],
)
def test_the_ledger_admins_list_rows_without_reading_the_whole_table(
    admin_client: Any, django_user_model: Any, path: str, shows: str
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from gateway_realtime import usage

    member = django_user_model.objects.create_user("ledger-owner")
    key = {"day": dt.date(2026, 11, 30), "user_id": member.pk, "kind": "realtime",
           "model": "openai/gpt-realtime-2"}  # fmt: skip
    usage.add(
        key, {"issued": 2, "failed": 1}, {"outcome": "failed", "error_type": "gateway_timeout"}
    )
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(f"/admin/gateway_realtime/{path}/")
    assert response.status_code == 200
    assert shows in response.content.decode() and "ledger-owner" in response.content.decode()
    table = [q["sql"] for q in queries.captured_queries if f"gateway_realtime_{path}" in q["sql"]]
    # No date_hierarchy's DISTINCT; the count is capped (docs/scaling.md).
    assert not [sql for sql in table if "DISTINCT" in sql.upper()]
    [count] = [sql for sql in table if "COUNT(" in sql.upper()]
    assert "LIMIT 10000" in count.upper()
    assert (
        admin_client.get(f"/admin/gateway_realtime/{path}/?day__gte=2026-11-30").status_code == 200
    )
