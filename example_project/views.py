"""The demo page: talk, dictate and read aloud through the Gateway (or its emulator).

The page mints nothing while it renders: each element asks its setup endpoint
for a secret when it is pressed, and so does the text chat when it connects.
It runs under a strict Content-Security-Policy (``script-src 'self'``), the
one docs/browser.md describes, so the demo shows that the elements need no
more.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from gateway_realtime.conf import app_settings
from gateway_realtime.exceptions import LimitsUnavailable
from gateway_realtime.limits import get_policy, quota_left, quota_window
from gateway_realtime.templatetags.gateway_realtime import json_config_block, secret_config

#: The ClientSecretIssuance changelist, filtered to one user with ``?user__id__exact=``.
AUDIT_CHANGELIST = "admin:gateway_realtime_clientsecretissuance_changelist"


def gateway_websocket_origin() -> str:
    """The Gateway's WebSocket origin (``wss://host``), which ``connect-src`` must allow."""
    parts = urlsplit(app_settings.BASE_URL)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}"


def content_security_policy() -> str:
    """No inline script or style anywhere; sockets to this site and the Gateway only."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"connect-src 'self' {gateway_websocket_origin()}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def quota_note(request: HttpRequest) -> dict[str, Any]:
    """What the page says about the user's quota (``GATEWAY_REALTIME_QUOTA``)."""
    try:
        left = quota_left(request.user, "realtime", request)
    except LimitsUnavailable:
        return {"unavailable": True}
    if left is None:
        return {"unlimited": True}
    policy = get_policy(request.user, "realtime", request)
    _, resets_in = quota_window(policy.quota_period)
    return {
        "left": left,
        "quota": policy.quota,
        "resets_at": timezone.now() + dt.timedelta(seconds=resets_in),
    }


def audit_url(request: HttpRequest) -> str | None:
    """The admin's list of this user's own mints, for staff who may see it."""
    user = request.user
    if not (user.is_staff and user.has_perm("gateway_realtime.view_clientsecretissuance")):
        return None
    return f"{reverse(AUDIT_CHANGELIST)}?{urlencode({'user__id__exact': user.pk})}"


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Render the page: the elements (and the relayed one), the chat, the quota, the audit link."""
    context = {
        "quota": quota_note(request),
        "audit_url": audit_url(request),
        # Relay mode's element, when the site runs under ASGI with the relay
        # (`make demo RELAY=1`); runserver cannot serve its WebSocket.
        "relay": getattr(settings, "DEMO_RELAY", False),
        # The text chat's config block without a secret (secret_config mints
        # nothing without a request): the JS helper fetches one from its
        # refreshUrl when the user presses Connect.
        "chat_config": json_config_block(
            secret_config(None, kind="realtime"), "gateway-realtime-realtime"
        ),
    }
    response = render(request, "example_project/home.html", context)
    response["Content-Security-Policy"] = content_security_policy()
    return response


def schema_page(request: HttpRequest) -> HttpResponse:
    """The mint endpoints as the OpenAPI schema describes them, rendered on the server.

    No script and no style of its own (the demo's strict Content-Security-Policy):
    each operation, its request fields, and every answer with its error types.
    """
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    components = schema["components"]["schemas"]

    def resolve(node: Any) -> Any:
        while isinstance(node, dict) and ("$ref" in node or "allOf" in node):
            node = (
                components[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node["allOf"][0]
            )
        return node

    operations = []
    for path_, methods in schema["paths"].items():
        for method, operation in methods.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            request_fields = sorted(resolve(body.get("schema", {})).get("properties", {}).items())
            answers = []
            for status, answer in sorted(operation["responses"].items()):
                content = answer.get("content", {}).get("application/json", {})
                shape = resolve(content.get("schema", {}))
                error = resolve(shape.get("properties", {}).get("error", {}))
                types = resolve(error.get("properties", {}).get("type", {})).get("enum", [])
                answers.append(
                    {
                        "status": status,
                        "fields": sorted(shape.get("properties", {})) if not types else [],
                        "types": types,
                        "retry_after": "Retry-After" in answer.get("headers", {}),
                    }
                )
            operations.append(
                {
                    "method": method.upper(),
                    "path": path_,
                    "summary": operation.get("summary", ""),
                    "request_fields": [
                        (name, field.get("type", "any")) for name, field in request_fields
                    ],
                    "answers": answers,
                }
            )
    response = render(
        request,
        "example_project/schema.html",
        {"info": schema["info"], "operations": operations},
    )
    response["Content-Security-Policy"] = content_security_policy()
    return response
