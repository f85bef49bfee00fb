"""Which credential the server uses to mint, per the wire contract's section 2."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.views.decorators.debug import sensitive_variables

from gateway_realtime.conf import app_settings
from gateway_realtime.exceptions import GatewayConfigurationError

if TYPE_CHECKING:
    from django.http import HttpRequest

API_KEY = "api-key"
OIDC = "oidc"

OIDC_HEADER = "HTTP_X_VERCEL_OIDC_TOKEN"


@dataclass(frozen=True)
class Credential:
    """The site's long-lived Gateway credential and how it was obtained.

    ``value`` is excluded from ``repr`` and ``str`` so that it cannot be
    printed by accident (a log line, a traceback's locals, a debug page).
    """

    value: str = field(repr=False)
    method: str  # "api-key" or "oidc", sent as ai-gateway-auth-method
    source: str  # where it came from, for messages: a setting or variable name

    def __str__(self) -> str:
        return f"<{self.method} credential from {self.source}>"


@sensitive_variables("value")
def _credential(value: str, method: str, source: str) -> Credential:
    """A ``Credential``, or ``GatewayConfigurationError`` if ``value`` cannot be one.

    A Gateway credential is a single word of printable ASCII: anything else
    (an inner space, as in a pasted ``"Bearer vck_..."``, a line break, a
    non-ASCII character) cannot travel in the ``Authorization`` header, so it
    is a setup mistake, reported before anything is sent. The message names
    where the value came from, never the value.
    """
    if not (value.isascii() and value.isprintable()) or " " in value:
        raise GatewayConfigurationError(
            f"{source} is malformed: a Gateway credential is one word of printable ASCII "
            "(no spaces, no 'Bearer ' prefix, no line breaks)."
        )
    return Credential(value=value, method=method, source=source)


@sensitive_variables("value")
def _call_provider(provider: Any, source: str) -> Credential:
    try:
        value = provider()
    except Exception as err:
        # Not chained: the provider's own exception text could contain the key.
        raise GatewayConfigurationError(
            f"{source} raised {type(err).__name__} while resolving the Gateway API key."
        ) from None
    if not isinstance(value, str) or not value.strip():
        raise GatewayConfigurationError(
            f"{source} must return a non-empty string (the Gateway API key)."
        )
    return _credential(value.strip(), API_KEY, source)


@sensitive_variables("configured", "value", "token")
def resolve_credential(request: HttpRequest | None = None) -> Credential:
    """Return the credential for one mint, in the contract's order.

    1. ``GATEWAY_REALTIME_API_KEY``: a string, or a callable called now (a
       callable that gives no key is an error, never a fall-through).
    2. The ``AI_GATEWAY_API_KEY`` environment variable.
    3. The Vercel OIDC token: the request's ``x-vercel-oidc-token`` header when
       ``GATEWAY_REALTIME_TRUST_VERCEL_OIDC_HEADER`` allows it (by default only
       on Vercel), else the ``VERCEL_OIDC_TOKEN`` environment variable.

    Raises ``GatewayConfigurationError`` (``configuration_error``) before
    anything is sent when there is none ("No authentication provided"), when
    the one found is malformed, or when a provider fails. The official
    provider calls the first an authentication error; here it is a setup
    mistake on this site, reported like the others, and
    ``GatewayAuthenticationError`` means only that the Gateway rejected the
    credential.
    """
    configured = app_settings.API_KEY
    if callable(configured):
        return _call_provider(configured, "GATEWAY_REALTIME_API_KEY")
    if configured is not None and not isinstance(configured, str):
        raise GatewayConfigurationError(
            "GATEWAY_REALTIME_API_KEY must be a string or a callable, "
            f"not {type(configured).__name__}."
        )
    if configured and configured.strip():
        return _credential(configured.strip(), API_KEY, "GATEWAY_REALTIME_API_KEY")

    value = os.environ.get("AI_GATEWAY_API_KEY", "").strip()
    if value:
        return _credential(value, API_KEY, "AI_GATEWAY_API_KEY")

    if request is not None and app_settings.TRUST_VERCEL_OIDC_HEADER:
        token = request.META.get(OIDC_HEADER, "").strip()
        if token:
            return _credential(token, OIDC, "x-vercel-oidc-token header")

    token = os.environ.get("VERCEL_OIDC_TOKEN", "").strip()
    if token:
        return _credential(token, OIDC, "VERCEL_OIDC_TOKEN")

    raise GatewayConfigurationError(
        "No authentication provided: set GATEWAY_REALTIME_API_KEY or the AI_GATEWAY_API_KEY "
        "environment variable, or run with a Vercel OIDC token."
    )
