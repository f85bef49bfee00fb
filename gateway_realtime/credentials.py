"""Which credential the server uses to mint, per the wire contract's section 2."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.views.decorators.debug import sensitive_variables

from gateway_realtime.conf import app_settings
from gateway_realtime.exceptions import GatewayAuthenticationError, GatewayConfigurationError

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
    return Credential(value=value.strip(), method=API_KEY, source=source)


@sensitive_variables("configured", "value", "token")
def resolve_credential(request: HttpRequest | None = None) -> Credential:
    """Return the credential for one mint, in the contract's order.

    1. ``GATEWAY_REALTIME_API_KEY``: a string, or a callable called now (a
       callable that gives no key is an error, never a fall-through).
    2. The ``AI_GATEWAY_API_KEY`` environment variable.
    3. The Vercel OIDC token: the request's ``x-vercel-oidc-token`` header when
       ``GATEWAY_REALTIME_TRUST_VERCEL_OIDC_HEADER`` allows it (by default only
       on Vercel), else the ``VERCEL_OIDC_TOKEN`` environment variable.

    Raises ``GatewayAuthenticationError`` when there is none, before anything
    is sent, and ``GatewayConfigurationError`` for a broken provider.
    """
    configured = app_settings.API_KEY
    if callable(configured):
        return _call_provider(configured, "GATEWAY_REALTIME_API_KEY")
    if isinstance(configured, str) and configured.strip():
        return Credential(
            value=configured.strip(), method=API_KEY, source="GATEWAY_REALTIME_API_KEY"
        )

    value = os.environ.get("AI_GATEWAY_API_KEY", "").strip()
    if value:
        return Credential(value=value, method=API_KEY, source="AI_GATEWAY_API_KEY")

    if request is not None and app_settings.TRUST_VERCEL_OIDC_HEADER:
        token = request.META.get(OIDC_HEADER, "").strip()
        if token:
            return Credential(value=token, method=OIDC, source="x-vercel-oidc-token header")

    token = os.environ.get("VERCEL_OIDC_TOKEN", "").strip()
    if token:
        return Credential(value=token, method=OIDC, source="VERCEL_OIDC_TOKEN")

    raise GatewayAuthenticationError(
        "No authentication provided: set GATEWAY_REALTIME_API_KEY or the AI_GATEWAY_API_KEY "
        "environment variable, or run with a Vercel OIDC token."
    )
