"""Ending a user's relayed sessions, on every process and host.

Each relay consumer joins its user's group (``group_for(user.pk)``) on the
channel layer named by ``GATEWAY_REALTIME_RELAY_CHANNEL_LAYER`` and leaves it
when the session ends. ``revoke_sessions(user)`` sends one ``relay.revoke``
message to that group; every consumer in it, whichever process or host holds
it, closes its browser socket with 4410 and the reason given, and its Gateway
socket with it. With ``channels_redis`` every host sharing the Redis is
reached; with the in-memory layer, only the calling process.

Called for you (``gateway_realtime.apps`` connects the receivers when
Channels is installed):

- on ``user_logged_out``: every relayed session of that user ends, on all of
  their devices (the group is per user, not per login);
- when a user is saved with ``is_active`` turned from true to false.

Not covered by signals: deactivating with ``QuerySet.update()`` or deleting
users in bulk. Call ``revoke_sessions`` for those users yourself.

The receivers do nothing when no channel layer is configured (a site with
Channels installed but no relay), and they never let a channel layer fault
fail a logout or a save: they log it. ``revoke_sessions`` itself logs a
warning and returns ``False`` when no channel layer is configured, and lets
a channel layer fault (Redis down) propagate to its caller.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction

from gateway_realtime.conf import app_settings

logger = logging.getLogger("gateway_realtime")

#: The message type a relay consumer handles (``relay_revoke``).
REVOKE = "relay.revoke"
#: The close reason when none is given (with close code 4410).
DEFAULT_REASON = "session revoked"
LOGOUT_REASON = "logged out"
DEACTIVATED_REASON = "account deactivated"

# On a user instance: was it active when loaded or last saved?
_WAS_ACTIVE = "_gateway_realtime_was_active"


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


def remember_active(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_init`` receiver on the user model: remembers ``is_active`` as loaded."""
    instance.__dict__[_WAS_ACTIVE] = getattr(instance, "is_active", True)


def revoke_on_deactivation(
    sender: Any, instance: Any, created: bool = False, **kwargs: Any
) -> None:
    """``post_save`` receiver on the user model: revoke when ``is_active`` became false.

    Sent once the transaction commits, so a rolled back deactivation ends
    nothing. A user created inactive has no sessions to end.
    """
    active = getattr(instance, "is_active", True)
    was_active = instance.__dict__.get(_WAS_ACTIVE, True)
    instance.__dict__[_WAS_ACTIVE] = active
    if created or active or not was_active or instance.pk is None:
        return
    user_id = instance.pk
    using = kwargs.get("using")
    transaction.on_commit(lambda: _revoke_quietly(user_id, DEACTIVATED_REASON), using=using)


def connect_receivers() -> None:
    """Connect the logout and deactivation receivers (``AppConfig.ready``)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.signals import user_logged_out
    from django.db.models.signals import post_init, post_save

    user_model = get_user_model()
    user_logged_out.connect(revoke_on_logout, dispatch_uid="gateway_realtime.relay.logout")
    post_init.connect(
        remember_active, sender=user_model, dispatch_uid="gateway_realtime.relay.active"
    )
    post_save.connect(
        revoke_on_deactivation, sender=user_model, dispatch_uid="gateway_realtime.relay.deactivate"
    )
