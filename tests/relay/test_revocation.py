"""``gateway_realtime.relay.revocation``: revoke messages reach the user's group.

A relay consumer joins ``group_for(user.pk)``; here a bare channel on the
in-memory channel layer stands in for it.
"""

import logging
import uuid

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_init, post_save
from django.test import Client, override_settings

from gateway_realtime.relay import revocation
from gateway_realtime.relay.revocation import (
    arevoke_sessions,
    group_for,
    revoke_sessions,
)

from .groups import IN_MEMORY, first_message, got_nothing, in_memory_layer, join

pytestmark = pytest.mark.django_db


@pytest.fixture
def layer():
    with in_memory_layer() as layer:
        yield layer


def test_group_names_are_valid_for_channel_layers(layer):
    for user_id in (1, 2**62, uuid.uuid4(), "some-key_1.x"):
        name = group_for(user_id)
        assert name.startswith("gateway_realtime.relay.user.")
        assert layer.require_valid_group_name(name)


def test_revoke_reaches_the_users_group_only(layer, user, other_user):
    mine, theirs = join(layer, user), join(layer, other_user)
    assert revoke_sessions(user) is True
    assert first_message(layer, mine) == {"type": "relay.revoke", "reason": "session revoked"}
    assert got_nothing(layer, theirs)


def test_every_channel_of_the_user_gets_it_with_the_reason(layer, user):
    channels = [join(layer, user) for _ in range(3)]
    # By primary key as well as by instance.
    assert revoke_sessions(user.pk, reason="banned") is True
    for channel in channels:
        assert first_message(layer, channel) == {"type": "relay.revoke", "reason": "banned"}


def test_the_reason_fits_a_close_frame(layer, user):
    channel = join(layer, user)
    revoke_sessions(user, reason="é" * 100)
    reason = first_message(layer, channel)["reason"]
    assert reason == "é" * 61
    assert len(reason.encode()) <= 123


def test_async_twin(layer, user, other_user):
    mine, theirs = join(layer, user), join(layer, other_user)
    assert async_to_sync(arevoke_sessions)(user, "over budget") is True
    assert first_message(layer, mine) == {"type": "relay.revoke", "reason": "over budget"}
    assert got_nothing(layer, theirs)


def test_an_unsaved_user_is_an_error(layer, django_user_model):
    with pytest.raises(ValueError):
        revoke_sessions(django_user_model(username="ghost"))


@override_settings(CHANNEL_LAYERS={})
def test_no_channel_layer_is_a_no_op_with_a_warning(user, caplog):
    with caplog.at_level(logging.WARNING, logger="gateway_realtime"):
        assert revoke_sessions(user) is False
        assert async_to_sync(arevoke_sessions)(user) is False
    assert len(caplog.records) == 2
    assert "no channel layer 'default'" in caplog.records[0].getMessage()


def test_the_layer_named_by_the_setting(user):
    layers = {"relay": IN_MEMORY["default"]}
    with override_settings(CHANNEL_LAYERS=layers, GATEWAY_REALTIME_RELAY_CHANNEL_LAYER="relay"):
        layer = revocation._channel_layer()
        channel = join(layer, user)
        assert revoke_sessions(user) is True
        assert first_message(layer, channel)["type"] == "relay.revoke"


def test_logout_revokes_that_users_sessions(layer, user, other_user):
    mine, theirs = join(layer, user), join(layer, other_user)
    client = Client()
    client.force_login(user)
    client.logout()
    assert first_message(layer, mine) == {"type": "relay.revoke", "reason": "logged out"}
    assert got_nothing(layer, theirs)


def test_logout_when_logged_out_sends_nothing(layer, user):
    channel = join(layer, user)
    Client().logout()
    assert got_nothing(layer, channel)


def test_deactivation_revokes_once_committed(
    layer, user, other_user, django_user_model, django_capture_on_commit_callbacks
):
    mine, theirs = join(layer, user), join(layer, other_user)
    loaded = django_user_model.objects.get(pk=user.pk)
    loaded.is_active = False
    with django_capture_on_commit_callbacks() as callbacks:
        loaded.save()
    # Nothing before the commit.
    assert got_nothing(layer, mine)
    for callback in callbacks:
        callback()
    assert first_message(layer, mine) == {"type": "relay.revoke", "reason": "account deactivated"}
    assert got_nothing(layer, theirs)


def test_only_the_change_to_inactive_revokes(
    layer, user, django_user_model, django_capture_on_commit_callbacks
):
    channel = join(layer, user)
    with django_capture_on_commit_callbacks(execute=True):
        user.first_name = "Alice"
        user.save()  # still active
        django_user_model.objects.create_user(username="dormant", is_active=False)
    assert got_nothing(layer, channel)

    with django_capture_on_commit_callbacks(execute=True):
        user.is_active = False
        user.save(update_fields=["is_active"])
    assert first_message(layer, channel)["reason"] == "account deactivated"

    with django_capture_on_commit_callbacks(execute=True):
        user.last_name = "Liddell"
        user.save()  # already inactive
        django_user_model.objects.get(pk=user.pk).save()  # loaded inactive
    assert got_nothing(layer, channel)

    with django_capture_on_commit_callbacks(execute=True):
        user.is_active = True
        user.save()
        user.is_active = False
        user.save()  # deactivated again
    assert first_message(layer, channel)["reason"] == "account deactivated"
    assert got_nothing(layer, channel)


def test_receivers_are_quiet_without_a_channel_layer(
    layer, user, caplog, monkeypatch, django_capture_on_commit_callbacks
):
    # Connected (a layer is configured), but the layer is gone when they run.
    monkeypatch.setattr(revocation, "_channel_layer", lambda: None)
    with caplog.at_level(logging.DEBUG, logger="gateway_realtime"):
        client = Client()
        client.force_login(user)
        client.logout()
        with django_capture_on_commit_callbacks(execute=True):
            user.is_active = False
            user.save()
    assert caplog.records == []


def test_a_channel_layer_fault_never_fails_a_logout(layer, user, monkeypatch, caplog):
    class Broken:
        async def group_send(self, group, message):
            raise ConnectionError("redis is down")

    monkeypatch.setattr(revocation, "_channel_layer", Broken)
    client = Client()
    client.force_login(user)
    with caplog.at_level(logging.ERROR, logger="gateway_realtime"):
        client.logout()
    assert "_auth_user_id" not in client.session
    assert "Could not revoke the relayed sessions of user" in caplog.text
    # Called directly, the fault reaches the caller.
    with pytest.raises(ConnectionError):
        revoke_sessions(user)


# A password change ---------------------------------------------------------------


def test_a_password_change_revokes_once_committed(
    layer, user, other_user, django_user_model, django_capture_on_commit_callbacks
):
    mine, theirs = join(layer, user), join(layer, other_user)
    loaded = django_user_model.objects.get(pk=user.pk)
    loaded.set_password("a-new-password")
    with django_capture_on_commit_callbacks() as callbacks:
        loaded.save()
    assert got_nothing(layer, mine)  # nothing before the commit
    for callback in callbacks:
        callback()
    assert first_message(layer, mine) == {"type": "relay.revoke", "reason": "password changed"}
    assert got_nothing(layer, theirs)


def test_saves_without_a_new_password_revoke_nothing(
    layer, user, django_user_model, django_capture_on_commit_callbacks
):
    channel = join(layer, user)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        user.first_name = "Alice"
        user.save()
        django_user_model.objects.get(pk=user.pk).save()
        # Logging in saves last_login only (update_last_login).
        Client().force_login(user)
        # A hash set in memory but left out of update_fields is not written.
        user.set_password("not-saved")
        user.save(update_fields=["first_name"])
        django_user_model.objects.create_user(username="carol", password="pw-carol")
    assert callbacks == []
    assert got_nothing(layer, channel)
    # The hash left unsaved still counts as a change when it is written.
    with django_capture_on_commit_callbacks(execute=True):
        user.save(update_fields=["password"])
    assert first_message(layer, channel)["reason"] == "password changed"


def test_a_rolled_back_password_change_revokes_nothing(
    layer, user, django_capture_on_commit_callbacks
):
    channel = join(layer, user)
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        user.set_password("rolled-back")
        user.save()
        raise RuntimeError("the view failed after the save")
    assert callbacks == []
    assert got_nothing(layer, channel)


def test_a_password_change_keeping_the_login_still_revokes(
    layer, user, rf, django_capture_on_commit_callbacks
):
    # update_session_auth_hash keeps the Django session that changed the
    # password; the relayed sessions were opened with the old one and end.
    from django.contrib.auth import update_session_auth_hash
    from django.contrib.sessions.backends.db import SessionStore

    channel = join(layer, user)
    request = rf.post("/password/")
    request.session = SessionStore()
    request.user = user
    with django_capture_on_commit_callbacks(execute=True):
        user.set_password("changed-in-a-view")
        user.save()
        update_session_auth_hash(request, user)
    assert first_message(layer, channel)["reason"] == "password changed"


def test_deactivation_and_a_new_password_in_one_save_revoke_once(
    layer, user, django_capture_on_commit_callbacks
):
    channel = join(layer, user)
    with django_capture_on_commit_callbacks(execute=True):
        user.is_active = False
        user.set_unusable_password()
        user.save()
    assert first_message(layer, channel)["reason"] == "account deactivated"
    assert got_nothing(layer, channel)


def test_deferred_fields_cost_no_query_and_still_count(
    layer, user, django_user_model, django_assert_num_queries, django_capture_on_commit_callbacks
):
    channel = join(layer, user)
    with django_assert_num_queries(1):
        loaded = django_user_model.objects.only("username").get(pk=user.pk)
    # The hash was not loaded: setting one is taken as a change.
    loaded.set_password("set-on-a-partial-instance")
    with django_capture_on_commit_callbacks(execute=True):
        loaded.save()
    assert first_message(layer, channel)["reason"] == "password changed"


# When the receivers are connected --------------------------------------------------


def connected():
    """Which of the relay's receivers are connected: logout, post_init, post_save."""
    user_model = get_user_model()
    return (
        user_logged_out.has_listeners(),
        post_init.has_listeners(user_model),
        post_save.has_listeners(user_model),
    )


def test_no_receiver_without_relay_mode(user, django_capture_on_commit_callbacks):
    # The suite's settings configure no channel layer: relay mode is not in use.
    assert not revocation.relay_in_use()
    assert connected() == (False, False, False)
    loaded = type(user).objects.get(pk=user.pk)
    assert not any(key.startswith("_gateway_realtime") for key in vars(loaded))
    with django_capture_on_commit_callbacks() as callbacks:
        loaded.is_active = False
        loaded.set_password("x")
        loaded.save()
    assert callbacks == []


def test_the_receivers_follow_the_relays_channel_layer():
    assert connected() == (False, False, False)
    with override_settings(CHANNEL_LAYERS=IN_MEMORY):
        assert revocation.relay_in_use()
        assert connected() == (True, True, True)
        with override_settings(GATEWAY_REALTIME_RELAY_CHANNEL_LAYER="relay"):
            assert not revocation.relay_in_use()  # no layer of that name
            assert connected() == (False, False, False)
        assert connected() == (True, True, True)
    assert connected() == (False, False, False)


def test_connect_and_disconnect_are_idempotent(user, django_capture_on_commit_callbacks):
    try:
        revocation.connect_receivers()
        revocation.connect_receivers()
        assert connected() == (True, True, True)
        with django_capture_on_commit_callbacks() as callbacks:
            user.is_active = False
            user.save()
        assert len(callbacks) == 1  # connected once
    finally:
        revocation.disconnect_receivers()
        revocation.disconnect_receivers()
    assert connected() == (False, False, False)
