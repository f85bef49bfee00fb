"""One notion of a trusted origin, for the mint endpoint and the relay.

Both places authenticate a browser by its session cookie alone, with no CSRF
token: the endpoint accepts the AI SDK's plain JSON ``fetch``
(``gateway_realtime.authentication``), and the relay accepts a WebSocket
handshake (``gateway_realtime.relay.consumers``). A cookie goes with a
request whichever page sends it, so the ``Origin`` header is what tells the
site's own pages from another site's, and both use this one rule:

An origin is trusted when it is **the site's own origin**, or **an exact
entry of** ``CSRF_TRUSTED_ORIGINS``. Origins are compared as
``scheme://host[:port]``, case-insensitively; ``null`` is never trusted.

Wildcard entries (``https://*.example.com``) are deliberately not honoured
here, although Django's CSRF check honours them. There, an origin is checked
*in addition to* the CSRF token, a secret the other page must also hold;
here the origin check *replaces* the token, so a wildcard would give every
subdomain (user content, a forgotten DNS record someone else took over) the
power to act as the user with nothing else to prove. A site served from
several origins lists each of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host

#: The hosts Django's ``HttpRequest.get_host()`` allows when ``DEBUG`` is on
#: and ``ALLOWED_HOSTS`` is empty.
DEBUG_HOSTS = (".localhost", "127.0.0.1", "[::1]")


def normalize_origin(origin: str) -> str:
    """``origin`` as compared here: stripped and lower-cased."""
    return origin.strip().lower()


def trusted_origins() -> frozenset[str]:
    """The exact entries of ``CSRF_TRUSTED_ORIGINS``, normalized; wildcard entries left out."""
    entries: Iterable[str] = getattr(settings, "CSRF_TRUSTED_ORIGINS", ())
    return frozenset(normalize_origin(entry) for entry in entries if "*" not in entry)


def is_trusted_origin(origin: str, *, site_origin: str | None) -> bool:
    """Whether a browser's ``Origin`` header may act as the user (see the module docstring).

    ``site_origin`` is the site's own origin as the request reached it
    (``scheme://host[:port]``), or ``None`` when the request's host is not
    one of the site's (then only ``CSRF_TRUSTED_ORIGINS`` can trust it).
    ``null`` and empty origins are never trusted, whatever the settings say.
    """
    origin = normalize_origin(origin)
    if not origin or origin == "null":
        return False
    if site_origin is not None and origin == normalize_origin(site_origin):
        return True
    return origin in trusted_origins()


def allowed_hosts() -> list[str]:
    """``ALLOWED_HOSTS``, or Django's own defaults for ``DEBUG`` when it is empty."""
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = list(DEBUG_HOSTS)
    return hosts


def scope_header(scope: Mapping[str, Any], name: bytes) -> str | None:
    """The first header ``name`` (lower-case bytes) of an ASGI scope, decoded, or ``None``."""
    for key, value in scope.get("headers", ()):
        if bytes(key).lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _serialized_origin(origin: str) -> tuple[str, str] | None:
    """``(scheme, netloc)`` of an ``http``/``https`` origin, ``None`` for anything else."""
    try:
        parts = urlsplit(origin)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return None
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return None
    # An Origin header is scheme://host[:port] and nothing more.
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    return parts.scheme, parts.netloc


def scope_origin_allowed(scope: Mapping[str, Any]) -> bool:
    """Whether a WebSocket handshake's ``Origin`` is trusted (the relay's check).

    The rule of ``is_trusted_origin``, with the site's own origin taken from
    the handshake: the ``Origin``'s scheme with the ``Host`` header, when
    that host is in ``ALLOWED_HOSTS`` (Django's ``DEBUG`` defaults when it
    is empty). Further, as a handshake needs:

    - the ``Origin`` header must be present and not ``null`` (a browser always
      sends one on a WebSocket handshake; only a page hiding where it comes
      from omits it), and be an ``http`` or ``https`` origin;
    - on a secure socket (``scope["scheme"] == "wss"``) the origin must be
      ``https``, as Django's CSRF check requires of a secure request. On a
      plain ``ws`` socket either scheme may match: behind a TLS-terminating
      proxy the server sees ``ws`` for the browser's ``wss``.
    """
    origin = scope_header(scope, b"origin")
    if origin is None:
        return False
    origin = normalize_origin(origin)
    parsed = _serialized_origin(origin)
    if parsed is None:
        return False
    scheme, _netloc = parsed
    if scope.get("scheme") == "wss" and scheme != "https":
        return False
    host = scope_header(scope, b"host")
    site_origin = None
    if host:
        domain, _port = split_domain_port(host.lower())
        if domain and validate_host(domain, allowed_hosts()):
            site_origin = f"{scheme}://{host}"
    return is_trusted_origin(origin, site_origin=site_origin)
