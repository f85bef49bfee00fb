"""``gateway_realtime.origins``: the one trusted-origin rule of the endpoint and the relay."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import RequestFactory

from gateway_realtime import authentication
from gateway_realtime.origins import (
    allowed_hosts,
    is_trusted_origin,
    scope_header,
    scope_origin_allowed,
    trusted_origins,
)


def handshake(origin: str | None, *, host: str | None = "testserver", scheme: str = "ws") -> Any:
    """An ASGI WebSocket scope with these ``Origin`` and ``Host`` headers."""
    headers = []
    if host is not None:
        headers.append((b"host", host.encode("latin-1")))
    if origin is not None:
        headers.append((b"origin", origin.encode("latin-1")))
    return {"type": "websocket", "scheme": scheme, "headers": headers}


# is_trusted_origin -------------------------------------------------------------


def test_the_site_origin_is_trusted_whatever_the_case() -> None:
    assert is_trusted_origin("http://testserver", site_origin="http://testserver")
    assert is_trusted_origin(" HTTP://TestServer ", site_origin="http://testserver")
    assert is_trusted_origin("https://site.test:8443", site_origin="HTTPS://Site.Test:8443")


@pytest.mark.parametrize(
    "origin",
    ["https://testserver", "http://testserver:8000", "http://sub.testserver", "http://evil.test"],
)
def test_another_origin_is_not_the_site(origin: str) -> None:
    assert not is_trusted_origin(origin, site_origin="http://testserver")


def test_exact_entries_of_csrf_trusted_origins_are_trusted(settings: Any) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://App.Example.com", "http://localhost:3000"]
    assert is_trusted_origin("https://app.example.com", site_origin=None)
    assert is_trusted_origin("http://localhost:3000", site_origin="http://testserver")
    assert not is_trusted_origin("http://app.example.com", site_origin=None)
    assert not is_trusted_origin("https://app.example.com:444", site_origin=None)
    assert not is_trusted_origin("http://localhost:3001", site_origin=None)


@pytest.mark.parametrize(
    "entry",
    ["https://*.example.com", "https://*example.com", "*", "https://app.example.com/"],
)
def test_wildcard_and_inexact_entries_trust_nothing(settings: Any, entry: str) -> None:
    settings.CSRF_TRUSTED_ORIGINS = [entry]
    assert trusted_origins() <= {"https://app.example.com/"}
    assert not is_trusted_origin("https://app.example.com", site_origin=None)
    assert not is_trusted_origin("https://a.b.example.com", site_origin=None)


@pytest.mark.parametrize("origin", ["null", "NULL", "", "  "])
def test_null_and_empty_origins_are_never_trusted(settings: Any, origin: str) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["null"]
    assert not is_trusted_origin(origin, site_origin=origin)


# scope_origin_allowed ----------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("http://testserver", "testserver", "ws"),
        ("HTTP://TESTSERVER", "TestServer", "ws"),
        # Behind a TLS-terminating proxy the server sees ws for the browser's wss.
        ("https://testserver", "testserver", "ws"),
        ("https://testserver", "testserver", "wss"),
        ("http://localhost:8000", "localhost:8000", "ws"),
    ],
)
def test_the_sites_own_origin_is_allowed(origin: str, host: str, scheme: str) -> None:
    assert scope_origin_allowed(handshake(origin, host=host, scheme=scheme))


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        pytest.param(None, "testserver", "ws", id="no-origin"),
        pytest.param("null", "testserver", "ws", id="null"),
        pytest.param("", "testserver", "ws", id="empty"),
        pytest.param("https://evil.example", "testserver", "ws", id="foreign"),
        pytest.param("http://testserver:8000", "testserver", "ws", id="other-port"),
        pytest.param("http://sub.testserver", "testserver", "ws", id="subdomain"),
        pytest.param("http://testserver", "testserver", "wss", id="http-on-wss"),
        pytest.param("http://testserver", None, "ws", id="no-host"),
        pytest.param("http://evil.example", "evil.example", "ws", id="host-not-allowed"),
        pytest.param("ftp://testserver", "testserver", "ws", id="not-http"),
        pytest.param("file://", "testserver", "ws", id="file"),
        pytest.param("http://testserver/page", "testserver", "ws", id="with-path"),
        pytest.param("http://user@testserver", "testserver", "ws", id="userinfo"),
        pytest.param("http://[testserver", "testserver", "ws", id="malformed"),
    ],
)
def test_anything_else_is_refused(origin: str | None, host: str | None, scheme: str) -> None:
    assert not scope_origin_allowed(handshake(origin, host=host, scheme=scheme))


def test_debug_allows_djangos_default_hosts(settings: Any) -> None:
    settings.ALLOWED_HOSTS = []
    settings.DEBUG = False
    assert allowed_hosts() == []
    assert not scope_origin_allowed(handshake("http://localhost:8000", host="localhost:8000"))
    settings.DEBUG = True
    assert scope_origin_allowed(handshake("http://localhost:8000", host="localhost:8000"))
    assert scope_origin_allowed(handshake("http://[::1]:8000", host="[::1]:8000"))
    assert not scope_origin_allowed(handshake("http://site.test", host="site.test"))


def test_a_trusted_origin_is_allowed_from_any_host(settings: Any) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com"]
    assert scope_origin_allowed(handshake("https://app.example.com", scheme="wss"))
    assert scope_origin_allowed(handshake("https://app.example.com", host="internal:8000"))
    # Still https only on a secure socket.
    settings.CSRF_TRUSTED_ORIGINS = ["http://app.example.com"]
    assert not scope_origin_allowed(handshake("http://app.example.com", scheme="wss"))


def test_a_wildcard_entry_is_not_honoured_by_the_relay(settings: Any) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.org"]
    assert not scope_origin_allowed(handshake("https://app.example.org", scheme="wss"))


def test_scope_header_is_case_insensitive_and_takes_the_first() -> None:
    scope = {"headers": [(b"Origin", b"http://a.test"), (b"origin", b"http://b.test")]}
    assert scope_header(scope, b"origin") == "http://a.test"
    assert scope_header(scope, b"host") is None
    assert scope_header({}, b"host") is None


# One rule ----------------------------------------------------------------------

ORIGINS = [
    "http://testserver",
    "https://testserver",
    "HTTP://TestServer",
    "http://testserver:8000",
    "http://sub.testserver",
    "https://app.example.com",
    "https://x.example.org",
    "https://example.org",
    "http://app.example.com",
    "https://evil.example",
    "null",
]


@pytest.mark.parametrize("origin", ORIGINS)
@pytest.mark.parametrize("secure", [False, True], ids=["http", "https"])
def test_the_endpoint_and_the_relay_agree(settings: Any, origin: str, secure: bool) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://App.Example.com", "https://*.example.org"]
    request = RequestFactory().post("/", secure=secure)
    endpoint = authentication.is_trusted_origin(request, origin)
    relay = scope_origin_allowed(handshake(origin, scheme="wss" if secure else "ws"))
    if not secure and origin.lower() == "https://testserver":
        # The one deliberate difference: a plain ws socket may sit behind a
        # TLS-terminating proxy, where an HTTP request knows its scheme
        # (SECURE_PROXY_SSL_HEADER).
        assert (endpoint, relay) == (False, True)
    else:
        assert endpoint == relay
