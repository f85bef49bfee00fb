"""Relay mode: the browser never holds a secret; the site keeps live control.

Installed with the ``relay`` extra (``pip install "django-gateway-realtime[relay]"``:
Channels, ``websockets``, ``channels-redis``). The browser's AI SDK session
opens the site's own WebSocket (``api: { websocket: "/ws/gateway-realtime/realtime/" }``);
a Channels consumer (``consumers.RelayConsumer``) authenticates it by the
session cookie, checks the ``Origin``, applies the user's limits and opens
the Gateway's socket with the site's credential in headers (``upstream``),
then passes frames both ways unchanged. Because the site holds the socket it
can end a session at any moment: at a maximum length, at a metered budget,
when the user logs out or is deactivated (``revoke_sessions``), or when a
side falls behind. Each session leaves a ``RelaySession`` audit row.

Public API:

- ``websocket_urlpatterns`` (and ``relay_urlpatterns(prefix)``) in
  ``gateway_realtime.relay.routing``: the routes for the site's ``asgi.py``,
  routed with ``channels.routing.URLRouter`` (each route carries the session middleware);
- ``revoke_sessions(user, reason="session revoked")`` (and ``arevoke_sessions``)
  in ``gateway_realtime.relay.revocation``: end the user's live sessions on
  every process, through the channel layer ``GATEWAY_REALTIME_RELAY_CHANNEL_LAYER``.

Close codes the browser sees are listed in ``consumers.CLOSE_CODES``.

Nothing here is imported by the core app: only code that imports
``gateway_realtime.relay.*`` needs the extra.
"""

from __future__ import annotations

from typing import Any

__all__ = ["arevoke_sessions", "revoke_sessions", "websocket_urlpatterns"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing the package does not import Channels' routing (and models).
    if name == "websocket_urlpatterns":
        from gateway_realtime.relay.routing import websocket_urlpatterns

        return websocket_urlpatterns
    if name in {"revoke_sessions", "arevoke_sessions"}:
        from gateway_realtime.relay import revocation

        return getattr(revocation, name)
    raise AttributeError(name)
