"""``gateway_realtime.views``: the setup endpoints the AI SDK's browser code calls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses
from django.db import connection
from django.test import Client
from django.urls import path, resolve, reverse
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny

from gateway_realtime.api_errors import DEFAULT_RETRY_AFTER
from gateway_realtime.models import ClientSecretIssuance, Outcome, Source
from gateway_realtime.views import RealtimeClientSecretView, SpeechClientSecretView
from tests.conftest import (
    EXPIRES_AT,
    TOKEN,
    SameOriginClient,
    answer,
    assert_private,
    gateway_error,
    sent_body,
)

pytestmark = pytest.mark.django_db

REALTIME = "/gateway/realtime/"


def assert_error(response: Any, status: int, error_type: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert {"type", "message"} <= set(body["error"]) <= {"type", "message", "param"}
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    if error_type is not None:
        assert body["error"]["type"] == error_type
    assert_private(response)
    return body["error"]


# URLs ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["realtime", "transcription", "speech"])
def test_url_names(kind: str) -> None:
    url = reverse(f"gateway_realtime:{kind}")
    assert url == f"/gateway/{kind}/"
    assert resolve(url).func.view_class.kind.value == kind


# Success -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "model", "route_kind", "path_"),
    [
        ("realtime", "openai/gpt-realtime-2", None, "realtime-model"),
        ("transcription", "openai/gpt-4o-transcribe", "transcription", "transcription-model"),
        ("speech", "elevenlabs/eleven-v3", "speech", "speech-model"),
    ],
)
def test_mint_each_kind(
    same_origin: SameOriginClient,
    gateway_mock: responses.RequestsMock,
    user: Any,
    kind: str,
    model: str,
    route_kind: str | None,
    path_: str,
) -> None:
    answer(gateway_mock)
    response = same_origin(reverse(f"gateway_realtime:{kind}"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    encoded = model.replace("/", "%2F")
    assert response.json() == {
        "token": TOKEN,
        "url": f"wss://gateway.test/v4/ai/{path_}?ai-model-id={encoded}",
        "expiresAt": EXPIRES_AT,
    }
    assert_private(response)
    expected = {"model": model} if route_kind is None else {"model": model, "routeKind": route_kind}
    assert sent_body(gateway_mock) == expected
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == Outcome.ISSUED
    assert row.source == Source.ENDPOINT
    assert row.user == user
    assert row.kind == kind
    assert row.ip_address == "127.0.0.1"


def test_the_ai_sdk_request_shape(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock
) -> None:
    answer(gateway_mock)
    config = {"instructions": "Be brief.", "voice": "alloy", "tools": [{"name": "x"}]}
    response = same_origin(REALTIME, {"sessionConfig": config})
    assert response.status_code == 200
    # sessionConfig is applied by the browser over the socket, never sent to mint.
    assert sent_body(gateway_mock) == {"model": "openai/gpt-realtime-2"}
    assert b"instructions" not in gateway_mock.calls[0].request.body


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"sessionConfig": None},
        {"model": None},
        {"model": "openai/gpt-realtime-2"},
        {"expiresAfterSeconds": None},
        {"unknownKey": 1},
    ],
)
def test_default_model(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock, body: Any
) -> None:
    answer(gateway_mock)
    response = same_origin(REALTIME, body)
    assert response.status_code == 200, response.content
    assert sent_body(gateway_mock) == {"model": "openai/gpt-realtime-2"}


def test_allowed_model(same_origin: SameOriginClient, gateway_mock: responses.RequestsMock) -> None:
    answer(gateway_mock)
    response = same_origin(REALTIME, {"model": "openai/gpt-realtime-mini"})
    assert response.status_code == 200
    assert sent_body(gateway_mock) == {"model": "openai/gpt-realtime-mini"}
    assert response.json()["url"].endswith("?ai-model-id=openai%2Fgpt-realtime-mini")
    assert ClientSecretIssuance.objects.get().model == "openai/gpt-realtime-mini"


def test_lifetime(same_origin: SameOriginClient, gateway_mock: responses.RequestsMock) -> None:
    answer(gateway_mock)
    assert same_origin(REALTIME, {"expiresAfterSeconds": 600}).status_code == 200
    assert same_origin(REALTIME, {"expiresAfterSeconds": 1}).status_code == 200
    assert sent_body(gateway_mock, 0) == {"model": "openai/gpt-realtime-2", "expiresIn": 600}
    assert sent_body(gateway_mock, 1) == {"model": "openai/gpt-realtime-2", "expiresIn": 1}


def test_default_lifetime(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_DEFAULT_LIFETIME = 90
    answer(gateway_mock)
    assert same_origin(REALTIME).status_code == 200
    assert sent_body(gateway_mock) == {"model": "openai/gpt-realtime-2", "expiresIn": 90}


BAD_LIFETIMES = ["60", 60.0, 1.5, True, False, -1, 0, 601, 10**30, [60], {}]


@pytest.mark.parametrize(
    ("url", "body", "param"),
    [
        # Models the site does not offer for the kind.
        (REALTIME, {"model": "openai/not-listed"}, "model"),
        (REALTIME, {"model": "OPENAI/GPT-REALTIME-2"}, "model"),
        (REALTIME, {"model": " openai/gpt-realtime-2"}, "model"),
        ("/gateway/speech/", {"model": "openai/gpt-realtime-mini"}, "model"),
        # Fields of the wrong type or size.
        (REALTIME, {"model": 5}, "model"),
        (REALTIME, {"model": ""}, "model"),
        (REALTIME, {"model": ["openai/gpt-realtime-2"]}, "model"),
        (REALTIME, {"model": "x" * 201}, "model"),
        (REALTIME, {"sessionConfig": "voice"}, "sessionConfig"),
        (REALTIME, {"sessionConfig": [1]}, "sessionConfig"),
        # Lifetimes that are not whole seconds within the maximum.
        *[(REALTIME, {"expiresAfterSeconds": v}, "expiresAfterSeconds") for v in BAD_LIFETIMES],
    ],
)
def test_refused_bodies(
    same_origin: SameOriginClient,
    gateway_mock: responses.RequestsMock,
    url: str,
    body: dict[str, Any],
    param: str,
) -> None:
    error = assert_error(same_origin(url, body), 400, "invalid_request")
    assert error["param"] == param
    assert len(gateway_mock.calls) == 0
    assert ClientSecretIssuance.objects.count() == 0


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'"x"', b"null", b"12", b'{"expiresAfterSeconds": NaN}', b"\xff"],
)
def test_bad_json(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock, raw: bytes
) -> None:
    assert_error(same_origin(REALTIME, raw), 400)
    assert len(gateway_mock.calls) == 0


def test_empty_body_is_an_empty_object(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock
) -> None:
    answer(gateway_mock)
    # Django's test client leaves out Content-Type with an empty body; fetch() does not.
    response = same_origin(REALTIME, b"", HTTP_ORIGIN=None, CONTENT_TYPE="application/json")
    assert response.status_code == 200
    assert sent_body(gateway_mock) == {"model": "openai/gpt-realtime-2"}


def test_body_too_large(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_MAX_REQUEST_BYTES = 100
    response = same_origin(REALTIME, {"sessionConfig": {"instructions": "x" * 200}})
    assert_error(response, 413)
    assert len(gateway_mock.calls) == 0


def test_no_expiry(same_origin: SameOriginClient, gateway_mock: responses.RequestsMock) -> None:
    answer(gateway_mock, {"token": TOKEN, "expiresAt": None})
    response = same_origin(REALTIME)
    assert response.status_code == 200
    assert set(response.json()) == {"token", "url"}


# Tools -------------------------------------------------------------------------

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
    {"type": "function", "name": "noop", "parameters": {}},
]
hook_calls: list[dict[str, Any]] = []


def tools_hook(**kwargs: Any) -> Any:
    hook_calls.append(kwargs)
    return TOOLS


def test_tools(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock, settings: Any, user: Any
) -> None:
    hook_calls.clear()
    settings.GATEWAY_REALTIME_TOOLS_FUNCTION = "tests.test_views.tools_hook"
    answer(gateway_mock)
    response = same_origin(REALTIME, {"model": "openai/gpt-realtime-mini"})
    assert response.status_code == 200
    assert response.json() == {
        "token": TOKEN,
        "url": "wss://gateway.test/v4/ai/realtime-model?ai-model-id=openai%2Fgpt-realtime-mini",
        "expiresAt": EXPIRES_AT,
        "tools": TOOLS,
    }
    assert len(hook_calls) == 1
    assert hook_calls[0]["user"] == user
    assert hook_calls[0]["kind"] == "realtime"
    assert hook_calls[0]["model"] == "openai/gpt-realtime-mini"
    assert hook_calls[0]["request"].path == REALTIME
    assert "tools" not in sent_body(gateway_mock)


@pytest.mark.parametrize("result", [None, []])
def test_no_tools(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock, settings: Any, result: Any
) -> None:
    settings.GATEWAY_REALTIME_TOOLS_FUNCTION = lambda **kwargs: result
    answer(gateway_mock)
    response = same_origin(REALTIME)
    assert response.status_code == 200
    assert "tools" not in response.json()


@pytest.mark.parametrize(
    "result",
    [
        {"type": "function"},
        [{"type": "function", "name": "a"}],
        [{"type": "function", "name": "", "parameters": {}}],
        [{"name": "a", "parameters": {}}],
        "tools",
    ],
)
def test_invalid_tools_hook_output(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock, settings: Any, result: Any
) -> None:
    settings.GATEWAY_REALTIME_TOOLS_FUNCTION = lambda **kwargs: result
    answer(gateway_mock)
    error = assert_error(same_origin(REALTIME), 502, "configuration_error")
    assert "GATEWAY_REALTIME_TOOLS_FUNCTION" in error["message"]
    assert len(gateway_mock.calls) == 0
    assert ClientSecretIssuance.objects.count() == 0


# Who may mint --------------------------------------------------------------------


def test_anonymous(same_origin_as: Any, gateway_mock: responses.RequestsMock) -> None:
    response = same_origin_as(None)(REALTIME, {})
    assert response.status_code in (401, 403)
    assert_error(response, response.status_code, "not_authenticated")
    assert len(gateway_mock.calls) == 0
    assert ClientSecretIssuance.objects.count() == 0


def test_inactive_user(
    same_origin: SameOriginClient, user: Any, gateway_mock: responses.RequestsMock
) -> None:
    user.is_active = False
    user.save()
    response = same_origin(REALTIME, {})
    assert response.status_code in (401, 403)
    assert len(gateway_mock.calls) == 0


class OpenRealtimeView(RealtimeClientSecretView):
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = [AllowAny]


class PlainSessionSpeechView(SpeechClientSecretView):
    authentication_classes = [SessionAuthentication]


urlpatterns = [
    path("open/", OpenRealtimeView.as_view()),
    path("plain/", PlainSessionSpeechView.as_view()),
]


@pytest.mark.urls("tests.test_views")
def test_permission_classes_can_be_overridden(client: Client, gateway_mock: responses.RequestsMock):
    answer(gateway_mock)
    response = client.post("/open/", data="{}", content_type="application/json")
    assert response.status_code == 200
    assert response.json()["token"] == TOKEN
    row = ClientSecretIssuance.objects.get()
    assert row.user is None
    assert row.outcome == Outcome.ISSUED
    assert_private(response)


@pytest.mark.urls("tests.test_views")
def test_authentication_classes_can_be_overridden(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock
) -> None:
    answer(gateway_mock)
    # Plain SessionAuthentication: the same-origin replacement is gone, so the
    # AI SDK's token-less fetch is refused again.
    response = same_origin("/plain/", {})
    assert response.status_code == 403
    assert len(gateway_mock.calls) == 0


# Methods -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "options"])
def test_other_methods(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock, method: str
) -> None:
    response = same_origin(REALTIME, {}, method=method.upper())
    assert_error(response, 405, "method_not_allowed")
    assert len(gateway_mock.calls) == 0


# Gateway failures --------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [({"Retry-After": "12"}, 12), ({}, DEFAULT_RETRY_AFTER)],
    ids=["the-gateways-wait", "no-retry-after"],
)
def test_gateway_rate_limit(
    same_origin: SameOriginClient,
    gateway_mock: responses.RequestsMock,
    headers: dict[str, str],
    retry_after: int,
) -> None:
    answer(gateway_mock, gateway_error("rate_limit_exceeded"), 429, **headers)
    response = same_origin(REALTIME)
    error = assert_error(response, 503, "gateway_rate_limit_exceeded")
    assert response["Retry-After"] == str(retry_after)
    assert f"{retry_after} seconds" in error["message"]


@pytest.mark.parametrize(
    "exc", [requests.exceptions.ReadTimeout("slow"), requests.exceptions.ConnectTimeout("slow")]
)
def test_gateway_timeout(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock, exc: Exception
) -> None:
    answer(gateway_mock, exc)
    assert_error(same_origin(REALTIME), 504, "gateway_timeout")
    assert ClientSecretIssuance.objects.get().error_type == "timeout"


@pytest.mark.parametrize(
    ("status", "body", "error_type", "hint"),
    [
        (401, gateway_error("authentication_error"), "authentication_error", "API_KEY"),
        (400, gateway_error("invalid_request_error"), "invalid_request_error", "HTTP 400"),
        (404, gateway_error("model_not_found"), "model_not_found", "model"),
        (404, gateway_error("not_found"), "not_found", "HTTP 404"),
        (403, gateway_error("forbidden"), "forbidden", "policy"),
        (500, gateway_error("internal_server_error"), "internal_server_error", "HTTP 500"),
        (418, gateway_error("teapot"), "internal_server_error", "HTTP 418"),
        (502, b"<html>bad gateway</html>", "response_error", "answer"),
        (200, {"token": ""}, "response_error", "answer"),
        (302, b"", "response_error", "answer"),
    ],
)
def test_gateway_errors(
    same_origin: SameOriginClient,
    gateway_mock: responses.RequestsMock,
    status: int,
    body: Any,
    error_type: str,
    hint: str,
) -> None:
    answer(gateway_mock, body, status, Location="https://elsewhere.test/")
    error = assert_error(same_origin(REALTIME), 502, f"gateway_{error_type}")
    assert hint in error["message"]
    # The upstream message is in the audit row, not in the response.
    assert "upstream says no" not in error["message"]
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == Outcome.FAILED
    assert row.error_type == error_type
    assert row.upstream_status == status


def test_gateway_unreachable(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock
) -> None:
    answer(gateway_mock, requests.exceptions.ConnectionError("refused"))
    error = assert_error(same_origin(REALTIME), 502, "gateway_connection_error")
    assert "could not be reached" in error["message"]


def test_missing_credential(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock, settings: Any
):
    settings.GATEWAY_REALTIME_API_KEY = None
    error = assert_error(same_origin(REALTIME), 502, "configuration_error")
    assert "No authentication provided" in error["message"]
    assert "GATEWAY_REALTIME_API_KEY" in error["message"]
    assert len(gateway_mock.calls) == 0
    assert ClientSecretIssuance.objects.get().outcome == Outcome.FAILED


def test_broken_credential_function(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_API_KEY = lambda: None
    error = assert_error(same_origin(REALTIME), 502, "configuration_error")
    assert "GATEWAY_REALTIME_API_KEY" in error["message"]
    assert len(gateway_mock.calls) == 0


def test_no_default_model(
    same_origin: SameOriginClient, gateway_mock: responses.RequestsMock, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_DEFAULT_MODELS = {"speech": "elevenlabs/eleven-v3"}
    error = assert_error(same_origin(REALTIME), 502, "configuration_error")
    assert "GATEWAY_REALTIME_DEFAULT_MODELS" in error["message"]
    assert len(gateway_mock.calls) == 0


# Transactions --------------------------------------------------------------------


@pytest.fixture
def atomic_requests() -> Iterator[None]:
    old = connection.settings_dict["ATOMIC_REQUESTS"]
    connection.settings_dict["ATOMIC_REQUESTS"] = True
    yield
    connection.settings_dict["ATOMIC_REQUESTS"] = old


def test_views_opt_out_of_atomic_requests() -> None:
    for kind in ("realtime", "transcription", "speech"):
        func = resolve(reverse(f"gateway_realtime:{kind}")).func
        assert "default" in func._non_atomic_requests


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("body", "upstream_status", "status", "outcome"),
    [
        (None, 200, 200, Outcome.ISSUED),
        (gateway_error("authentication_error"), 401, 502, Outcome.FAILED),
    ],
    ids=["issued", "failed"],
)
def test_the_row_is_recorded_under_atomic_requests(
    atomic_requests: None,
    same_origin: SameOriginClient,
    gateway_mock: responses.RequestsMock,
    body: Any,
    upstream_status: int,
    status: int,
    outcome: Outcome,
) -> None:
    answer(gateway_mock, body, upstream_status)
    assert same_origin(REALTIME).status_code == status
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == outcome
    assert row.upstream_status == upstream_status
