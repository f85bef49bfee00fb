"""Neither the site's credential nor a minted token may leak anywhere it should not.

Each scenario drives the endpoint through success or one failure path, with a
Gateway that echoes the credential wherever it can, then looks for the
credential in the response, every log record, every audit row and every
exception, and for the raw token in logs, audit rows and signal arguments.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import responses
from django.core import serializers
from django.test import RequestFactory
from django.views.debug import ExceptionReporter

from gateway_realtime.models import ClientSecretIssuance
from gateway_realtime.services import mint_client_secret
from gateway_realtime.signals import client_secret_failed, client_secret_issued
from tests.conftest import MINT_URL

pytestmark = pytest.mark.django_db

SECRET = "sk-LEAKCHECK-3c9d7e1f5a2b"
TOKEN = "vcst_LEAKTOKEN_0123456789abcdefghij"
REALTIME = "/gateway/realtime/"
JSON = {"Content-Type": "application/json"}


class SlowBody:
    """A raw body that times out after its first bytes."""

    def __init__(self, first: bytes):
        self.first = first

    def __call__(self) -> Any:
        import io

        first = self.first

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

        return io.BufferedReader(Raw())


def echo_error(error_type: str) -> str:
    return json.dumps(
        {
            "error": {
                "message": f"Bad credential {SECRET} for {error_type}",
                "type": error_type,
                "param": {"apiKey": SECRET, "modelId": SECRET, "ruleId": SECRET},
                "code": SECRET,
            },
            "generationId": SECRET,
        }
    )


def body(status: int, content: Any, **headers: str) -> Callable[[responses.RequestsMock], None]:
    def setup(mock: responses.RequestsMock) -> None:
        mock.add_callback(
            responses.POST,
            MINT_URL,
            callback=lambda request: (
                status,
                {**JSON, **headers},
                content() if callable(content) else content,
            ),
        )

    return setup


def raising(exc: Exception) -> Callable[[responses.RequestsMock], None]:
    def setup(mock: responses.RequestsMock) -> None:
        mock.add(responses.POST, MINT_URL, body=exc)

    return setup


def broken_provider() -> str:
    raise RuntimeError(f"vault refused {SECRET}")


SUCCESS = json.dumps({"token": TOKEN, "expiresAt": 4102444800})

# name -> (gateway setup, settings, expected status)
SCENARIOS: dict[str, tuple[Any, dict[str, Any], int]] = {
    "success": (body(200, SUCCESS), {}, 200),
    "authentication_error": (body(401, echo_error("authentication_error")), {}, 502),
    "invalid_request_error": (body(400, echo_error("invalid_request_error")), {}, 502),
    "rate_limit_exceeded": (
        body(429, echo_error("rate_limit_exceeded"), **{"Retry-After": "9"}),
        {},
        503,
    ),
    "model_not_found": (body(404, echo_error("model_not_found")), {}, 502),
    "not_found": (body(404, echo_error("not_found")), {}, 502),
    "forbidden": (body(403, echo_error("forbidden")), {}, 502),
    "unknown_type": (body(500, echo_error("mystery")), {}, 502),
    "malformed_error": (body(502, f"<html>proxy error for {SECRET}</html>"), {}, 502),
    "token_is_the_credential": (body(200, json.dumps({"token": SECRET})), {}, 502),
    "credential_in_bad_success": (
        body(200, json.dumps({"token": f"{SECRET} x", "echo": SECRET})),
        {},
        502,
    ),
    "bad_expiry_with_token": (body(200, json.dumps({"token": TOKEN, "expiresAt": -1})), {}, 502),
    "redirect": (body(307, "", Location=f"https://elsewhere.test/?k={SECRET}"), {}, 502),
    "oversized": (
        body(200, json.dumps({"token": TOKEN, "pad": "x" * 2000})),
        {"MAX_RESPONSE_BYTES": 512},
        502,
    ),
    "timeout": (raising(requests.exceptions.ReadTimeout(f"timeout {SECRET}")), {}, 504),
    "connection_error": (raising(requests.exceptions.ConnectionError(f"no {SECRET}")), {}, 502),
    "body_timeout": (
        body(200, SlowBody(f'{{"token": "{TOKEN}", "k": "{SECRET}'.encode())),
        {},
        504,
    ),
    "missing_credential": (body(200, SUCCESS), {"API_KEY": None}, 502),
    "provider_raises": (body(200, SUCCESS), {"API_KEY": broken_provider}, 502),
    "provider_returns_credential": (
        body(401, echo_error("authentication_error")),
        {"API_KEY": lambda: SECRET},
        502,
    ),
    "oidc_header": (
        body(401, echo_error("authentication_error")),
        {"API_KEY": None, "TRUST_VERCEL_OIDC_HEADER": True},
        502,
    ),
}


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def signal_kwargs() -> Iterator[list[dict[str, Any]]]:
    received: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        received.append(kwargs)

    client_secret_issued.connect(receiver, weak=False)
    client_secret_failed.connect(receiver, weak=False)
    yield received
    client_secret_issued.disconnect(receiver)
    client_secret_failed.disconnect(receiver)


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
    mock: responses.RequestsMock,
    settings: Any,
    captured_logs: Any,
    signal_kwargs: list[dict[str, Any]],
) -> None:
    setup, overrides, status = SCENARIOS[scenario]
    configure(settings, overrides)
    setup(mock)
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
    assert len(signal_kwargs) == 1
    error = signal_kwargs[0].get("error")
    if status == 200:
        assert error is None
    else:
        assert error is not None
        for text in exception_texts(error):
            assert SECRET not in text

    # The raw token: only in the 200 response, and nowhere else.
    assert TOKEN not in captured_logs.text()
    assert TOKEN not in audit_dump()
    assert TOKEN not in repr(signal_kwargs)
    assert TOKEN not in repr(vars(signal_kwargs[0]["issuance"]))
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
    scenario: str, mock: responses.RequestsMock, settings: Any
) -> None:
    setup, overrides, _ = SCENARIOS[scenario]
    configure(settings, overrides)
    setup(mock)
    report = raise_and_report()
    assert "mint_client_secret" in report  # the report does show the frames
    assert SECRET not in report
    assert TOKEN not in report
