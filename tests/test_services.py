"""``gateway_realtime.services``: the one mint path, its audit row and its signals."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from typing import Any

import pytest
import requests
import responses
from django.contrib.auth.models import AnonymousUser
from django.db import connection, transaction
from django.db.models.signals import post_save, pre_save
from django.test import RequestFactory
from hypothesis import given
from hypothesis import settings as hypothesis_settings

from gateway_realtime.client import GatewayClient
from gateway_realtime.exceptions import (
    AuditUnavailable,
    GatewayAuthenticationError,
    GatewayConfigurationError,
    GatewayRateLimitError,
    GatewayTimeoutError,
    LimitsUnavailable,
    MintRequestError,
)
from gateway_realtime.models import (
    ClientSecretIssuance,
    Outcome,
    QuotaCounter,
    Source,
    token_hint,
)
from gateway_realtime.protocol import Kind, MintedSecret
from gateway_realtime.services import (
    IssuedSecret,
    mint_client_secret,
    resolve_lifetime,
    resolve_model,
    resolve_tools,
)
from tests.conftest import (
    EXPIRES_AT,
    JSON,
    MINT_URL,
    TOKEN,
    answer,
    failing_writes,
    gateway_error,
)
from tests.strategies import json_values

pytestmark = pytest.mark.django_db


def browser_request(**meta: Any) -> Any:
    meta.setdefault("REMOTE_ADDR", "203.0.113.7")
    meta.setdefault("HTTP_USER_AGENT", "Mozilla/5.0 (tests)")
    return RequestFactory().post("/gateway/realtime/", **meta)


# The audit row ---------------------------------------------------------------


def test_pending_row_is_written_before_the_gateway_is_called(
    gateway_mock: responses.RequestsMock, user: Any
) -> None:
    seen: list[dict[str, Any]] = []

    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        rows = list(ClientSecretIssuance.objects.values())
        seen.extend(rows)
        return 200, JSON, json.dumps({"token": TOKEN, "expiresAt": EXPIRES_AT})

    gateway_mock.add_callback(responses.POST, MINT_URL, callback=callback)
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


def test_issued_row(gateway_mock: responses.RequestsMock, user: Any) -> None:
    expires_at = int(time.time()) + 120
    answer(gateway_mock, {"token": TOKEN, "expiresAt": expires_at})
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
    assert row.token_hint.startswith(TOKEN[:7])
    assert row.token_hint.endswith(TOKEN[-4:])


def test_issued_secret(gateway_mock: responses.RequestsMock, user: Any, settings: Any) -> None:
    settings.GATEWAY_REALTIME_TEAM = "my-team"
    answer(gateway_mock)
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


def test_no_expiry_from_the_gateway(gateway_mock: responses.RequestsMock, user: Any) -> None:
    answer(gateway_mock, {"token": TOKEN})
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
    gateway_mock: responses.RequestsMock,
    user: Any,
    status: int,
    error_type: str,
    cls: type[Exception],
) -> None:
    answer(gateway_mock, gateway_error(error_type, f"upstream {error_type}"), status)
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
    assert row.generation_id == "gen_123"
    assert row.latency_ms is not None
    assert row.completed_at is not None
    assert row.expires_at is None
    assert row.token_fingerprint == ""
    assert row.token_hint == ""


def test_timeout_row(gateway_mock: responses.RequestsMock, user: Any) -> None:
    answer(gateway_mock, requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(GatewayTimeoutError):
        mint_client_secret(user=user, kind="realtime")
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == Outcome.FAILED
    assert row.error_type == "timeout"
    assert row.upstream_status is None


def test_missing_credential_row(
    gateway_mock: responses.RequestsMock, user: Any, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_API_KEY = None
    with pytest.raises(GatewayConfigurationError):
        mint_client_secret(user=user, kind="realtime")
    assert len(gateway_mock.calls) == 0
    row = ClientSecretIssuance.objects.get()
    assert row.outcome == Outcome.FAILED
    assert row.error_type == "configuration_error"
    assert row.auth_method == ""
    assert row.upstream_status is None
    assert row.error_message.startswith("No authentication provided")


def test_configuration_error_row(
    gateway_mock: responses.RequestsMock, user: Any, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_API_KEY = lambda: ""
    with pytest.raises(GatewayConfigurationError):
        mint_client_secret(user=user, kind="realtime")
    assert len(gateway_mock.calls) == 0
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


def test_one_row_per_attempt(gateway_mock: responses.RequestsMock, user: Any) -> None:
    answer(gateway_mock)
    for _ in range(3):
        mint_client_secret(user=user, kind="realtime")
    assert ClientSecretIssuance.objects.filter(outcome=Outcome.ISSUED).count() == 3
    assert ClientSecretIssuance.objects.count() == 3


@pytest.mark.parametrize("who", [None, AnonymousUser()])
def test_anonymous_minting(gateway_mock: responses.RequestsMock, who: Any) -> None:
    answer(gateway_mock)
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
    gateway_mock: responses.RequestsMock, user: Any, remote_addr: str, stored: str | None
) -> None:
    answer(gateway_mock)
    request = browser_request(REMOTE_ADDR=remote_addr, HTTP_X_FORWARDED_FOR="10.9.9.9")
    mint_client_secret(user=user, kind="realtime", request=request)
    assert ClientSecretIssuance.objects.get().ip_address == stored


def test_long_user_agent_is_cut(gateway_mock: responses.RequestsMock, user: Any) -> None:
    answer(gateway_mock)
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
    gateway_mock: responses.RequestsMock, user: Any, mint_signals: list[Any], kwargs: dict[str, Any]
) -> None:
    kwargs.setdefault("kind", "realtime")
    with pytest.raises(MintRequestError):
        mint_client_secret(user=user, **kwargs)
    assert len(gateway_mock.calls) == 0
    assert ClientSecretIssuance.objects.count() == 0
    assert mint_signals == []


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


@given(value=json_values)
@hypothesis_settings(max_examples=300, deadline=None)
def test_lifetime_is_validated_in_one_place(value: Any) -> None:
    try:
        lifetime = resolve_lifetime(value)
    except MintRequestError as error:
        assert error.param == "expiresAfterSeconds"
        return
    assert lifetime is None or (type(lifetime) is int and 1 <= lifetime <= 600)
    assert value is None or value == lifetime


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


# The writes: plain ORM, the claim and the pending row together ----------------

TABLE = ClientSecretIssuance._meta.db_table
QUOTA_TABLE = QuotaCounter._meta.db_table


@pytest.mark.parametrize("quota", [None, 2])
@pytest.mark.parametrize("signal", [pre_save, post_save])
def test_save_receivers_run_for_every_audit_write(
    gateway_mock: responses.RequestsMock, user: Any, settings: Any, signal: Any, quota: int | None
) -> None:
    settings.GATEWAY_REALTIME_QUOTA = quota
    answer(gateway_mock)
    seen: list[tuple[str, Any]] = []

    def receiver(sender: Any, instance: ClientSecretIssuance, **kwargs: Any) -> None:
        seen.append((instance.outcome, kwargs.get("update_fields")))

    signal.connect(receiver, sender=ClientSecretIssuance)
    try:
        mint_client_secret(user=user, kind="realtime")
    finally:
        signal.disconnect(receiver, sender=ClientSecretIssuance)
    assert [outcome for outcome, _ in seen] == [Outcome.PENDING, Outcome.ISSUED]
    assert seen[0][1] is None
    assert "token_fingerprint" in seen[1][1]
    assert ClientSecretIssuance.objects.get().outcome == Outcome.ISSUED


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("earlier_mints", [0, 1], ids=["new-window", "counted-window"])
def test_a_failed_claim_writes_no_row(
    gateway_mock: responses.RequestsMock, user: Any, settings: Any, earlier_mints: int
) -> None:
    settings.GATEWAY_REALTIME_QUOTA = 5
    answer(gateway_mock)
    for _ in range(earlier_mints):
        mint_client_secret(user=user, kind="realtime")
    with (
        connection.execute_wrapper(failing_writes(QUOTA_TABLE)),
        pytest.raises(LimitsUnavailable),
    ):
        mint_client_secret(user=user, kind="realtime")
    assert ClientSecretIssuance.objects.count() == earlier_mints
    assert sum(QuotaCounter.objects.values_list("used", flat=True)) == earlier_mints
    assert len(gateway_mock.calls) == earlier_mints


def test_a_row_gone_before_completion_hands_nothing_out(
    gateway_mock: responses.RequestsMock, user: Any
) -> None:
    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        ClientSecretIssuance.objects.all().delete()
        return 200, JSON, json.dumps({"token": TOKEN, "expiresAt": EXPIRES_AT})

    gateway_mock.add_callback(responses.POST, MINT_URL, callback=callback)
    with pytest.raises(AuditUnavailable) as caught:
        mint_client_secret(user=user, kind="realtime")
    assert TOKEN not in str(caught.value)
    assert not ClientSecretIssuance.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("quota", "table", "error"),
    [
        (None, TABLE, AuditUnavailable),
        (5, TABLE, AuditUnavailable),
        (5, QUOTA_TABLE, LimitsUnavailable),
    ],
)
def test_a_failed_write_inside_a_callers_transaction_leaves_it_usable(
    gateway_mock: responses.RequestsMock,
    user: Any,
    settings: Any,
    django_user_model: Any,
    quota: int | None,
    table: str,
    error: type[Exception],
) -> None:
    settings.GATEWAY_REALTIME_QUOTA = quota
    answer(gateway_mock)
    with transaction.atomic():
        django_user_model.objects.create_user(username="made-in-the-same-transaction")
        with connection.execute_wrapper(failing_writes(table)), pytest.raises(error):
            mint_client_secret(user=user, kind="realtime")
        # The savepoint rolled back only the mint's writes.
        issued = mint_client_secret(user=user, kind="realtime")
    assert django_user_model.objects.filter(username="made-in-the-same-transaction").exists()
    assert ClientSecretIssuance.objects.get().pk == issued.issuance.pk
    if quota is not None:
        assert QuotaCounter.objects.get(user=user).used == 1
    assert len(gateway_mock.calls) == 1


# Signals ---------------------------------------------------------------------


def test_issued_signal(
    gateway_mock: responses.RequestsMock, user: Any, mint_signals: list[tuple[str, dict[str, Any]]]
) -> None:
    answer(gateway_mock)
    request = browser_request()
    mint_client_secret(user=user, kind="realtime", request=request)
    assert [name for name, _ in mint_signals] == ["issued"]
    kwargs = mint_signals[0][1]
    assert kwargs["sender"] is ClientSecretIssuance
    assert kwargs["issuance"] == ClientSecretIssuance.objects.get()
    assert kwargs["issuance"].outcome == Outcome.ISSUED
    assert kwargs["user"] == user
    assert kwargs["request"] is request
    assert "error" not in kwargs
    assert TOKEN not in repr(kwargs)
    assert TOKEN not in repr(vars(kwargs["issuance"]))


def test_failed_signal(
    gateway_mock: responses.RequestsMock, user: Any, mint_signals: list[tuple[str, dict[str, Any]]]
) -> None:
    answer(gateway_mock, gateway_error("rate_limit_exceeded"), 429, **{"Retry-After": "3"})
    with pytest.raises(GatewayRateLimitError) as info:
        mint_client_secret(user=user, kind="realtime")
    assert [name for name, _ in mint_signals] == ["failed"]
    kwargs = mint_signals[0][1]
    assert kwargs["sender"] is ClientSecretIssuance
    assert kwargs["issuance"].outcome == Outcome.FAILED
    assert kwargs["issuance"].pk == ClientSecretIssuance.objects.get().pk
    assert kwargs["error"] is info.value
    assert kwargs["user"] == user
    assert kwargs["request"] is None
