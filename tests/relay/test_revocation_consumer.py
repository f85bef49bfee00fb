"""Logout, deactivation and a password change end a live relayed session (in this process)."""

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from gateway_realtime.models import CloseSide, RelaySession

from .conftest import run_async

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5


async def open_session(comm):
    connected, _ = await comm.connect(TIMEOUT)
    assert connected
    assert (await comm.receive_json_from(TIMEOUT))["type"] == "session-created"


async def next_close(comm):
    while True:
        out = await comm.receive_output(TIMEOUT)
        if out["type"] == "websocket.close":
            return out.get("code"), out.get("reason")


def ended_by(action, browser):
    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        await sync_to_async(action)()
        closed = await next_close(comm)
        await comm.disconnect(timeout=TIMEOUT)
        return closed

    return run_async(scenario)


def test_logging_out_ends_the_session(relay_emulator, relay_browser, user):
    client = Client()
    client.force_login(user)
    assert ended_by(client.logout, relay_browser(user)) == (4410, "logged out")
    row = RelaySession.objects.get()
    assert (row.closed_by, row.close_code) == (CloseSide.REVOKED, 4410)


def test_deactivating_the_user_ends_the_session(
    relay_emulator, relay_browser, user, django_user_model
):
    def deactivate():
        loaded = django_user_model.objects.get(pk=user.pk)
        loaded.is_active = False
        loaded.save()

    assert ended_by(deactivate, relay_browser(user)) == (4410, "account deactivated")
    assert RelaySession.objects.get().closed_by == CloseSide.REVOKED


def test_changing_the_password_ends_the_session(
    relay_emulator, relay_browser, user, django_user_model
):
    def change_password():
        loaded = django_user_model.objects.get(pk=user.pk)
        loaded.set_password("a-new-password")
        loaded.save()

    assert ended_by(change_password, relay_browser(user)) == (4410, "password changed")
    assert RelaySession.objects.get().closed_by == CloseSide.REVOKED


def test_another_users_logout_leaves_the_session(relay_emulator, relay_browser, user, other_user):
    client = Client()
    client.force_login(other_user)
    browser = relay_browser(user)

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        await sync_to_async(client.logout)()
        # Still relayed after the other user's revocation went out.
        await comm.send_json_to({"type": "session-update", "config": {}})
        assert (await comm.receive_json_from(TIMEOUT))["type"] == "session-updated"
        await comm.disconnect(timeout=TIMEOUT)

    run_async(scenario)
    assert RelaySession.objects.get().closed_by == CloseSide.BROWSER
