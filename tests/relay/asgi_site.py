"""The ASGI application ``tests/relay/test_multiprocess.py`` runs under uvicorn.

Django for HTTP, the relay at ``/ws/gateway-realtime/<kind>/`` behind
Channels' session-cookie authentication, as a site's ``asgi.py`` would be
(see ``gateway_realtime.relay.routing``).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.relay.site_settings")
django_asgi = get_asgi_application()  # before anything that imports models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from gateway_realtime.relay.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
