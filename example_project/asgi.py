"""The example site under an ASGI server, with relay mode (docs/relay.md).

    uvicorn example_project.asgi:application      (``make demo RELAY=1`` does this)

HTTP goes to Django as under WSGI; WebSockets at
``/ws/gateway-realtime/<kind>/`` go to the app's relay consumer, which
authenticates by the session cookie (its routes carry Channels' session middleware) and checks
the ``Origin`` itself, so no ``AllowedHostsOriginValidator`` is needed here.
Needs the ``relay`` extra (``pip install "django-gateway-realtime[relay]"``)
and an ASGI server such as uvicorn.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
# Django first: the relay's modules import models, which need the apps loaded.
django_application = get_asgi_application()

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

if settings.DEBUG:
    # Static files as runserver serves them (the elements' modules); a
    # deployment serves collectstatic's output from its proxy instead.
    django_application = ASGIStaticFilesHandler(django_application)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from gateway_realtime.relay.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
