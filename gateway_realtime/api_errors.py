"""What a browser is told when a mint fails: one mapping from errors to HTTP.

The endpoint and the template tag both go through ``api_exception_for``, so a
failure reads the same wherever it happens: a status, a stable ``type`` a page
can branch on, and a message for the site owner that never holds a secret.
Upstream messages are not passed on (they are in the audit row); our own
messages name settings, never their values.

=======================================  ======  =================================
error                                    status  ``type``
=======================================  ======  =================================
``MintRequestError``                     400     ``invalid_request`` (+ ``param``)
``QuotaExceeded``                        429     ``quota_exceeded``, Retry-After
``AuditUnavailable``                     503     ``audit_unavailable``, Retry-After
``LimitsUnavailable``                    503     ``limits_unavailable``, Retry-After
``GatewayBusy``                          503     ``gateway_busy``, Retry-After 1
``GatewayUnavailable``                   503     ``gateway_unavailable``, Retry-After
                                                 (what is left of the cool-down)
``GatewayConfigurationError``            502     ``configuration_error``
``GatewayAccessPolicyDeniedError``       403     ``gateway_access_policy_denied``
``GatewayRateLimitError``                503     ``gateway_rate_limit_exceeded``,
                                                 Retry-After
``GatewayTimeoutError``                  504     ``gateway_timeout``
any other ``GatewayError``               502     ``gateway_<error_type>``
=======================================  ======  =================================

``Retry-After`` is set by DRF's exception handler from each exception's
``wait``; the 429s are ``Throttled`` subclasses, as DRF's own throttles raise.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework import exceptions, status

from gateway_realtime.exceptions import (
    GatewayAccessPolicyDeniedError,
    GatewayAuthenticationError,
    GatewayBusy,
    GatewayConfigurationError,
    GatewayConnectionError,
    GatewayError,
    GatewayForbiddenError,
    GatewayModelNotFoundError,
    GatewayRateLimitError,
    GatewayResponseError,
    GatewayTimeoutError,
    GatewayUnavailable,
    MintRejected,
    MintRequestError,
    QuotaExceeded,
)

#: Seconds a client is told to wait when the cause gives no figure.
DEFAULT_RETRY_AFTER = 5


class GatewayFailed(exceptions.APIException):
    """The Gateway (or this site's setup for it) could not issue a secret."""

    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = "The AI Gateway could not issue a client secret."
    default_code = "gateway_error"


class GatewayRateLimited(GatewayFailed):
    """The Gateway is rate limiting this site; ``wait`` becomes ``Retry-After``."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE  # type: ignore[assignment]
    default_code = "gateway_rate_limit_exceeded"

    def __init__(self, detail: str, *, wait: int, code: str | None = None) -> None:
        super().__init__(detail, code)
        self.wait = wait


class GatewayPolicyDenied(GatewayFailed):
    """A Gateway access policy does not allow the model or provider (403).

    The policy ids and the removed models and providers are in the audit
    row, not in this answer.
    """

    status_code = status.HTTP_403_FORBIDDEN  # type: ignore[assignment]
    default_detail = "An AI Gateway access policy does not allow this model."
    default_code = "gateway_access_policy_denied"


class GatewayTimedOut(GatewayFailed):
    status_code = status.HTTP_504_GATEWAY_TIMEOUT  # type: ignore[assignment]
    default_detail = "The AI Gateway did not answer in time."
    default_code = "gateway_timeout"


class QuotaUsedUp(exceptions.Throttled):
    """The user's quota of mints is used up (429, ``Retry-After``)."""

    default_detail = "Your quota of client secrets is used up."
    default_code = "quota_exceeded"


class MintingUnavailable(exceptions.APIException):
    """Minting is refused here for now (503, ``Retry-After``).

    The audit trail or the limits store is down (minting fails closed), the
    bulkhead is full, or the circuit breaker is open.
    """

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Client secrets cannot be issued right now; try again shortly."
    default_code = "audit_unavailable"

    def __init__(self, detail: str | None = None, *, wait: int, code: str) -> None:
        super().__init__(detail, code)
        self.wait = wait


def api_exception_for(error: Exception) -> exceptions.APIException | None:
    """The ``APIException`` to answer with for a mint failure, or ``None`` if not ours."""
    if isinstance(error, MintRequestError):
        return exceptions.ValidationError(
            {error.param or "non_field_errors": [error.message]}, code=error.code
        )
    if isinstance(error, QuotaExceeded):
        return QuotaUsedUp(wait=error.retry_after or DEFAULT_RETRY_AFTER)
    if isinstance(error, GatewayBusy):
        return MintingUnavailable(
            _("Too many client secrets are being issued at once; try again in a second."),
            wait=error.retry_after or 1,
            code=error.error_type,
        )
    if isinstance(error, GatewayUnavailable):
        wait = error.retry_after or DEFAULT_RETRY_AFTER
        message = _(
            "The AI Gateway has been failing, so client secrets are paused; "
            "try again in %(wait)s seconds."
        )
        return MintingUnavailable(message % {"wait": wait}, wait=wait, code=error.error_type)
    if isinstance(error, MintRejected):  # the audit trail or the limits store is down
        return MintingUnavailable(
            wait=error.retry_after or DEFAULT_RETRY_AFTER, code=error.error_type
        )
    if isinstance(error, GatewayConfigurationError):
        return GatewayFailed(str(error), code=error.error_type)
    if isinstance(error, GatewayError):
        return _gateway_failure(error)
    return None


def _gateway_failure(error: GatewayError) -> GatewayFailed:
    code = f"gateway_{error.error_type}"
    if isinstance(error, GatewayRateLimitError):
        wait = error.retry_after or DEFAULT_RETRY_AFTER
        message = _("The AI Gateway is rate limiting this site; try again in %(wait)s seconds.")
        return GatewayRateLimited(message % {"wait": wait}, wait=wait, code=code)
    if isinstance(error, GatewayTimeoutError):
        return GatewayTimedOut(code=code)
    if isinstance(error, GatewayAccessPolicyDeniedError):
        return GatewayPolicyDenied(code=code)
    if isinstance(error, GatewayAuthenticationError):
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
    return GatewayFailed(message, code=code)


def error_body(exc: exceptions.APIException) -> dict[str, Any]:
    """``{"type", "message"[, "param"]}``: the ``error`` object of every error response."""
    detail: Any = exc.detail
    param = None
    if isinstance(detail, dict):
        param, detail = next(iter(detail.items()))
    while isinstance(detail, list | dict) and detail:
        detail = detail[0] if isinstance(detail, list) else next(iter(detail.values()))
    if isinstance(exc, exceptions.ValidationError):
        error_type = "invalid_request"
    else:
        error_type = getattr(detail, "code", None) or exc.default_code
    body: dict[str, Any] = {"type": str(error_type), "message": str(detail)}
    if param is not None and param != "non_field_errors":
        body["param"] = param
    return body


def error_payload(error: Exception) -> dict[str, Any]:
    """``error_body`` for a mint failure, for callers outside a DRF view (the tag)."""
    exc = api_exception_for(error)
    if exc is None:
        raise TypeError(f"{type(error).__name__} is not a mint failure")
    return error_body(exc)


#: The view's own refusals, before any mint: (status, type). tests/test_docs.py
#: makes each of them for real.
VIEW_REFUSALS: tuple[tuple[int, str], ...] = (
    (400, "parse_error"),
    (403, "not_authenticated"),
    (403, "cross_site_request"),
    (405, "method_not_allowed"),
    (413, "request_too_large"),
    (415, "unsupported_media_type"),
    (429, "rate_limited"),
)

#: Statuses whose answers carry ``Retry-After`` (seconds).
RETRY_AFTER_STATUSES = frozenset({429, 503})


def example_failures() -> list[Exception]:
    """One failure of each kind a mint can raise (the OpenAPI schema and the docs test)."""
    from gateway_realtime import exceptions as errors

    return [
        errors.MintRequestError("The model is not allowed.", param="model"),
        errors.QuotaExceeded("used up", retry_after=60),
        errors.AuditUnavailable("down"),
        errors.LimitsUnavailable("down"),
        errors.GatewayBusy("busy"),
        errors.GatewayUnavailable("open"),
        errors.GatewayConfigurationError("No credential is configured."),
        errors.GatewayTimeoutError("slow"),
        errors.GatewayConnectionError("refused"),
        errors.GatewayResponseError("not json"),
        errors.GatewayInternalServerError("upstream"),
        *(cls("upstream") for cls in errors.ERROR_TYPES.values()),
    ]


def endpoint_errors() -> dict[int, list[str]]:
    """Every error ``type`` the mint endpoints answer, by status: the mapping's and the view's."""
    pairs = set(VIEW_REFUSALS)
    for failure in example_failures():
        pairs.add(_status_and_type(failure))
    by_status: dict[int, list[str]] = {}
    for status_code, error_type in sorted(pairs):
        by_status.setdefault(status_code, []).append(error_type)
    return by_status


def _status_and_type(failure: Exception) -> tuple[int, str]:
    exc = api_exception_for(failure)
    if exc is None:
        raise TypeError(f"{type(failure).__name__} is not a mint failure")
    return exc.status_code, str(error_body(exc)["type"])
