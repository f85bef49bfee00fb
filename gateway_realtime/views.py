"""The setup endpoints the AI SDK's ``experimental_useRealtime`` calls."""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway_realtime.authentication import SameOriginSessionAuthentication
from gateway_realtime.conf import app_settings
from gateway_realtime.exceptions import (
    GatewayAuthenticationError,
    GatewayConfigurationError,
    GatewayConnectionError,
    GatewayError,
    GatewayForbiddenError,
    GatewayModelNotFoundError,
    GatewayRateLimitError,
    GatewayResponseError,
    GatewayTimeoutError,
    MintRejected,
    MintRequestError,
    QuotaExceeded,
    RateLimited,
)
from gateway_realtime.limits import get_policy
from gateway_realtime.models import Source
from gateway_realtime.parsers import RequestTooLarge, StrictJSONParser
from gateway_realtime.protocol import Kind
from gateway_realtime.serializers import MintRequestSerializer
from gateway_realtime.services import IssuedSecret, mint_client_secret, resolve_model, resolve_tools
from gateway_realtime.throttling import ClientSecretRateThrottle

DEFAULT_RETRY_AFTER = 5


class UpstreamFailure(exceptions.APIException):
    """The Gateway (or this site's setup for it) failed; shown without secrets."""

    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = "The AI Gateway could not issue a client secret."
    default_code = "gateway_error"


class UpstreamUnavailable(UpstreamFailure):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE  # type: ignore[assignment]
    default_code = "gateway_rate_limit_exceeded"


class UpstreamTimeout(UpstreamFailure):
    status_code = status.HTTP_504_GATEWAY_TIMEOUT  # type: ignore[assignment]
    default_detail = "The AI Gateway did not answer in time."
    default_code = "gateway_timeout"


class LimitReached(exceptions.APIException):
    """A per-user limit refused the mint (429 with ``Retry-After``)."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = "Too many client secrets; try again later."
    default_code = "quota_exceeded"
    wait: int | None = None


class MintingUnavailable(exceptions.APIException):
    """The audit trail or the limits store is down: fail closed (503)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Client secrets cannot be issued right now; try again shortly."
    default_code = "audit_unavailable"
    wait: int | None = None


def describe_rejection(error: MintRejected) -> exceptions.APIException:
    """The response for a mint this site refused; no internals in the message."""
    wait = error.retry_after or DEFAULT_RETRY_AFTER
    failure: LimitReached | MintingUnavailable
    if isinstance(error, QuotaExceeded):
        failure = LimitReached(
            _("Your quota of client secrets is used up; try again in %(wait)s seconds.")
            % {"wait": wait},
            code=error.error_type,
        )
    elif isinstance(error, RateLimited):
        failure = LimitReached(
            _("Too many client secrets at once; try again in %(wait)s seconds.") % {"wait": wait},
            code=error.error_type,
        )
    else:
        failure = MintingUnavailable(code=error.error_type)
    failure.wait = wait
    return failure


def describe_gateway_error(error: GatewayError | GatewayConfigurationError) -> UpstreamFailure:
    """The response for a failed mint: a message for the site owner, no secrets.

    Upstream messages are not passed through (they are in the audit row); our
    own messages name settings, never their values.
    """
    if isinstance(error, GatewayConfigurationError):
        return UpstreamFailure(str(error), code="configuration_error")
    code = f"gateway_{error.error_type}"
    if isinstance(error, GatewayRateLimitError):
        wait = error.retry_after or DEFAULT_RETRY_AFTER
        failure: UpstreamFailure = UpstreamUnavailable(
            _("The AI Gateway is rate limiting this site; try again in %(wait)s seconds.")
            % {"wait": wait},
            code=code,
        )
        failure.wait = wait  # type: ignore[attr-defined]
        return failure
    if isinstance(error, GatewayTimeoutError):
        return UpstreamTimeout(code=code)
    if isinstance(error, GatewayAuthenticationError):
        if error.status_code is None:  # our own message: no credential configured
            return UpstreamFailure(error.message, code=code)
        message = _(
            "The AI Gateway did not accept this site's credential. Site owner: check "
            "GATEWAY_REALTIME_API_KEY or the AI_GATEWAY_API_KEY environment variable."
        )
    elif isinstance(error, GatewayModelNotFoundError):
        message = _("The AI Gateway does not know the configured model.")
    elif isinstance(error, GatewayForbiddenError):
        message = _("An AI Gateway policy rejected this request.")
    elif isinstance(error, GatewayConnectionError):
        message = _("The AI Gateway could not be reached.")
    elif isinstance(error, GatewayResponseError):
        message = _("The AI Gateway sent an answer this site cannot use.")
    else:
        message = _("The AI Gateway could not issue a client secret (HTTP %(status)s).") % {
            "status": error.status_code or "?"
        }
    return UpstreamFailure(message, code=code)


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
        # Before request.data: DRF reads a JSON body whole into memory, and past
        # DATA_UPLOAD_MAX_MEMORY_SIZE Django answers with an HTML 400.
        declared = str(request.META.get("CONTENT_LENGTH") or "0").strip()
        limit = app_settings.MAX_REQUEST_BYTES
        if not declared.isdigit() or int(declared) > limit:
            raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
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
        if isinstance(exc, MintRequestError):
            exc = exceptions.ValidationError({exc.param or "non_field_errors": [exc.message]})
        elif isinstance(exc, GatewayError | GatewayConfigurationError):
            exc = describe_gateway_error(exc)
        elif isinstance(exc, MintRejected):
            exc = describe_rejection(exc)
        response = super().handle_exception(exc)
        response.data = {"error": error_body(exc, response.data)}
        wait = getattr(exc, "wait", None)
        if wait:
            response["Retry-After"] = str(wait)
        return response

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        # A secret is for one user and one use: no cache may keep or share it.
        response["Cache-Control"] = "no-store, private"
        response["Pragma"] = "no-cache"
        vary = [v.strip() for v in response.get("Vary", "").split(",") if v.strip()]
        if "cookie" not in {v.lower() for v in vary}:
            vary.append("Cookie")
        response["Vary"] = ", ".join(vary)
        return response


def error_body(exc: Exception, data: Any) -> dict[str, Any]:
    """``{"type", "message"[, "param"]}`` for any exception DRF turned into ``data``."""
    if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict):
        param, messages = next(iter(exc.detail.items()))
        body: dict[str, Any] = {"type": "invalid_request", "message": _first_message(messages)}
        if param != "non_field_errors":
            body["param"] = param
        return body
    if isinstance(exc, exceptions.ValidationError):
        first = exc.detail[0] if isinstance(exc.detail, list) and exc.detail else exc.detail
        return {"type": "invalid_request", "message": str(first)}
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        detail = exc.detail if isinstance(exc.detail, str) else str(data)
        return {"type": str(code), "message": str(detail)}
    return {"type": "error", "message": str(data)}


def _first_message(detail: Any) -> str:
    while isinstance(detail, list | dict) and detail:
        detail = detail[0] if isinstance(detail, list) else next(iter(detail.values()))
    return str(detail)


class RealtimeClientSecretView(ClientSecretView):
    kind = Kind.REALTIME


class TranscriptionClientSecretView(ClientSecretView):
    kind = Kind.TRANSCRIPTION


class SpeechClientSecretView(ClientSecretView):
    kind = Kind.SPEECH
