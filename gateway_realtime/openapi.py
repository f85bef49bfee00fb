"""The mint endpoints in an OpenAPI 3 schema, through drf-spectacular (the ``openapi`` extra).

Imported by ``GatewayRealtimeConfig.ready`` when drf-spectacular is installed;
drf-spectacular then finds ``ClientSecretViewSchema`` among its view
extensions and describes every ``ClientSecretView`` (the realtime,
transcription and speech endpoints, and a site's subclasses) exactly:

- the request body, from ``MintRequestSerializer``;
- the 200 body the AI SDK's setup fetch expects: ``token``, ``url``,
  ``expiresAt`` (when the Gateway gave one), ``tools`` (when the site's tools
  function returns some);
- every error, by status, with its body ``{"error": {"type", "message",
  "param"?}}`` and the ``type`` values that status can carry, as the
  endpoint's one mapping answers them (``api_errors.endpoint_errors``);
- the ``Retry-After`` header of the 429s and 503s.
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiViewExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers

from gateway_realtime.api_errors import RETRY_AFTER_STATUSES, endpoint_errors
from gateway_realtime.serializers import MintRequestSerializer

SECRET_EXAMPLE = {
    "token": "vcst_example0000000000000000000000",
    "url": "wss://ai-gateway.vercel.sh/v4/ai/realtime?model=openai%2Fgpt-realtime-2",
    "expiresAt": 1796486400,
}


@functools.cache
def secret_serializer() -> Any:
    return inline_serializer(
        name="GatewayRealtimeClientSecret",
        fields={
            "token": serializers.CharField(help_text="The single-use client secret (vcst_...)."),
            "url": serializers.CharField(help_text="The Gateway's WebSocket URL for the secret."),
            "expiresAt": serializers.IntegerField(
                required=False, help_text="When the secret expires, in epoch seconds."
            ),
            "tools": tool_serializer(),
        },
    )


def tool_serializer() -> Any:
    """A tool as ``services.resolve_tools`` lets one through."""
    return inline_serializer(
        name="GatewayRealtimeTool",
        fields={
            "type": serializers.ChoiceField(choices=["function"]),
            "name": serializers.CharField(),
            "description": serializers.CharField(required=False),
            "parameters": serializers.DictField(help_text="The arguments' JSON schema."),
        },
        many=True,
        required=False,
        help_text="Tool definitions from GATEWAY_REALTIME_TOOLS_FUNCTION (when it returns some).",
    )


@functools.cache
def error_serializer(status: int, types: tuple[str, ...]) -> Any:
    detail = inline_serializer(
        name=f"GatewayRealtimeError{status}Detail",
        fields={
            "type": serializers.ChoiceField(choices=types, help_text="Stable: branch on it."),
            "message": serializers.CharField(help_text="For the site owner; never a secret."),
            "param": serializers.CharField(required=False, help_text="The offending field."),
        },
    )
    return inline_serializer(name=f"GatewayRealtimeError{status}", fields={"error": detail})


def responses() -> dict[int, Any]:
    answers: dict[int, Any] = {
        200: OpenApiResponse(
            secret_serializer(),
            description="A fresh client secret and the WebSocket URL it opens.",
            examples=[OpenApiExample("A client secret", value=SECRET_EXAMPLE)],
        )
    }
    for status, types in endpoint_errors().items():
        answers[status] = OpenApiResponse(
            error_serializer(status, tuple(types)),
            description="One of: " + ", ".join(f"`{name}`" for name in types) + ".",
        )
    return answers


class SameOriginSessionScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """The session cookie, checked same-origin (no CSRF token: docs/endpoint.md)."""

    target_class = "gateway_realtime.authentication.SameOriginSessionAuthentication"
    name = "sessionCookie"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}


class ClientSecretViewSchema(OpenApiViewExtension):  # type: ignore[no-untyped-call]
    target_class = "gateway_realtime.views.ClientSecretView"
    match_subclasses = True

    def view_replacement(self) -> type:
        target: Any = self.target_class

        @extend_schema(
            summary="Mint a client secret",
            description=(
                "Mints a short-lived, single-use AI Gateway client secret for the "
                "logged-in user: the setup endpoint of the AI SDK's "
                "experimental_useRealtime. Same-origin requests with the session cookie."
            ),
            request=MintRequestSerializer,
            responses=responses(),
            parameters=[
                OpenApiParameter(
                    "Retry-After",
                    OpenApiTypes.INT,
                    location=OpenApiParameter.HEADER,
                    response=sorted(RETRY_AFTER_STATUSES),
                    description="Seconds to wait before asking again.",
                )
            ],
        )
        class Described(target):  # type: ignore[misc]
            pass

        return Described
