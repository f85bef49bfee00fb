"""Fixtures for the relay's tests: an emulator accepting server sockets, the app, a browser.

- ``relay_emulator``: a ``GatewayEmulator`` with ``allow_api_key_ws=True``, the
  settings pointed at it (``GATEWAY_REALTIME_API_KEY`` is its key, ``RELAY_KEY``);
- ``channel_layer``: ``CHANNEL_LAYERS`` set to one ``InMemoryChannelLayer``;
- ``relay_app``: ``URLRouter(websocket_urlpatterns)``, as a site's ``asgi.py`` routes it;
- ``relay_browser``: ``relay_browser(user, origin=..., path=...)`` -> a ``Browser``
  whose ``communicator()`` (call it inside the event loop) is a Channels
  ``WebsocketCommunicator`` with the user's session cookie and an ``Origin``.

Async code runs inside sync tests through ``run_async``: pytest-asyncio is not
used, and the loop runs in a thread of its own, because the browser tests'
Playwright keeps an event loop running in the main thread for the rest of the
session (``async_to_sync`` refuses to run there).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing.websocket import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from gateway_realtime.emulator import GatewayEmulator
from gateway_realtime.relay.routing import websocket_urlpatterns
from gateway_realtime.testing import emulated_gateway


def in_a_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` in a thread of its own; its result or its error.

    For sync code that runs an event loop (``async_to_sync``, ``revoke_sessions``).
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:  # handed to the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name="relay-test-loop")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def run_async(function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """``async_to_sync(function)(*args)`` in a thread of its own."""
    return in_a_thread(async_to_sync(function), *args)


#: The emulator's API key: the site's credential in these tests (never to be seen elsewhere).
RELAY_KEY = "vck_relay_test_key_5f3a9c1e7b"
RELAY_PATH = "/ws/gateway-realtime/realtime/"
SITE_ORIGIN = "http://testserver"


@pytest.fixture
def relay_emulator():
    emu = GatewayEmulator(host="127.0.0.1", port=0, api_keys=(RELAY_KEY,), allow_api_key_ws=True)
    emu.start()
    try:
        with emulated_gateway(emu):
            yield emu
    finally:
        emu.stop()


@pytest.fixture
def channel_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    from channels.layers import get_channel_layer

    return get_channel_layer()


@pytest.fixture
def relay_app(channel_layer):
    return URLRouter(websocket_urlpatterns)


@dataclasses.dataclass
class Browser:
    """A browser's handshake headers; ``communicator()`` opens the socket (in the loop)."""

    application: Any
    headers: list[tuple[bytes, bytes]]
    path: str = RELAY_PATH

    def communicator(self, path: str | None = None) -> WebsocketCommunicator:
        return WebsocketCommunicator(self.application, path or self.path, headers=self.headers)


def browser_headers(user=None, origin: str | None = SITE_ORIGIN, host: str = "testserver"):
    """Headers of a browser's WebSocket handshake: Host, Origin, the user's session cookie."""
    headers = [(b"host", host.encode()), (b"user-agent", b"relay-test-browser/1.0")]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if user is not None:
        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return headers


@pytest.fixture
def relay_browser(relay_app):
    def make(user=None, *, origin: str | None = SITE_ORIGIN, path: str = RELAY_PATH, app=None):
        return Browser(app or relay_app, browser_headers(user, origin), path)

    return make
