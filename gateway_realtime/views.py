"""The setup endpoints the AI SDK's ``experimental_useRealtime`` calls."""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.db import transaction
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.translation import gettext as _
from rest_framework import exceptions
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway_realtime.api_errors import api_exception_for, error_body
from gateway_realtime.authentication import SameOriginSessionAuthentication
from gateway_realtime.limits import get_policy
from gateway_realtime.models import Source
from gateway_realtime.parsers import StrictJSONParser
from gateway_realtime.protocol import Kind
from gateway_realtime.serializers import MintRequestSerializer
from gateway_realtime.services import IssuedSecret, mint_client_secret, resolve_model, resolve_tools
from gateway_realtime.throttling import ClientSecretRateThrottle


class ClientSecretView(APIView):
    """``POST`` mints one client secret for the logged-in user.

    Request (JSON, every key optional): ``sessionConfig`` (accepted, not used
    here), ``model`` (one of the kind's allowed models), ``expiresAfterSeconds``.
    Response: ``{"token", "url", "expiresAt"?, "tools"?}``, the shape the AI
    SDK's realtime setup fetch requires. Errors: ``{"error": {"type", "message"}}``.

    Subclass to change policy: ``authentication_classes``,
    ``permission_classes``, ``get_kind``, ``get_model``, ``get_lifetime``,
    ``get_tools``.
    """

    kind: ClassVar[Kind] = Kind.REALTIME
    authentication_classes = [SameOriginSessionAuthentication]
    permission_classes: ClassVar[list[type[BasePermission]]] = [IsAuthenticated]  # type: ignore[misc]
    parser_classes = [StrictJSONParser]
    renderer_classes = [JSONRenderer]
    throttle_classes: ClassVar[list[Any]] = [ClientSecretRateThrottle]  # type: ignore[misc]
    http_method_names = ["post"]

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        view = super().as_view(**initkwargs)
        # Audit rows must commit even when a mint fails, so this view never
        # runs inside ATOMIC_REQUESTS' transaction.
        for alias in settings.DATABASES:
            view = transaction.non_atomic_requests(using=alias)(view)
        return view

    # Hooks -----------------------------------------------------------------

    def get_kind(self) -> Kind:
        return Kind(self.kind)

    def get_model(self, data: dict[str, Any]) -> str | None:
        """The model the client asked for (``None``: the kind's default)."""
        return data.get("model")

    def get_lifetime(self, data: dict[str, Any]) -> int | None:
        return data.get("expiresAfterSeconds")

    def get_tools(self, model: str) -> list[dict[str, Any]] | None:
        return resolve_tools(
            request=self.request._request,
            user=self.request.user,
            kind=self.get_kind(),
            model=model,
        )

    def mint(self, data: dict[str, Any]) -> IssuedSecret:
        return mint_client_secret(
            user=self.request.user,
            kind=self.get_kind(),
            model=self.get_model(data),
            expires_in=self.get_lifetime(data),
            request=self.request._request,
            source=Source.ENDPOINT,
        )

    # Handlers --------------------------------------------------------------

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # The parser caps the body at GATEWAY_REALTIME_MAX_REQUEST_BYTES.
        if not isinstance(request.data, dict):
            raise exceptions.ParseError(_("The request body must be a JSON object."))
        serializer = MintRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # Tools are resolved first so a broken hook does not waste a mint.
        kind = self.get_kind()
        policy = get_policy(request.user, kind, request._request)
        tools = self.get_tools(resolve_model(kind, self.get_model(data), policy))
        secret = self.mint(data)
        return Response(secret.as_setup_response(tools))

    def handle_exception(self, exc: Exception) -> Response:
        exc = api_exception_for(exc) or exc
        response = super().handle_exception(exc)
        if isinstance(exc, exceptions.APIException):
            response.data = {"error": error_body(exc)}
        return response

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        # A secret is for one user and one use: no cache may keep or share it.
        patch_cache_control(response, no_store=True, private=True)
        response["Pragma"] = "no-cache"
        patch_vary_headers(response, ["Cookie"])
        return response


class RealtimeClientSecretView(ClientSecretView):
    kind = Kind.REALTIME


class TranscriptionClientSecretView(ClientSecretView):
    kind = Kind.TRANSCRIPTION


class SpeechClientSecretView(ClientSecretView):
    kind = Kind.SPEECH
