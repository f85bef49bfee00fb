"""URL routes for the relay, for the site's ``asgi.py``.

::

    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.core.asgi import get_asgi_application

    django_asgi = get_asgi_application()  # before importing anything that uses models

    from gateway_realtime.relay.routing import websocket_urlpatterns

    application = ProtocolTypeRouter({
        "http": django_asgi,
        "websocket": URLRouter(websocket_urlpatterns),
    })

Each route carries Channels' ``SessionMiddlewareStack`` (the session cookie),
and the consumer looks the user up itself, after accepting the socket, so a
database that cannot be reached closes the socket with 1011 ``limits
unavailable`` instead of failing the handshake with an HTTP 500. Wrapping
the router in ``AuthMiddlewareStack`` for the site's other consumers works
too (the consumer then uses its ``scope["user"]``), but that middleware
looks the user up before any consumer runs, so a database outage fails
those handshakes with HTTP 500.

The consumer checks the ``Origin`` itself, so no ``AllowedHostsOriginValidator``
is needed (it does no harm either). ``relay_urlpatterns(prefix)`` serves the
same routes under another prefix.
"""

from __future__ import annotations

from typing import Any

from channels.sessions import SessionMiddlewareStack
from django.urls import path

from gateway_realtime.relay.consumers import RelayConsumer

DEFAULT_PREFIX = "ws/gateway-realtime/"


def relay_urlpatterns(prefix: str = DEFAULT_PREFIX) -> list[Any]:
    """``<prefix><kind>/`` routed to ``RelayConsumer`` (unknown kinds are refused with 4404)."""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    prefix = prefix.lstrip("/")
    return [
        path(
            f"{prefix}<str:kind>/",
            SessionMiddlewareStack(RelayConsumer.as_asgi()),
            name="gateway_realtime_relay",
        )
    ]


#: The relay at ``/ws/gateway-realtime/<kind>/``.
websocket_urlpatterns = relay_urlpatterns()
