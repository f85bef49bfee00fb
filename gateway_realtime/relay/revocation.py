"""Ending a user's relayed sessions, on every process and host.

Each relay consumer joins its user's group (``group_for(user.pk)``) on the
channel layer named by ``GATEWAY_REALTIME_RELAY_CHANNEL_LAYER`` and leaves it
when the session ends. ``revoke_sessions(user)`` sends one ``relay.revoke``
message to that group; every consumer in it, whichever process or host holds
it, closes its browser socket with 4410 and the reason given, and its Gateway
socket with it. With ``channels_redis`` every host sharing the Redis is
reached; with the in-memory layer, only the calling process.

Called for you, by receivers connected when relay mode is in use:

- on ``user_logged_out``: every relayed session of that user ends, on all of
  their devices (the group is per user, not per login);
- when a user is saved with ``is_active`` turned from true to false;
- when a user is saved with another password hash (``set_password``, a
  password reset, the admin's password form). This holds even where
  ``update_session_auth_hash`` keeps the login that changed the password:
  that keeps one Django session valid, but every relayed session was opened
  with the old credentials and ends (the browser reconnects through the
  login it still has). It follows Django's own rule that a session lives as
  long as the password hash it was opened with (``get_session_auth_hash``),
  so a hasher upgrade at login, which Django treats the same way for the
  user's other sessions, ends them too.

Both saves revoke once the transaction commits, so a rolled back change ends
nothing; a user created inactive or with a password has nothing to end.

**When the receivers are connected.** Relay mode is in use (``relay_in_use``)
when Channels is installed and ``CHANNEL_LAYERS`` has the layer named by
``GATEWAY_REALTIME_RELAY_CHANNEL_LAYER``: without that layer no revocation
can reach a session, so the receivers would have nothing to do, and a site
that does not use the relay pays nothing on each login, logout and user
load. ``AppConfig.ready`` connects them accordingly, and reconnects them
when those settings change under ``override_settings`` (Django's
``setting_changed``, as Channels and DRF reset their own state), so a test
that configures a layer gets them. ``connect_receivers`` and
``disconnect_receivers`` are there for a site that wants to decide itself.
"channels" in ``INSTALLED_APPS`` is not part of the rule: the relay runs
without it (Channels' own docs have sites list ``daphne`` instead), and a
site that left it out must not silently lose revocation.

Not covered by signals: deactivating with ``QuerySet.update()``, setting
passwords or deleting users in bulk. Call ``revoke_sessions`` for those
users yourself.

The receivers never let a channel layer fault fail a logout or a save: they
log it. ``revoke_sessions`` itself logs a warning and returns ``False`` when
no channel layer is configured, and lets a channel layer fault (Redis down)
propagate to its caller.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction

from gateway_realtime.conf import app_settings

logger = logging.getLogger("gateway_realtime")

#: The message type a relay consumer handles (``relay_revoke``).
REVOKE = "relay.revoke"
#: The close reason when none is given (with close code 4410).
DEFAULT_REASON = "session revoked"
LOGOUT_REASON = "logged out"
DEACTIVATED_REASON = "account deactivated"
PASSWORD_CHANGED_REASON = "password changed"  # noqa: S105 (a close reason)

# On a user instance: the watched fields as loaded or last saved.
_SAVED = "_gateway_realtime_saved"
_WATCHED = ("is_active", "password")
# A watched field that was not loaded (deferred) when the instance was made.
_UNKNOWN = object()


def group_for(user_id: Any) -> str:
    """The channel layer group of one user's relayed sessions."""
    return f"gateway_realtime.relay.user.{user_id}"


def _user_id(user: Any) -> Any:
    """A user instance's primary key, or the primary key given as it is."""
    pk = getattr(user, "pk", user)
    if pk is None:
        raise ValueError("revoke_sessions() needs a saved user or a user's primary key.")
    return pk


def _channel_layer() -> Any:
    from channels.layers import get_channel_layer

    return get_channel_layer(app_settings.RELAY_CHANNEL_LAYER)


def _message(reason: str) -> dict[str, str]:
    # A WebSocket close reason is at most 123 bytes (UTF-8).
    reason = reason.encode()[:123].decode(errors="ignore")
    return {"type": REVOKE, "reason": reason}


def _no_layer() -> bool:
    logger.warning(
        "revoke_sessions: no channel layer %r is configured (CHANNEL_LAYERS, "
        "GATEWAY_REALTIME_RELAY_CHANNEL_LAYER), so no relayed session was ended",
        app_settings.RELAY_CHANNEL_LAYER,
    )
    return False


def revoke_sessions(user: Any, reason: str = DEFAULT_REASON) -> bool:
    """End every live relayed session of ``user`` (an instance or a primary key).

    The sessions close with code 4410 and ``reason`` (cut to the 123 bytes a
    close reason may hold). Returns ``True`` when the message went out,
    ``False`` (with a warning logged) when no channel layer is configured.
    Sending succeeds whether or not the user has live sessions. Synchronous:
    from async code, await ``arevoke_sessions`` instead.
    """
    layer = _channel_layer()
    if layer is None:
        return _no_layer()
    async_to_sync(layer.group_send)(group_for(_user_id(user)), _message(reason))
    return True


async def arevoke_sessions(user: Any, reason: str = DEFAULT_REASON) -> bool:
    """``revoke_sessions`` for async code."""
    layer = _channel_layer()
    if layer is None:
        return _no_layer()
    await layer.group_send(group_for(_user_id(user)), _message(reason))
    return True


def _revoke_quietly(user_id: Any, reason: str) -> None:
    """For the receivers: skip without a layer, log a fault instead of raising it."""
    try:
        if _channel_layer() is None:
            return
        revoke_sessions(user_id, reason)
    except Exception:
        logger.exception("Could not revoke the relayed sessions of user %s", user_id)


def revoke_on_logout(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    """``user_logged_out`` receiver: the user's relayed sessions end with them."""
    if user is None or getattr(user, "pk", None) is None:
        return  # logging out when not logged in
    _revoke_quietly(user.pk, LOGOUT_REASON)


def remember_saved_state(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_init`` receiver on the user model: remembers ``is_active`` and the password hash.

    Reads the instance's ``__dict__``, never the attributes: reading a
    deferred field (``.only()``, ``.defer()``) would cost a query per
    instance, and its refresh makes another instance, and so on. A field not
    loaded is remembered as unknown.
    """
    instance.__dict__[_SAVED] = {name: instance.__dict__.get(name, _UNKNOWN) for name in _WATCHED}


def _written(instance: Any, name: str, update_fields: Any) -> bool:
    """Whether this save wrote ``name``: in the instance, and not left out of ``update_fields``."""
    return name in instance.__dict__ and (update_fields is None or name in update_fields)


def revoke_on_change(
    sender: Any, instance: Any, created: bool = False, update_fields: Any = None, **kwargs: Any
) -> None:
    """``post_save`` receiver on the user model: revoke on deactivation or a new password hash.

    Compares what the save wrote with what the instance was loaded with (or
    last saved), and on a change sends the revocation once the transaction
    commits, so a rolled back change ends nothing. A field the instance was
    loaded without counts as changed when it is written (only a revocation
    too many, never one too few). Nothing is sent for a user just created.
    """
    saved = instance.__dict__.setdefault(_SAVED, {})
    changes: dict[str, tuple[Any, Any]] = {}  # field: (before, after), of the fields written
    for name in _WATCHED:
        if _written(instance, name, update_fields):
            changes[name] = (saved.get(name, _UNKNOWN), instance.__dict__[name])
            saved[name] = instance.__dict__[name]
    if created or instance.pk is None:
        return
    # _UNKNOWN is truthy: an is_active not loaded is taken as having been true.
    was_active, active = changes.get("is_active", (True, True))
    old_hash, new_hash = changes.get("password", (None, None))
    if was_active and not active:
        reason = DEACTIVATED_REASON
    elif old_hash != new_hash:
        reason = PASSWORD_CHANGED_REASON
    else:
        return
    user_id = instance.pk
    transaction.on_commit(lambda: _revoke_quietly(user_id, reason), using=kwargs.get("using"))


def relay_in_use() -> bool:
    """Whether relay mode is in use: Channels installed and the relay's channel layer configured.

    The layer is the one named by ``GATEWAY_REALTIME_RELAY_CHANNEL_LAYER``,
    looked up in ``CHANNEL_LAYERS`` (see the module docstring for why this
    is the rule). Read at each call.
    """
    if importlib.util.find_spec("channels") is None:
        return False
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    return app_settings.RELAY_CHANNEL_LAYER in layers


# The user model the post_init/post_save receivers are connected to, if any.
_connected_to: Any = None

_LOGOUT_UID = "gateway_realtime.relay.logout"
_INIT_UID = "gateway_realtime.relay.remember"
_SAVE_UID = "gateway_realtime.relay.revoke_on_change"


def connect_receivers() -> None:
    """Connect the logout, deactivation and password receivers (idempotent)."""
    global _connected_to
    from django.contrib.auth import get_user_model
    from django.contrib.auth.signals import user_logged_out
    from django.db.models.signals import post_init, post_save

    user_model = get_user_model()
    if _connected_to is not None and _connected_to is not user_model:
        disconnect_receivers()
    user_logged_out.connect(revoke_on_logout, dispatch_uid=_LOGOUT_UID)
    post_init.connect(remember_saved_state, sender=user_model, dispatch_uid=_INIT_UID)
    post_save.connect(revoke_on_change, sender=user_model, dispatch_uid=_SAVE_UID)
    _connected_to = user_model


def disconnect_receivers() -> None:
    """Disconnect what ``connect_receivers`` connected (idempotent)."""
    global _connected_to
    from django.contrib.auth.signals import user_logged_out
    from django.db.models.signals import post_init, post_save

    user_logged_out.disconnect(dispatch_uid=_LOGOUT_UID)
    if _connected_to is not None:
        post_init.disconnect(sender=_connected_to, dispatch_uid=_INIT_UID)
        post_save.disconnect(sender=_connected_to, dispatch_uid=_SAVE_UID)
    _connected_to = None


def update_receivers() -> bool:
    """Connect the receivers when ``relay_in_use()``, disconnect them otherwise; which it did."""
    if relay_in_use():
        connect_receivers()
        return True
    disconnect_receivers()
    return False


#: The settings ``relay_in_use`` reads.
RELAY_MODE_SETTINGS = frozenset({"CHANNEL_LAYERS", "GATEWAY_REALTIME_RELAY_CHANNEL_LAYER"})


def relay_settings_changed(sender: Any, setting: str, **kwargs: Any) -> None:
    """``setting_changed`` receiver: ``update_receivers`` when a relay-mode setting changed."""
    if setting in RELAY_MODE_SETTINGS:
        update_receivers()
