"""``gateway_realtime.services``: the one mint path, its audit row and its signals."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory

from gateway_realtime.client import GatewayClient
from gateway_realtime.exceptions import (
    GatewayAuthenticationError,
    GatewayConfigurationError,
    GatewayRateLimitError,
    GatewayTimeoutError,
    MintRequestError,
)
from gateway_realtime.models import ClientSecretIssuance, Outcome, Source, token_hint
from gateway_realtime.protocol import Kind, MintedSecret
from gateway_realtime.services import (
    IssuedSecret,
    mint_client_secret,
    resolve_lifetime,
    resolve_model,
    resolve_tools,
)
from gateway_realtime.signals import client_secret_failed, client_secret_issued
from tests.conftest import MINT_URL

TOKEN = "vcst_services_0123456789abcdefghijklmnop"
EXPIRES_AT = 4102444800  # 2100-01-01
JSON = {"Content-Type": "application/json"}

pytestmark = pytest.mark.django_db


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def signals() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    received: list[tuple[str, dict[str, Any]]] = []

    def on_issued(**kwargs: Any) -> None:
        received.append(("issued", kwargs))

    def on_failed(**kwargs: Any) -> None:
        received.append(("failed", kwargs))

    client_secret_issued.connect(on_issued, weak=False)
    client_secret_failed.connect(on_failed, weak=False)
    yield received
    client_secret_issued.disconnect(on_issued)
    client_secret_failed.disconnect(on_failed)


def browser_request(**meta: Any) -> Any:
    meta.setdefault("REMOTE_ADDR", "203.0.113.7")
    meta.setdefault("HTTP_USER_AGENT", "Mozilla/5.0 (tests)")
    return RequestFactory().post("/gateway/realtime/", **meta)


def success(mock: responses.RequestsMock, body: dict[str, Any] | None = None) -> None:
    payload = json.dumps(body or {"token": TOKEN, "expiresAt": EXPIRES_AT})
    mock.add(responses.POST, MINT_URL, body=payload, headers=JSON)


def gateway_error(
    mock: responses.RequestsMock,
    status: int,
    error_type: str,
    headers: dict[str, str] | None = None,
) -> None:
    body = {
        "error": {"message": f"upstream {error_type}", "type": error_type},
        "generationId": "gen_abc",
    }
    mock.add(responses.POST, MINT_URL, status=status, json=body, headers=headers or {})


# The audit row ---------------------------------------------------------------


def test_pending_row_is_written_before_the_gateway_is_called(
    mock: responses.RequestsMock, user: Any
) -> None:
    seen: list[dict[str, Any]] = []

    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        rows = list(ClientSecretIssuance.objects.values())
        seen.extend(rows)
        return 200, JSON, json.dumps({"token": TOKEN, "expiresAt": EXPIRES_AT})

    mock.add_callback(responses.POST, MINT_URL, callback=callback)
    mint_client_secret(user=user, kind="realtime", expires_in=60)
    assert len(seen) == 1
    pending = seen[0]
    assert pending["outcome"] == Outcome.PENDING
    assert pending["user_id"] == user.pk
    assert pending["model"] == "openai/gpt-realtime-2"
    assert pending["requested_lifetime"] == 60
    assert pending["token_fingerprint"] == ""
    assert pending["completed_at"] is None
    assert ClientSecretIssuance.objects.get().outcome == Outcome.ISSUED


def test_issued_row(mock: responses.RequestsMock, user: Any) -> None:
    expires_at = int(time.time()) + 120
    success(mock, {"token": TOKEN, "expiresAt": expires_at})
    request = browser_request()
    secret = mint_client_secret(
        user=user,
        kind=Kind.TRANSCRIPTION,
        expires_in=45,
        request=request,
        source=Source.ENDPOINT,
    )
    row = ClientSecretIssuance.objects.get()
    assert secret.issuance == row
    assert row.outcome == Outcome.ISSUED
    assert row.user == user
    assert row.username == "alice"
    assert row.ip_address == "203.0.113.7"
    assert row.user_agent == "Mozilla/5.0 (tests)"
    assert row.kind == "transcription"
    assert row.model == "openai/gpt-4o-transcribe"
    assert row.source == Source.ENDPOINT
    assert row.requested_lifetime == 45
    assert row.effective_lifetime == pytest.approx(120, abs=5)
    assert row.auth_method == "api-key"
    assert row.error_type == ""
    assert row.error_message == ""
    assert row.upstream_status == 200
    assert row.latency_ms is not None
    assert row.latency_ms >= 0
    assert row.completed_at is not None
    assert row.completed_at >= row.created_at
    assert row.expires_at == dt.datetime.fromtimestamp(expires_at, tz=dt.UTC)
    assert row.token_fingerprint == hashlib.sha256(TOKEN.encode()).hexdigest()
    assert row.token_hint == token_hint(TOKEN)
    assert row.token_hint.startswith("vcst_se")
    assert row.token_hint.endswith("mnop")


def test_issued_secret(mock: responses.RequestsMock, user: Any, settings: Any) -> None:
    settings.GATEWAY_REALTIME_TEAM = "my-team"
    success(mock)
    secret = mint_client_secret(user=user, kind="speech")
    assert isinstance(secret, IssuedSecret)
    assert secret.token == TOKEN
    assert secret.kind is Kind.SPEECH
    assert secret.model == "elevenlabs/eleven-v3"
    assert secret.url == "wss://gateway.test/v4/ai/speech-model?ai-model-id=elevenlabs%2Feleven-v3"
    assert secret.expires_at == EXPIRES_AT
    assert TOKEN not in repr(secret)
    assert secret.protocols == [
        "ai-gateway-speech.v1",
        f"ai-gateway-auth.{TOKEN}",
        "ai-gateway-team.bXktdGVhbQ",
    ]
    assert secret.as_setup_response() == {
        "token": TOKEN,
        "url": secret.url,
        "expiresAt": EXPIRES_AT,
    }


def test_no_expiry_from_the_gateway(mock: responses.RequestsMock, user: Any) -> None:
    success(mock, {"token": TOKEN})
    secret = mint_client_secret(user=user, kind="realtime")
    row = ClientSecretIssuance.objects.get()
    assert secret.as_setup_response() == {"token": TOKEN, "url": secret.url}
    assert row.expires_at is None
    assert row.effective_lifetime is None
    assert row.outcome == Outcome.ISSUED


@pytest.mark.parametrize(
    ("status", "error_type", "cls"),
    [
        (401, "authentication_error", GatewayAuthenticationError),
        (429, "rate_limit_exceeded", GatewayRateLimitError),
    ],
)
def test_failed_row(
    mock: responses.RequestsMock, user: Any, status: int, error_type: str, cls: type[Exception]
) -> None:
    gateway_error(mock, status, error_type)
    with pytest.raises(cls):
        mint_client_secret(user=user, kind="realtime", request=browser_request(), expires_in=30)
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == Outcome.FAILED
    assert row.user == user
    assert row.username == "alice"
    assert row.ip_address == "203.0.113.7"
    assert row.kind == "realtime"
    assert row.model == "openai/gpt-realtime-2"
    assert row.requested_lifetime == 30
    assert row.effective_lifetime is None
    assert row.auth_method == "api-key"
    assert row.source == Source.OTHER
    assert row.error_type == error_type
    assert row.error_message == f"upstream {error_type}"
    assert row.upstream_status == status
    assert row.generation_id == "gen_abc"
    assert row.latency_ms is not None
    assert row.completed_at is not None
    assert row.expires_at is None
    assert row.token_fingerprint == ""
    assert row.token_hint == ""


def test_timeout_row(mock: responses.RequestsMock, user: Any) -> None:
    import requests

    mock.add(responses.POST, MINT_URL, body=requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(GatewayTimeoutError):
        mint_client_secret(user=user, kind="realtime")
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == Outcome.FAILED
    assert row.error_type == "timeout"
    assert row.upstream_status is None


def test_missing_credential_row(mock: responses.RequestsMock, user: Any, settings: Any) -> None:
    settings.GATEWAY_REALTIME_API_KEY = None
    with pytest.raises(GatewayConfigurationError):
        mint_client_secret(user=user, kind="realtime")
    assert len(mock.calls) == 0
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == Outcome.FAILED
    assert row.error_type == "configuration_error"
    assert row.auth_method == ""
    assert row.upstream_status is None
    assert row.error_message.startswith("No authentication provided")


def test_configuration_error_row(mock: responses.RequestsMock, user: Any, settings: Any) -> None:
    settings.GATEWAY_REALTIME_API_KEY = lambda: ""
    with pytest.raises(GatewayConfigurationError):
        mint_client_secret(user=user, kind="realtime")
    assert len(mock.calls) == 0
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == Outcome.FAILED
    assert row.error_type == "configuration_error"


class ExplodingClient(GatewayClient):
    def mint(self, **kwargs: Any) -> MintedSecret:
        raise RuntimeError("a bug in a custom client")


def test_unexpected_error_still_completes_the_row(user: Any, settings: Any) -> None:
    settings.GATEWAY_REALTIME_CLIENT_CLASS = "tests.test_services.ExplodingClient"
    with pytest.raises(RuntimeError):
        mint_client_secret(user=user, kind="realtime")
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == Outcome.FAILED
    assert row.error_type == "RuntimeError"
    assert row.completed_at is not None


def test_one_row_per_attempt(mock: responses.RequestsMock, user: Any) -> None:
    success(mock)
    for _ in range(3):
        mint_client_secret(user=user, kind="realtime")
    assert ClientSecretIssuance.objects.filter(outcome=Outcome.ISSUED).count() == 3
    assert ClientSecretIssuance.objects.count() == 3


@pytest.mark.parametrize("who", [None, AnonymousUser()])
def test_anonymous_minting(mock: responses.RequestsMock, who: Any) -> None:
    success(mock)
    mint_client_secret(user=who, kind="realtime")
    row = ClientSecretIssuance.objects.get()
    assert row.user is None
    assert row.username == ""
    assert str(row) == "realtime openai/gpt-realtime-2 for anonymous: issued"


@pytest.mark.parametrize(
    ("remote_addr", "stored"),
    [
        ("198.51.100.4", "198.51.100.4"),
        ("2001:db8::1", "2001:db8::1"),
        ("not-an-ip", None),
        ("", None),
    ],
)
def test_client_ip(
    mock: responses.RequestsMock, user: Any, remote_addr: str, stored: str | None
) -> None:
    success(mock)
    request = browser_request(REMOTE_ADDR=remote_addr, HTTP_X_FORWARDED_FOR="10.9.9.9")
    mint_client_secret(user=user, kind="realtime", request=request)
    assert ClientSecretIssuance.objects.get().ip_address == stored


def test_long_user_agent_is_cut(mock: responses.RequestsMock, user: Any) -> None:
    success(mock)
    request = browser_request(HTTP_USER_AGENT="x" * 2000)
    mint_client_secret(user=user, kind="realtime", request=request)
    assert len(ClientSecretIssuance.objects.get().user_agent) == 512


# Requests the site does not allow ----------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": "openai/not-allowed"},
        {"model": "openai/gpt-realtime-mini", "kind": "speech"},
        {"expires_in": 601},
        {"expires_in": 0},
        {"expires_in": -5},
        {"expires_in": 1.5},
        {"expires_in": "60"},
        {"expires_in": True},
    ],
)
def test_refused_requests_write_nothing_and_send_nothing(
    mock: responses.RequestsMock, user: Any, signals: list[Any], kwargs: dict[str, Any]
) -> None:
    kwargs.setdefault("kind", "realtime")
    with pytest.raises(MintRequestError):
        mint_client_secret(user=user, **kwargs)
    assert len(mock.calls) == 0
    assert ClientSecretIssuance.objects.count() == 0
    assert signals == []


def test_unknown_kind(user: Any) -> None:
    with pytest.raises(ValueError):
        mint_client_secret(user=user, kind="video")


def test_resolve_model(settings: Any) -> None:
    assert resolve_model(Kind.REALTIME, None) == "openai/gpt-realtime-2"
    assert resolve_model(Kind.REALTIME, "") == "openai/gpt-realtime-2"
    assert resolve_model(Kind.REALTIME, "openai/gpt-realtime-2") == "openai/gpt-realtime-2"
    assert resolve_model(Kind.REALTIME, "openai/gpt-realtime-mini") == "openai/gpt-realtime-mini"
    with pytest.raises(MintRequestError) as info:
        resolve_model(Kind.TRANSCRIPTION, "openai/gpt-realtime-mini")
    assert info.value.param == "model"
    settings.GATEWAY_REALTIME_DEFAULT_MODELS = {}
    with pytest.raises(GatewayConfigurationError, match="GATEWAY_REALTIME_DEFAULT_MODELS"):
        resolve_model(Kind.REALTIME, None)


def test_resolve_lifetime(settings: Any) -> None:
    assert resolve_lifetime(None) is None
    assert resolve_lifetime(1) == 1
    assert resolve_lifetime(600) == 600
    settings.GATEWAY_REALTIME_DEFAULT_LIFETIME = 120
    assert resolve_lifetime(None) == 120
    settings.GATEWAY_REALTIME_MAX_LIFETIME = 60
    assert resolve_lifetime(None) == 60
    for bad in (0, 61, -1, 2.0, "30", True, False):
        with pytest.raises(MintRequestError) as info:
            resolve_lifetime(bad)  # type: ignore[arg-type]
        assert info.value.param == "expiresAfterSeconds"


# Tools hook ------------------------------------------------------------------

TOOL = {"type": "function", "name": "lookup", "description": "d", "parameters": {"type": "object"}}


def tools_hook(**kwargs: Any) -> list[dict[str, Any]]:
    assert set(kwargs) == {"request", "user", "kind", "model"}
    return [TOOL]


def test_resolve_tools(settings: Any, user: Any) -> None:
    assert resolve_tools(request=None, user=user, kind=Kind.REALTIME, model="m") is None
    settings.GATEWAY_REALTIME_TOOLS_FUNCTION = "tests.test_services.tools_hook"
    assert resolve_tools(request=None, user=user, kind=Kind.REALTIME, model="m") == [TOOL]
    settings.GATEWAY_REALTIME_TOOLS_FUNCTION = lambda **kw: None
    assert resolve_tools(request=None, user=user, kind=Kind.REALTIME, model="m") is None


@pytest.mark.parametrize(
    "tools",
    [
        "lookup",
        {"type": "function"},
        [{"type": "function", "name": "", "parameters": {}}],
        [{"type": "function", "name": "a"}],
        [{"type": "function", "name": "a", "parameters": []}],
        [{"type": "tool", "name": "a", "parameters": {}}],
        [{"type": "function", "name": "a", "parameters": {}, "description": 3}],
        [{"type": "function", "name": "a", "parameters": {}, "extra": 1}],
        [None],
    ],
)
def test_invalid_tools(settings: Any, user: Any, tools: Any) -> None:
    settings.GATEWAY_REALTIME_TOOLS_FUNCTION = lambda **kw: tools
    with pytest.raises(GatewayConfigurationError, match="GATEWAY_REALTIME_TOOLS_FUNCTION"):
        resolve_tools(request=None, user=user, kind=Kind.REALTIME, model="m")


# Signals ---------------------------------------------------------------------


def test_issued_signal(
    mock: responses.RequestsMock, user: Any, signals: list[tuple[str, dict[str, Any]]]
) -> None:
    success(mock)
    request = browser_request()
    mint_client_secret(user=user, kind="realtime", request=request)
    assert [name for name, _ in signals] == ["issued"]
    kwargs = signals[0][1]
    assert kwargs["sender"] is ClientSecretIssuance
    assert kwargs["issuance"] == ClientSecretIssuance.objects.get()
    assert kwargs["issuance"].outcome == Outcome.ISSUED
    assert kwargs["user"] == user
    assert kwargs["request"] is request
    assert "error" not in kwargs
    assert TOKEN not in repr(kwargs)
    assert TOKEN not in repr(vars(kwargs["issuance"]))


def test_failed_signal(
    mock: responses.RequestsMock, user: Any, signals: list[tuple[str, dict[str, Any]]]
) -> None:
    gateway_error(mock, 429, "rate_limit_exceeded", {"Retry-After": "3"})
    with pytest.raises(GatewayRateLimitError) as info:
        mint_client_secret(user=user, kind="realtime")
    assert [name for name, _ in signals] == ["failed"]
    kwargs = signals[0][1]
    assert kwargs["sender"] is ClientSecretIssuance
    assert kwargs["issuance"].outcome == Outcome.FAILED
    assert kwargs["issuance"].pk == ClientSecretIssuance.objects.get().pk
    assert kwargs["error"] is info.value
    assert kwargs["user"] == user
    assert kwargs["request"] is None
