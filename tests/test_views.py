"""``gateway_realtime.views``: the setup endpoints the AI SDK's browser code calls."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import responses
from django.db import connection
from django.test import Client
from django.urls import path, resolve, reverse
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny

from gateway_realtime.models import ClientSecretIssuance, Outcome, Source
from gateway_realtime.views import RealtimeClientSecretView, SpeechClientSecretView
from tests.conftest import MINT_URL

pytestmark = pytest.mark.django_db

TOKEN = "vcst_views_0123456789abcdefghijklmnop"
EXPIRES_AT = 4102444800
JSON = {"Content-Type": "application/json"}
REALTIME = "/gateway/realtime/"

Post = Callable[..., Any]


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def answer(mock: responses.RequestsMock, body: Any = None, status: int = 200, **headers: str):
    if body is None:
        body = {"token": TOKEN, "expiresAt": EXPIRES_AT}
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    mock.add(responses.POST, MINT_URL, body=content, status=status, headers={**JSON, **headers})


def gateway_error(error_type: Any, message: str = "upstream says no") -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type}, "generationId": None}


def sent_body(mock: responses.RequestsMock, index: int = 0) -> dict[str, Any]:
    return json.loads(mock.calls[index].request.body)


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


def assert_private(response: Any) -> None:
    assert response["Cache-Control"] == "no-store, private"
    vary = [v.strip().lower() for v in response["Vary"].split(",")]
    assert "cookie" in vary


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
    same_origin: Post,
    mock: responses.RequestsMock,
    user: Any,
    kind: str,
    model: str,
    route_kind: str | None,
    path_: str,
) -> None:
    answer(mock)
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
    assert sent_body(mock) == expected
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == Outcome.ISSUED
    assert row.source == Source.ENDPOINT
    assert row.user == user
    assert row.kind == kind
    assert row.ip_address == "127.0.0.1"


def test_the_ai_sdk_request_shape(same_origin: Post, mock: responses.RequestsMock) -> None:
    answer(mock)
    config = {"instructions": "Be brief.", "voice": "alloy", "tools": [{"name": "x"}]}
    response = same_origin(REALTIME, {"sessionConfig": config})
    assert response.status_code == 200
    # sessionConfig is applied by the browser over the socket, never sent to mint.
    assert sent_body(mock) == {"model": "openai/gpt-realtime-2"}
    assert b"instructions" not in mock.calls[0].request.body


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
def test_default_model(same_origin: Post, mock: responses.RequestsMock, body: Any) -> None:
    answer(mock)
    response = same_origin(REALTIME, body)
    assert response.status_code == 200, response.content
    assert sent_body(mock) == {"model": "openai/gpt-realtime-2"}


def test_allowed_model(same_origin: Post, mock: responses.RequestsMock) -> None:
    answer(mock)
    response = same_origin(REALTIME, {"model": "openai/gpt-realtime-mini"})
    assert response.status_code == 200
    assert sent_body(mock) == {"model": "openai/gpt-realtime-mini"}
    assert response.json()["url"].endswith("?ai-model-id=openai%2Fgpt-realtime-mini")
    assert ClientSecretIssuance.objects.get().model == "openai/gpt-realtime-mini"


@pytest.mark.parametrize(
    ("url", "model"),
    [
        (REALTIME, "openai/not-listed"),
        (REALTIME, "OPENAI/GPT-REALTIME-2"),
        (REALTIME, " openai/gpt-realtime-2"),
        ("/gateway/speech/", "openai/gpt-realtime-mini"),
    ],
)
def test_unlisted_model(same_origin: Post, mock: responses.RequestsMock, url: str, model: str):
    response = same_origin(url, {"model": model})
    error = assert_error(response, 400, "invalid_request")
    assert error["param"] == "model"
    assert len(mock.calls) == 0
    assert ClientSecretIssuance.objects.count() == 0


def test_lifetime(same_origin: Post, mock: responses.RequestsMock) -> None:
    answer(mock)
    assert same_origin(REALTIME, {"expiresAfterSeconds": 600}).status_code == 200
    assert same_origin(REALTIME, {"expiresAfterSeconds": 1}).status_code == 200
    assert sent_body(mock, 0) == {"model": "openai/gpt-realtime-2", "expiresIn": 600}
    assert sent_body(mock, 1) == {"model": "openai/gpt-realtime-2", "expiresIn": 1}


def test_default_lifetime(same_origin: Post, mock: responses.RequestsMock, settings: Any) -> None:
    settings.GATEWAY_REALTIME_DEFAULT_LIFETIME = 90
    answer(mock)
    assert same_origin(REALTIME).status_code == 200
    assert sent_body(mock) == {"model": "openai/gpt-realtime-2", "expiresIn": 90}


@pytest.mark.parametrize("value", ["60", 60.0, 1.5, True, False, -1, 0, 601, 10**30, [60], {}])
def test_bad_lifetime(same_origin: Post, mock: responses.RequestsMock, value: Any) -> None:
    error = assert_error(same_origin(REALTIME, {"expiresAfterSeconds": value}), 400)
    assert error["type"] == "invalid_request"
    assert error["param"] == "expiresAfterSeconds"
    assert len(mock.calls) == 0
    assert ClientSecretIssuance.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        {"model": 5},
        {"model": ""},
        {"model": ["openai/gpt-realtime-2"]},
        {"model": "x" * 201},
        {"sessionConfig": "voice"},
        {"sessionConfig": [1]},
    ],
)
def test_bad_fields(same_origin: Post, mock: responses.RequestsMock, body: Any) -> None:
    assert_error(same_origin(REALTIME, body), 400, "invalid_request")
    assert len(mock.calls) == 0
    assert ClientSecretIssuance.objects.count() == 0


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'"x"', b"null", b"12", b'{"expiresAfterSeconds": NaN}', b"\xff"],
)
def test_bad_json(client: Client, user: Any, mock: responses.RequestsMock, raw: bytes) -> None:
    client.force_login(user)
    response = client.post(
        REALTIME,
        data=raw,
        content_type="application/json",
        HTTP_ORIGIN="http://testserver",
        HTTP_SEC_FETCH_SITE="same-origin",
    )
    assert_error(response, 400)
    assert len(mock.calls) == 0


def test_empty_body_is_an_empty_object(
    client: Client, user: Any, mock: responses.RequestsMock
) -> None:
    answer(mock)
    client.force_login(user)
    response = client.post(
        REALTIME, data=b"", content_type="application/json", HTTP_SEC_FETCH_SITE="same-origin"
    )
    assert response.status_code == 200
    assert sent_body(mock) == {"model": "openai/gpt-realtime-2"}


def test_body_too_large(same_origin: Post, mock: responses.RequestsMock, settings: Any) -> None:
    settings.GATEWAY_REALTIME_MAX_REQUEST_BYTES = 100
    response = same_origin(REALTIME, {"sessionConfig": {"instructions": "x" * 200}})
    assert_error(response, 413)
    assert len(mock.calls) == 0


def test_no_expiry(same_origin: Post, mock: responses.RequestsMock) -> None:
    answer(mock, {"token": TOKEN, "expiresAt": None})
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


def test_tools(same_origin: Post, mock: responses.RequestsMock, settings: Any, user: Any) -> None:
    hook_calls.clear()
    settings.GATEWAY_REALTIME_TOOLS_FUNCTION = "tests.test_views.tools_hook"
    answer(mock)
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
    assert "tools" not in sent_body(mock)


@pytest.mark.parametrize("result", [None, []])
def test_no_tools(
    same_origin: Post, mock: responses.RequestsMock, settings: Any, result: Any
) -> None:
    settings.GATEWAY_REALTIME_TOOLS_FUNCTION = lambda **kwargs: result
    answer(mock)
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
    same_origin: Post, mock: responses.RequestsMock, settings: Any, result: Any
) -> None:
    settings.GATEWAY_REALTIME_TOOLS_FUNCTION = lambda **kwargs: result
    answer(mock)
    error = assert_error(same_origin(REALTIME), 502, "configuration_error")
    assert "GATEWAY_REALTIME_TOOLS_FUNCTION" in error["message"]
    assert len(mock.calls) == 0
    assert ClientSecretIssuance.objects.count() == 0


# Who may mint --------------------------------------------------------------------


def test_anonymous(client: Client, mock: responses.RequestsMock) -> None:
    response = client.post(
        REALTIME,
        data="{}",
        content_type="application/json",
        HTTP_ORIGIN="http://testserver",
        HTTP_SEC_FETCH_SITE="same-origin",
    )
    assert response.status_code in (401, 403)
    assert_error(response, response.status_code, "not_authenticated")
    assert len(mock.calls) == 0
    assert ClientSecretIssuance.objects.count() == 0


def test_inactive_user(client: Client, user: Any, mock: responses.RequestsMock) -> None:
    client.force_login(user)
    user.is_active = False
    user.save()
    response = client.post(REALTIME, data="{}", content_type="application/json")
    assert response.status_code in (401, 403)
    assert len(mock.calls) == 0


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
def test_permission_classes_can_be_overridden(client: Client, mock: responses.RequestsMock):
    answer(mock)
    response = client.post("/open/", data="{}", content_type="application/json")
    assert response.status_code == 200
    assert response.json()["token"] == TOKEN
    row = ClientSecretIssuance.objects.get()
    assert row.user is None
    assert row.outcome == Outcome.ISSUED
    assert_private(response)


@pytest.mark.urls("tests.test_views")
def test_authentication_classes_can_be_overridden(user: Any, mock: responses.RequestsMock):
    answer(mock)
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(user)
    # Plain SessionAuthentication: the same-origin replacement is gone, so the
    # AI SDK's token-less fetch is refused again.
    response = csrf_client.post(
        "/plain/",
        data="{}",
        content_type="application/json",
        HTTP_ORIGIN="http://testserver",
        HTTP_SEC_FETCH_SITE="same-origin",
    )
    assert response.status_code == 403
    assert len(mock.calls) == 0


# Methods -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "options"])
def test_other_methods(client: Client, user: Any, mock: responses.RequestsMock, method: str):
    client.force_login(user)
    response = client.generic(
        method.upper(),
        REALTIME,
        data="{}",
        content_type="application/json",
        HTTP_ORIGIN="http://testserver",
        HTTP_SEC_FETCH_SITE="same-origin",
    )
    assert_error(response, 405, "method_not_allowed")
    assert len(mock.calls) == 0


# Gateway failures --------------------------------------------------------------


def test_gateway_rate_limit(same_origin: Post, mock: responses.RequestsMock) -> None:
    answer(mock, gateway_error("rate_limit_exceeded"), 429, **{"Retry-After": "12"})
    response = same_origin(REALTIME)
    error = assert_error(response, 503, "gateway_rate_limit_exceeded")
    assert response["Retry-After"] == "12"
    assert "12 seconds" in error["message"]


def test_gateway_rate_limit_without_retry_after(
    same_origin: Post, mock: responses.RequestsMock
) -> None:
    answer(mock, gateway_error("rate_limit_exceeded"), 429)
    response = same_origin(REALTIME)
    assert_error(response, 503, "gateway_rate_limit_exceeded")
    assert int(response["Retry-After"]) > 0


@pytest.mark.parametrize(
    "exc", [requests.exceptions.ReadTimeout("slow"), requests.exceptions.ConnectTimeout("slow")]
)
def test_gateway_timeout(same_origin: Post, mock: responses.RequestsMock, exc: Exception) -> None:
    mock.add(responses.POST, MINT_URL, body=exc)
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
        (502, "<html>bad gateway</html>", "response_error", "answer"),
        (200, {"token": ""}, "response_error", "answer"),
        (302, "", "response_error", "answer"),
    ],
)
def test_gateway_errors(
    same_origin: Post,
    mock: responses.RequestsMock,
    status: int,
    body: Any,
    error_type: str,
    hint: str,
) -> None:
    answer(mock, body, status, Location="https://elsewhere.test/")
    error = assert_error(same_origin(REALTIME), 502, f"gateway_{error_type}")
    assert hint in error["message"]
    # The upstream message is in the audit row, not in the response.
    assert "upstream says no" not in error["message"]
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == Outcome.FAILED
    assert row.error_type == error_type
    assert row.upstream_status == status


def test_gateway_unreachable(same_origin: Post, mock: responses.RequestsMock) -> None:
    mock.add(responses.POST, MINT_URL, body=requests.exceptions.ConnectionError("refused"))
    error = assert_error(same_origin(REALTIME), 502, "gateway_connection_error")
    assert "could not be reached" in error["message"]


def test_missing_credential(same_origin: Post, mock: responses.RequestsMock, settings: Any):
    settings.GATEWAY_REALTIME_API_KEY = None
    error = assert_error(same_origin(REALTIME), 502, "configuration_error")
    assert "No authentication provided" in error["message"]
    assert "GATEWAY_REALTIME_API_KEY" in error["message"]
    assert len(mock.calls) == 0
    assert ClientSecretIssuance.objects.get().outcome == Outcome.FAILED


def test_broken_credential_function(
    same_origin: Post, mock: responses.RequestsMock, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_API_KEY = lambda: None
    error = assert_error(same_origin(REALTIME), 502, "configuration_error")
    assert "GATEWAY_REALTIME_API_KEY" in error["message"]
    assert len(mock.calls) == 0


def test_no_default_model(same_origin: Post, mock: responses.RequestsMock, settings: Any) -> None:
    settings.GATEWAY_REALTIME_DEFAULT_MODELS = {"speech": "elevenlabs/eleven-v3"}
    error = assert_error(same_origin(REALTIME), 502, "configuration_error")
    assert "GATEWAY_REALTIME_DEFAULT_MODELS" in error["message"]
    assert len(mock.calls) == 0


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
def test_failed_mint_is_recorded_under_atomic_requests(
    atomic_requests: None, same_origin: Post, mock: responses.RequestsMock
) -> None:
    answer(mock, gateway_error("authentication_error"), 401)
    assert_error(same_origin(REALTIME), 502)
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == Outcome.FAILED
    assert row.upstream_status == 401


@pytest.mark.django_db(transaction=True)
def test_issued_mint_is_recorded_under_atomic_requests(
    atomic_requests: None, same_origin: Post, mock: responses.RequestsMock
) -> None:
    answer(mock)
    assert same_origin(REALTIME).status_code == 200
    assert ClientSecretIssuance.objects.get().outcome == Outcome.ISSUED
