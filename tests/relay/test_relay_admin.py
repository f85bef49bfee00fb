"""``RelaySessionAdmin``: a read-only audit of relayed sessions, and its revoke action."""

import datetime as dt
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.test import RequestFactory, override_settings
from django.urls import reverse
from django.utils import timezone

from gateway_realtime.admin import RelaySessionAdmin
from gateway_realtime.models import CloseSide, RelaySession
from gateway_realtime.relay import revocation

from .groups import first_message, got_nothing, in_memory_layer, join

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:gateway_realtime_relaysession_changelist"


def relayed(user: Any, *, live: bool, **fields: Any) -> RelaySession:
    row = RelaySession.objects.create(
        user=user,
        username=user.get_username() if user else "",
        kind="realtime",
        model="openai/gpt-realtime-2",
        **fields,
    )
    if not live:
        row.ended_at = row.started_at + dt.timedelta(seconds=75)
        row.duration_ms = 75_000
        row.save()
    return row


@pytest.fixture
def rows(user: Any, other_user: Any) -> dict[str, RelaySession]:
    return {
        "alice_live": relayed(user, live=True),
        "alice_ended": relayed(
            user,
            live=False,
            closed_by=CloseSide.BROWSER,
            close_code=1000,
            audio_seconds_in=12.5,
            audio_seconds_out=30,
            input_tokens=120,
            output_tokens=480,
        ),
        "bob_live": relayed(other_user, live=True),
        "bob_revoked": relayed(
            other_user,
            live=False,
            closed_by=CloseSide.REVOKED,
            close_code=4410,
            close_reason="logged out",
        ),
    }


@pytest.fixture
def layer():
    with in_memory_layer() as layer:
        yield layer


def changelist(client: Any, **params: str) -> Any:
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    return response


def shown(response: Any) -> set[int]:
    return {row.pk for row in response.context["cl"].result_list}


def end_sessions(client: Any, selected: list[RelaySession]) -> list[str]:
    response = client.post(
        reverse(CHANGELIST),
        {"action": "end_live_sessions", "_selected_action": [row.pk for row in selected]},
        follow=True,
    )
    assert response.status_code == 200
    return [str(message) for message in response.context["messages"]]


def test_changelist(admin_client: Any, rows: dict[str, RelaySession]) -> None:
    response = changelist(admin_client)
    assert shown(response) == {row.pk for row in rows.values()}
    content = response.content.decode()
    for text in ("alice", "bob", "live, 0:0", "1:15", "logged out", "Revoked"):
        assert text in content
    assert "audio 0:12 in, 0:30 out; tokens 120 in, 480 out" in content


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"state": "live"}, {"alice_live", "bob_live"}),
        ({"state": "ended"}, {"alice_ended", "bob_revoked"}),
        ({"closed_by__exact": "revoked"}, {"bob_revoked"}),
        ({"kind__exact": "realtime"}, {"alice_live", "alice_ended", "bob_live", "bob_revoked"}),
        ({"q": "alice"}, {"alice_live", "alice_ended"}),
        ({"q": "bob"}, {"bob_live", "bob_revoked"}),
        ({"q": "nobody"}, set()),
    ],
)
def test_filters_and_search(
    admin_client: Any, rows: dict[str, RelaySession], params: dict[str, str], names: set[str]
) -> None:
    assert shown(changelist(admin_client, **params)) == {rows[name].pk for name in names}


def test_detail_page_is_read_only(admin_client: Any, rows: dict[str, RelaySession]) -> None:
    row = rows["alice_ended"]
    url = reverse("admin:gateway_realtime_relaysession_change", args=[row.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    assert 'name="_save"' not in response.content.decode()
    assert admin_client.post(url, {"model": "changed/model"}).status_code == 403
    row.refresh_from_db()
    assert row.model == "openai/gpt-realtime-2"
    add = reverse("admin:gateway_realtime_relaysession_add")
    assert admin_client.get(add).status_code == 403
    delete = reverse("admin:gateway_realtime_relaysession_delete", args=[row.pk])
    assert admin_client.get(delete).status_code == 403


def test_permissions() -> None:
    model_admin = admin.site._registry[RelaySession]
    assert isinstance(model_admin, RelaySessionAdmin)
    request = RequestFactory().get("/")
    assert model_admin.has_add_permission(request) is False
    assert model_admin.has_change_permission(request) is False
    assert model_admin.has_delete_permission(request) is False
    assert set(model_admin.get_readonly_fields(request)) >= {
        f.name for f in RelaySession._meta.fields
    }


def test_action_ends_the_live_sessions_of_the_selected_users(
    admin_client: Any, layer: Any, rows: dict[str, RelaySession], user: Any, other_user: Any
) -> None:
    mine, theirs = join(layer, user), join(layer, other_user)
    # Two rows of alice's (one live) and bob's ended one: only alice is revoked, once.
    shown = end_sessions(
        admin_client, [rows["alice_live"], rows["alice_ended"], rows["bob_revoked"]]
    )
    assert shown == ["Ending the live sessions of 1 user."]
    assert first_message(layer, mine) == {
        "type": "relay.revoke",
        "reason": "ended by an administrator",
    }
    assert got_nothing(layer, mine)
    assert got_nothing(layer, theirs)

    shown = end_sessions(admin_client, list(rows.values()))
    assert shown == ["Ending the live sessions of 2 users."]
    assert first_message(layer, mine)["type"] == "relay.revoke"
    assert first_message(layer, theirs)["type"] == "relay.revoke"


def test_action_with_no_live_session_selected(
    admin_client: Any, layer: Any, rows: dict[str, RelaySession], user: Any
) -> None:
    channel = join(layer, user)
    assert end_sessions(admin_client, [rows["alice_ended"]]) == [
        "None of the selected sessions is live."
    ]
    assert got_nothing(layer, channel)


@override_settings(CHANNEL_LAYERS={})
def test_action_without_a_channel_layer(admin_client: Any, rows: dict[str, RelaySession]) -> None:
    assert end_sessions(admin_client, [rows["alice_live"]]) == [
        "No channel layer is configured (CHANNEL_LAYERS): no session was ended."
    ]


def test_action_when_the_channel_layer_fails(
    admin_client: Any, rows: dict[str, RelaySession], monkeypatch: Any
) -> None:
    class Broken:
        async def group_send(self, group: str, message: dict[str, str]) -> None:
            raise ConnectionError("redis is down")

    monkeypatch.setattr(revocation, "_channel_layer", Broken)
    assert end_sessions(admin_client, [rows["alice_live"]]) == [
        "Could not reach the channel layer: no session was ended. See the log."
    ]


def test_the_action_needs_the_permission_to_change_users(
    client: Any, django_user_model: Any, layer: Any, rows: dict[str, RelaySession], user: Any
) -> None:
    staff = django_user_model.objects.create_user(username="staff", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_relaysession"))
    client.force_login(staff)
    response = changelist(client)
    assert shown(response) == {row.pk for row in rows.values()}
    assert "end_live_sessions" not in response.content.decode()
    channel = join(layer, user)
    client.post(
        reverse(CHANGELIST),
        {"action": "end_live_sessions", "_selected_action": [rows["alice_live"].pk]},
    )
    assert got_nothing(layer, channel)

    staff.user_permissions.add(Permission.objects.get(codename="change_user"))
    staff = django_user_model.objects.get(pk=staff.pk)  # fresh permission cache
    client.force_login(staff)
    assert "end_live_sessions" in changelist(client).content.decode()
    assert end_sessions(client, [rows["alice_live"]]) == ["Ending the live sessions of 1 user."]
    assert first_message(layer, channel)["type"] == "relay.revoke"


def test_a_live_session_shows_its_running_time(
    admin_client: Any, user: Any, monkeypatch: Any
) -> None:
    row = relayed(user, live=True)
    later = row.started_at + dt.timedelta(hours=1, minutes=2, seconds=3)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert "live, 1:02:03" in changelist(admin_client).content.decode()
