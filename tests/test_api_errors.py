"""``gateway_realtime.api_errors``: one mapping from mint failures to HTTP answers.

The table in the module's docstring, row by row: each error's status, its
``type`` and the ``Retry-After`` DRF's exception handler derives from ``wait``.
What the endpoint and the tag make of it: tests/test_views.py,
tests/test_templatetags.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework import exceptions
from rest_framework.views import exception_handler

from gateway_realtime.api_errors import (
    DEFAULT_RETRY_AFTER,
    api_exception_for,
    error_body,
    error_payload,
)
from gateway_realtime.exceptions import (
    AuditUnavailable,
    GatewayAuthenticationError,
    GatewayBusy,
    GatewayConfigurationError,
    GatewayConnectionError,
    GatewayError,
    GatewayForbiddenError,
    GatewayInternalServerError,
    GatewayInvalidRequestError,
    GatewayModelNotFoundError,
    GatewayNotFoundError,
    GatewayRateLimitError,
    GatewayResponseError,
    GatewayTimeoutError,
    GatewayUnavailable,
    LimitsUnavailable,
    MintRequestError,
    QuotaExceeded,
)

SECRET = "sk-API-ERRORS-DISTINCTIVE-91c2"


def upstream(cls: type[GatewayError], status: int | None, **kwargs: Any) -> GatewayError:
    """A Gateway failure whose message echoes the credential, as a careless upstream may."""
    return cls(f"upstream echoed {SECRET}", status_code=status, **kwargs)


WAIT = DEFAULT_RETRY_AFTER

# case -> (error, status, type, Retry-After)
TABLE: dict[str, tuple[Exception, int, str, int | None]] = {
    "request": (
        MintRequestError("No such model here.", param="model", code="model_not_allowed"),
        400,
        "invalid_request",
        None,
    ),
    "quota": (QuotaExceeded("used up", retry_after=42), 429, "quota_exceeded", 42),
    "quota-no-wait": (QuotaExceeded("used up"), 429, "quota_exceeded", WAIT),
    "audit": (AuditUnavailable("down"), 503, "audit_unavailable", WAIT),
    "limits": (LimitsUnavailable("down", retry_after=3), 503, "limits_unavailable", 3),
    "busy": (GatewayBusy("full", retry_after=1), 503, "gateway_busy", 1),
    "busy-no-wait": (GatewayBusy("full"), 503, "gateway_busy", 1),
    "circuit-open": (GatewayUnavailable("open", retry_after=9), 503, "gateway_unavailable", 9),
    "configuration": (
        GatewayConfigurationError("Set GATEWAY_REALTIME_DEFAULT_MODELS."),
        502,
        "configuration_error",
        None,
    ),
    "gateway-rate-limit": (
        upstream(GatewayRateLimitError, 429, retry_after=12),
        503,
        "gateway_rate_limit_exceeded",
        12,
    ),
    "gateway-rate-limit-no-wait": (
        upstream(GatewayRateLimitError, 429),
        503,
        "gateway_rate_limit_exceeded",
        WAIT,
    ),
    # A Retry-After date in the past reads as 0 (tests/test_client.py).
    "gateway-rate-limit-zero-wait": (
        upstream(GatewayRateLimitError, 429, retry_after=0),
        503,
        "gateway_rate_limit_exceeded",
        WAIT,
    ),
    "timeout": (upstream(GatewayTimeoutError, None), 504, "gateway_timeout", None),
    "timeout-in-body": (upstream(GatewayTimeoutError, 200), 504, "gateway_timeout", None),
    **{
        cls.__name__: (upstream(cls, status), 502, f"gateway_{cls.error_type}", None)
        for cls, status in [
            (GatewayAuthenticationError, 401),
            (GatewayInvalidRequestError, 400),
            (GatewayModelNotFoundError, 404),
            (GatewayNotFoundError, 404),
            (GatewayForbiddenError, 403),
            (GatewayInternalServerError, 500),
            (GatewayResponseError, 200),
            (GatewayConnectionError, None),
            (GatewayError, 418),
        ]
    },
}
CASES = [pytest.param(*row, id=case) for case, row in TABLE.items()]


@pytest.mark.parametrize(("error", "status", "error_type", "retry_after"), CASES)
def test_each_error_maps_to_its_status_type_and_wait(
    error: Exception, status: int, error_type: str, retry_after: int | None
) -> None:
    exc = api_exception_for(error)
    assert exc is not None
    response = exception_handler(exc, {})
    assert response is not None
    assert response.status_code == status
    assert error_body(exc)["type"] == error_type
    assert error_payload(error)["type"] == error_type
    if retry_after is None:
        assert "Retry-After" not in response
    else:
        assert response["Retry-After"] == str(retry_after)


@pytest.mark.parametrize(("error", "status", "error_type", "retry_after"), CASES)
def test_messages_never_carry_an_upstream_credential(
    error: Exception, status: int, error_type: str, retry_after: int | None
) -> None:
    body = error_payload(error)
    assert body["message"]
    assert SECRET not in repr(body)


def test_the_429s_are_drf_throttled() -> None:
    assert isinstance(
        api_exception_for(QuotaExceeded("used up", retry_after=2)), exceptions.Throttled
    )


def test_a_gateway_rate_limit_names_the_wait() -> None:
    message = error_payload(GatewayRateLimitError("slow", status_code=429, retry_after=12))
    assert "12 seconds" in message["message"]


def test_a_request_error_keeps_its_message_and_names_its_param() -> None:
    body = error_payload(MintRequestError("This model is not available here.", param="model"))
    assert body == {
        "type": "invalid_request",
        "message": "This model is not available here.",
        "param": "model",
    }
    assert "param" not in error_payload(MintRequestError("No."))


def test_a_configuration_error_keeps_its_message() -> None:
    # Written by this app, naming settings and never their values.
    error = GatewayConfigurationError("Set GATEWAY_REALTIME_DEFAULT_MODELS.")
    assert error_payload(error) == {
        "type": "configuration_error",
        "message": "Set GATEWAY_REALTIME_DEFAULT_MODELS.",
    }


@pytest.mark.parametrize(
    "error", [ValueError("x"), RuntimeError("x"), KeyError("x"), exceptions.NotFound()]
)
def test_foreign_exceptions_are_not_mapped(error: Exception) -> None:
    assert api_exception_for(error) is None
    with pytest.raises(TypeError, match=type(error).__name__):
        error_payload(error)


# error_body: the ``error`` object of every answer ---------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        pytest.param(
            exceptions.ValidationError({"model": ["Not a valid string."]}),
            {"type": "invalid_request", "message": "Not a valid string.", "param": "model"},
            id="field-error",
        ),
        pytest.param(
            exceptions.ValidationError({"sessionConfig": {"voice": ["Not a string."]}}),
            {"type": "invalid_request", "message": "Not a string.", "param": "sessionConfig"},
            id="nested-field-error",
        ),
        pytest.param(
            exceptions.ValidationError({"non_field_errors": ["Bad body."]}),
            {"type": "invalid_request", "message": "Bad body."},
            id="non-field-error",
        ),
        pytest.param(
            exceptions.ValidationError(["First.", "Second."]),
            {"type": "invalid_request", "message": "First."},
            id="list",
        ),
        pytest.param(
            exceptions.ValidationError("Plain."),
            {"type": "invalid_request", "message": "Plain."},
            id="string",
        ),
        pytest.param(
            exceptions.NotAuthenticated(),
            {
                "type": "not_authenticated",
                "message": "Authentication credentials were not provided.",
            },
            id="not-authenticated",
        ),
        pytest.param(
            exceptions.MethodNotAllowed("PUT"),
            {"type": "method_not_allowed", "message": 'Method "PUT" not allowed.'},
            id="method",
        ),
        pytest.param(
            exceptions.ParseError("The request body is not valid JSON."),
            {"type": "parse_error", "message": "The request body is not valid JSON."},
            id="parse-error",
        ),
        pytest.param(
            exceptions.APIException("Custom.", code="custom_code"),
            {"type": "custom_code", "message": "Custom."},
            id="custom-code",
        ),
    ],
)
def test_error_body(exc: exceptions.APIException, expected: dict[str, Any]) -> None:
    assert error_body(exc) == expected


def test_busy_and_unavailable_each_say_what_happened() -> None:
    busy = error_payload(GatewayBusy("full", retry_after=1))["message"]
    unavailable = error_payload(GatewayUnavailable("open", retry_after=9))["message"]
    audit = error_payload(AuditUnavailable("down"))["message"]
    assert len({busy, unavailable, audit}) == 3
    assert "at once" in busy
    assert "AI Gateway" in unavailable and "9 seconds" in unavailable
