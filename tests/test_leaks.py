"""Neither the site's credential nor a minted token may leak anywhere it should not.

Each scenario drives the endpoint through success or one failure path, with a
Gateway that echoes the credential wherever it can, then looks for the
credential in the response, every log record, every audit row and every
exception, and for the raw token in logs, audit rows and signal arguments.
"""

from __future__ import annotations

import functools
import io
import sys
from collections.abc import Callable
from typing import Any

import pytest
import requests
import responses
from django.core import serializers
from django.test import RequestFactory
from django.views.debug import ExceptionReporter

from gateway_realtime.models import ClientSecretIssuance
from gateway_realtime.services import mint_client_secret
from tests.conftest import EXPIRES_AT, JSON, MINT_URL, answer, gateway_error

pytestmark = pytest.mark.django_db

SECRET = "sk-LEAKCHECK-3c9d7e1f5a2b"
TOKEN = "vcst_LEAKTOKEN_0123456789abcdefghij"
REALTIME = "/gateway/realtime/"

Setup = Callable[[responses.RequestsMock], None]


def answers(body: Any, status: int = 200, **headers: str) -> Setup:
    """A scenario's Gateway: ``answer`` with these arguments."""
    return functools.partial(answer, body=body, status=status, **headers)


def slow_body(first: bytes) -> Setup:
    """A Gateway whose 200 body times out after its first bytes."""

    class Raw(io.RawIOBase):
        sent = False

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            if not self.sent:
                self.sent = True
                buffer[: len(first)] = first
                return len(first)
            raise TimeoutError("timed out")

    def setup(mock: responses.RequestsMock) -> None:
        mock.add_callback(
            responses.POST,
            MINT_URL,
            callback=lambda request: (200, JSON, io.BufferedReader(Raw())),
        )

    return setup


def echo_error(error_type: str) -> dict[str, Any]:
    """An error body that echoes the credential in every field it has."""
    return gateway_error(
        error_type,
        f"Bad credential {SECRET} for {error_type}",
        param={"apiKey": SECRET, "modelId": SECRET, "ruleId": SECRET},
        code=SECRET,
        generation_id=SECRET,
    )


def broken_provider() -> str:
    raise RuntimeError(f"vault refused {SECRET}")


SUCCESS = {"token": TOKEN, "expiresAt": EXPIRES_AT}

# name -> (gateway setup, settings, expected status)
SCENARIOS: dict[str, tuple[Setup, dict[str, Any], int]] = {
    "success": (answers(SUCCESS), {}, 200),
    "authentication_error": (answers(echo_error("authentication_error"), 401), {}, 502),
    "invalid_request_error": (answers(echo_error("invalid_request_error"), 400), {}, 502),
    "rate_limit_exceeded": (
        answers(echo_error("rate_limit_exceeded"), 429, **{"Retry-After": "9"}),
        {},
        503,
    ),
    "model_not_found": (answers(echo_error("model_not_found"), 404), {}, 502),
    "not_found": (answers(echo_error("not_found"), 404), {}, 502),
    "forbidden": (answers(echo_error("forbidden"), 403), {}, 502),
    "unknown_type": (answers(echo_error("mystery"), 500), {}, 502),
    "malformed_error": (answers(f"<html>proxy error for {SECRET}</html>".encode(), 502), {}, 502),
    "token_is_the_credential": (answers({"token": SECRET}), {}, 502),
    "credential_in_bad_success": (answers({"token": f"{SECRET} x", "echo": SECRET}), {}, 502),
    "bad_expiry_with_token": (answers({"token": TOKEN, "expiresAt": -1}), {}, 502),
    "redirect": (answers(b"", 307, Location=f"https://elsewhere.test/?k={SECRET}"), {}, 502),
    "oversized": (
        answers({"token": TOKEN, "pad": "x" * 2000}),
        {"MAX_RESPONSE_BYTES": 512},
        502,
    ),
    "timeout": (answers(requests.exceptions.ReadTimeout(f"timeout {SECRET}")), {}, 504),
    "connection_error": (answers(requests.exceptions.ConnectionError(f"no {SECRET}")), {}, 502),
    "body_timeout": (slow_body(f'{{"token": "{TOKEN}", "k": "{SECRET}'.encode()), {}, 504),
    "missing_credential": (answers(SUCCESS), {"API_KEY": None}, 502),
    "provider_raises": (answers(SUCCESS), {"API_KEY": broken_provider}, 502),
    "provider_returns_credential": (
        answers(echo_error("authentication_error"), 401),
        {"API_KEY": lambda: SECRET},
        502,
    ),
    "oidc_header": (
        answers(echo_error("authentication_error"), 401),
        {"API_KEY": None, "TRUST_VERCEL_OIDC_HEADER": True},
        502,
    ),
}


def audit_dump() -> str:
    return serializers.serialize("json", ClientSecretIssuance.objects.all())


def exception_texts(error: BaseException) -> list[str]:
    texts = [str(error), repr(error), repr(error.args)]
    message = getattr(error, "message", None)
    if message:
        texts.append(str(message))
    return texts


def configure(settings: Any, overrides: dict[str, Any]) -> None:
    settings.GATEWAY_REALTIME_API_KEY = SECRET
    for name, value in overrides.items():
        setattr(settings, "GATEWAY_REALTIME_" + name, value)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_endpoint_leaks_nothing(
    scenario: str,
    same_origin: Any,
    gateway_mock: responses.RequestsMock,
    settings: Any,
    captured_logs: Any,
    mint_signals: list[tuple[str, dict[str, Any]]],
) -> None:
    setup, overrides, status = SCENARIOS[scenario]
    configure(settings, overrides)
    setup(gateway_mock)
    response = same_origin(REALTIME, HTTP_X_VERCEL_OIDC_TOKEN=SECRET, HTTP_USER_AGENT="tests")
    assert response.status_code == status, response.content

    # The credential: nowhere.
    assert SECRET.encode() not in response.content
    for name, value in response.items():
        assert SECRET not in name
        assert SECRET not in value
    assert captured_logs.records
    assert SECRET not in captured_logs.text()
    assert ClientSecretIssuance.objects.count() == 1
    assert SECRET not in audit_dump()
    [(_, sent)] = mint_signals
    error = sent.get("error")
    if status == 200:
        assert error is None
    else:
        assert error is not None
        for text in exception_texts(error):
            assert SECRET not in text

    # The raw token: only in the 200 response, and nowhere else.
    assert TOKEN not in captured_logs.text()
    assert TOKEN not in audit_dump()
    assert TOKEN not in repr(mint_signals)
    assert TOKEN not in repr(vars(sent["issuance"]))
    if status == 200:
        assert response.json()["token"] == TOKEN
    else:
        assert TOKEN.encode() not in response.content


def raise_and_report() -> str:
    """Mint like a site's own view that does not catch; return Django's error report."""
    request = RequestFactory().post(
        "/site/view/", HTTP_X_VERCEL_OIDC_TOKEN=SECRET, HTTP_AUTHORIZATION=f"Bearer {SECRET}"
    )
    try:
        mint_client_secret(user=None, kind="realtime", request=request)
    except Exception:
        exc_type, exc_value, tb = sys.exc_info()
    else:
        pytest.fail("the mint did not fail")
    reporter = ExceptionReporter(request, exc_type, exc_value, tb)
    return reporter.get_traceback_text() + reporter.get_traceback_html()


@pytest.mark.parametrize(
    "scenario",
    [
        "authentication_error",
        "rate_limit_exceeded",
        "malformed_error",
        "token_is_the_credential",
        "credential_in_bad_success",
        "bad_expiry_with_token",
        "redirect",
        "oversized",
        "timeout",
        "connection_error",
        "body_timeout",
        "provider_raises",
        "provider_returns_credential",
        "oidc_header",
    ],
)
def test_error_reports_leak_nothing(
    scenario: str, gateway_mock: responses.RequestsMock, settings: Any
) -> None:
    setup, overrides, _ = SCENARIOS[scenario]
    configure(settings, overrides)
    setup(gateway_mock)
    report = raise_and_report()
    assert "mint_client_secret" in report  # the report does show the frames
    assert SECRET not in report
    assert TOKEN not in report
