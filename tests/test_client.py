"""``gateway_realtime.client``: the request we send and how every answer is read."""

from __future__ import annotations

import datetime as dt
import email.utils
import io
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses

from gateway_realtime import __version__
from gateway_realtime.client import GatewayClient, get_client, reset_clients
from gateway_realtime.credentials import API_KEY, OIDC, Credential
from gateway_realtime.exceptions import (
    GatewayAuthenticationError,
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
)
from gateway_realtime.protocol import MINT_PATH, Kind, MintedSecret
from tests.conftest import EXPIRES_AT, MINT_URL, TOKEN, answer, gateway_error, run_at_once

SECRET = "sk-client-DISTINCTIVE-credential-7f3a9c"
KEY = Credential(value=SECRET, method=API_KEY, source="tests")


@pytest.fixture
def gw() -> Iterator[GatewayClient]:
    client = GatewayClient()
    yield client
    client.close()


def mint(
    client: GatewayClient,
    kind: Kind = Kind.REALTIME,
    model: str = "openai/gpt-realtime-2",
    credential: Credential = KEY,
    expires_in: int | None = None,
) -> MintedSecret:
    return client.mint(kind=kind, model=model, credential=credential, expires_in=expires_in)


def failure(client: GatewayClient, **kwargs: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        mint(client, **kwargs)
    return info.value


class SlowOrBrokenBody(io.RawIOBase):
    """A response body that yields ``chunks`` and then fails like a socket would."""

    def __init__(self, chunks: list[bytes], fail: BaseException | None, delay: float = 0):
        self.chunks = list(chunks)
        self.fail = fail
        self.delay = delay

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.delay:
            time.sleep(self.delay)
        if self.chunks:
            chunk = self.chunks.pop(0)
            buffer[: len(chunk)] = chunk
            return len(chunk)
        if self.fail is not None:
            raise self.fail
        return 0


def streamed(
    mock: responses.RequestsMock,
    raw: io.RawIOBase,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> None:
    # No Content-Length: the size is only known by reading.
    mock.add_callback(
        responses.POST,
        MINT_URL,
        callback=lambda request: (status, headers or {}, io.BufferedReader(raw, 8)),
    )


# Headers -------------------------------------------------------------------


def test_headers_with_an_api_key(gw: GatewayClient, gateway_mock: responses.RequestsMock) -> None:
    answer(gateway_mock)
    mint(gw)
    sent = gateway_mock.calls[0].request.headers
    assert sent["Authorization"] == f"Bearer {SECRET}"
    assert sent["ai-gateway-protocol-version"] == "0.0.1"
    assert sent["ai-gateway-auth-method"] == "api-key"
    assert sent["Content-Type"] == "application/json"
    assert sent["User-Agent"] == f"django-gateway-realtime/{__version__}"
    assert "x-vercel-ai-gateway-team" not in sent


def test_no_default_headers_from_requests(
    gw: GatewayClient, gateway_mock: responses.RequestsMock
) -> None:
    answer(gateway_mock)
    mint(gw)
    names = {name.lower() for name in gateway_mock.calls[0].request.headers}
    assert names == {
        "authorization",
        "ai-gateway-protocol-version",
        "ai-gateway-auth-method",
        "content-type",
        "user-agent",
        "content-length",
    }
    for default in ("accept-encoding", "accept", "connection"):
        assert default not in names


def test_oidc_auth_method(gw: GatewayClient, gateway_mock: responses.RequestsMock) -> None:
    answer(gateway_mock)
    mint(gw, credential=Credential(value="oidc.jwt.value", method=OIDC, source="tests"))
    sent = gateway_mock.calls[0].request.headers
    assert sent["ai-gateway-auth-method"] == "oidc"
    assert sent["Authorization"] == "Bearer oidc.jwt.value"


def test_team_header_only_when_set(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, settings: Any
):
    answer(gateway_mock)
    settings.GATEWAY_REALTIME_TEAM = "my-team"
    mint(gw)
    settings.GATEWAY_REALTIME_TEAM = ""
    mint(gw)
    settings.GATEWAY_REALTIME_TEAM = None
    mint(gw)
    assert gateway_mock.calls[0].request.headers["x-vercel-ai-gateway-team"] == "my-team"
    assert "x-vercel-ai-gateway-team" not in gateway_mock.calls[1].request.headers
    assert "x-vercel-ai-gateway-team" not in gateway_mock.calls[2].request.headers


def test_extra_headers_are_sent_but_cannot_replace_the_contract(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, settings: Any
) -> None:
    answer(gateway_mock)
    settings.GATEWAY_REALTIME_EXTRA_HEADERS = {
        "x-request-source": "my-site",
        "Authorization": "Bearer someone-else",
        "content-type": "text/plain",
    }
    mint(gw)
    sent = gateway_mock.calls[0].request.headers
    assert sent["x-request-source"] == "my-site"
    assert sent["Authorization"] == f"Bearer {SECRET}"
    assert sent["Content-Type"] == "application/json"


def test_timeouts_are_always_passed(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_CONNECT_TIMEOUT = 1.5
    settings.GATEWAY_REALTIME_READ_TIMEOUT = 4
    settings.GATEWAY_REALTIME_TOTAL_TIMEOUT = 5
    answer(gateway_mock)
    mint(gw)
    kwargs = gateway_mock.calls[0].request.req_kwargs
    assert kwargs["timeout"] == (1.5, 4.0)


def test_the_defaults_fit_a_mint(gw: GatewayClient, gateway_mock: responses.RequestsMock) -> None:
    answer(gateway_mock)
    mint(gw)
    connect, read = gateway_mock.calls[0].request.req_kwargs["timeout"]
    # Three connect attempts fit in TOTAL_TIMEOUT's 3 s; the read may take
    # all of it (a Gateway answering in 2.5 s is slow, not failing).
    assert (connect, read) == pytest.approx((1.0, 3.0))


@pytest.mark.parametrize(
    ("total", "timeout", "expected"),
    [
        # Each of the three connect attempts (CONNECT_RETRIES 2) gets a third.
        (1.5, None, (0.5, 1.5)),  # TOTAL_TIMEOUT caps both
        (5.0, 0.6, (0.2, 0.6)),  # a caller's deadline (the tag's) caps both
        (5.0, 2.0, (2 / 3, 2.0)),
        (9.0, None, (2.0, 3.0)),  # within the deadline, the settings decide
    ],
)
def test_timeouts_are_cut_to_the_whole_deadline(
    gw: GatewayClient,
    gateway_mock: responses.RequestsMock,
    settings: Any,
    total: float,
    timeout: float | None,
    expected: tuple[float, float],
) -> None:
    settings.GATEWAY_REALTIME_TOTAL_TIMEOUT = total
    answer(gateway_mock)
    gw.mint(kind=Kind.REALTIME, model="m/x", credential=KEY, timeout=timeout)
    connect, read = gateway_mock.calls[0].request.req_kwargs["timeout"]
    assert (connect, read) == pytest.approx(expected)


def test_a_callers_deadline_stops_reading(
    gw: GatewayClient, gateway_mock: responses.RequestsMock
) -> None:
    streamed(gateway_mock, SlowOrBrokenBody([b" "] * 40, None, delay=0.02))
    # The body would end after 0.8 s: a time-out means the deadline stopped the read.
    with pytest.raises(GatewayTimeoutError) as caught:
        gw.mint(kind=Kind.REALTIME, model="m/x", credential=KEY, timeout=0.1)
    assert "0.1 s" in caught.value.message


@pytest.mark.django_db
def test_a_stalled_gateway_fails_at_the_whole_deadline(settings: Any) -> None:
    from gateway_realtime.emulator import GatewayEmulator
    from gateway_realtime.testing import EMULATOR_API_KEY, emulated_gateway

    settings.GATEWAY_REALTIME_TOTAL_TIMEOUT = 0.4
    with (
        GatewayEmulator(host="127.0.0.1", port=0, api_keys=(EMULATOR_API_KEY,)) as emu,
        emulated_gateway(emu),
    ):
        client = GatewayClient()
        # The emulator answers after 3 s: the time-out is the 0.4 s deadline's.
        with pytest.raises(GatewayTimeoutError):
            client.mint(
                kind=Kind.REALTIME,
                model="emulator/slow-headers-3",
                credential=Credential(value=EMULATOR_API_KEY, method=API_KEY, source="tests"),
            )
        client.close()


# Body ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expires_in", "expected"),
    [
        (Kind.REALTIME, None, b'{"model":"m/x"}'),
        (Kind.REALTIME, 60, b'{"model":"m/x","expiresIn":60}'),
        (Kind.TRANSCRIPTION, None, b'{"model":"m/x","routeKind":"transcription"}'),
        (Kind.SPEECH, 5, b'{"model":"m/x","routeKind":"speech","expiresIn":5}'),
    ],
)
def test_body(
    gw: GatewayClient,
    gateway_mock: responses.RequestsMock,
    kind: Kind,
    expires_in: int | None,
    expected: bytes,
) -> None:
    answer(gateway_mock)
    mint(gw, kind=kind, model="m/x", expires_in=expires_in)
    assert gateway_mock.calls[0].request.body == expected


def test_body_keeps_unicode_like_json_stringify(gw: GatewayClient) -> None:
    assert gw.build_body(Kind.REALTIME, "vendor/modèle-ü", None) == (
        '{"model":"vendor/modèle-ü"}'.encode()
    )


# URLs ------------------------------------------------------------------------


def test_mint_url_uses_only_the_origin(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, settings: Any
) -> None:
    # Which origin each base URL has: tests/test_protocol.py.
    settings.GATEWAY_REALTIME_BASE_URL = "http://127.0.0.1:8765/a/deep/path/?q=1"
    answer(gateway_mock, url="http://127.0.0.1:8765" + MINT_PATH)
    mint(gw)
    assert gateway_mock.calls[0].request.url == "http://127.0.0.1:8765" + MINT_PATH


def test_userinfo_in_the_base_url_is_never_sent(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, settings: Any
) -> None:
    # requests would turn it into Basic auth, replacing the Bearer credential.
    settings.GATEWAY_REALTIME_BASE_URL = "https://user:pass@gateway.test/v4/ai"
    answer(gateway_mock)
    mint(gw)
    sent = gateway_mock.calls[0].request
    assert sent.url == MINT_URL
    assert sent.headers["Authorization"] == f"Bearer {SECRET}"


def test_ws_url_comes_from_the_base_url_setting(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_BASE_URL = "https://gateway.test/v4/ai/"
    answer(gateway_mock)
    secret = mint(gw, kind=Kind.SPEECH, model="elevenlabs/eleven-v3")
    assert secret.url == "wss://gateway.test/v4/ai/speech-model?ai-model-id=elevenlabs%2Feleven-v3"


# Gateway errors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_type", "status", "cls"),
    [
        ("authentication_error", 401, GatewayAuthenticationError),
        ("invalid_request_error", 400, GatewayInvalidRequestError),
        ("rate_limit_exceeded", 429, GatewayRateLimitError),
        ("model_not_found", 404, GatewayModelNotFoundError),
        ("not_found", 404, GatewayNotFoundError),
        ("forbidden", 403, GatewayForbiddenError),
        ("internal_server_error", 500, GatewayInternalServerError),
        ("quota_exceeded", 402, GatewayInternalServerError),
        (None, 500, GatewayInternalServerError),
        (42, 500, GatewayInternalServerError),
    ],
)
def test_error_types(
    gw: GatewayClient,
    gateway_mock: responses.RequestsMock,
    error_type: Any,
    status: int,
    cls: type[GatewayError],
) -> None:
    answer(gateway_mock, gateway_error(error_type, "Gateway says no", code="c1"), status)
    error = failure(gw)
    assert type(error) is cls
    assert error.status_code == status
    assert error.message == "Gateway says no"
    assert error.code == "c1"
    assert error.generation_id == "gen_123"
    if cls is GatewayInternalServerError:
        assert error.error_type == "internal_server_error"
    else:
        assert error.error_type == error_type
    assert len(gateway_mock.calls) == 1


def test_rate_limit_retry_after_http_date(
    gw: GatewayClient, gateway_mock: responses.RequestsMock
) -> None:
    when = dt.datetime.now(tz=dt.UTC) + dt.timedelta(seconds=120)
    retry_after = email.utils.format_datetime(when, usegmt=True)
    answer(gateway_mock, gateway_error("rate_limit_exceeded"), 429, **{"Retry-After": retry_after})
    error = failure(gw)
    assert isinstance(error, GatewayRateLimitError)
    assert error.retry_after is not None
    assert 115 <= error.retry_after <= 121


@pytest.mark.parametrize(
    ("value", "retry_after"),
    [
        pytest.param("17", 17, id="seconds"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", 0, id="date-in-the-past"),
        # Not usable: no figure at all.
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("soon", None, id="words"),
        pytest.param("-5", None, id="negative"),
        pytest.param("Mon, 99 Foo 2000 00:00:00 GMT", None, id="bad-date"),
    ],
)
def test_rate_limit_retry_after(
    gw: GatewayClient,
    gateway_mock: responses.RequestsMock,
    value: str | None,
    retry_after: int | None,
) -> None:
    headers = {} if value is None else {"Retry-After": value}
    answer(gateway_mock, gateway_error("rate_limit_exceeded"), 429, **headers)
    error = failure(gw)
    assert isinstance(error, GatewayRateLimitError)
    assert error.retry_after == retry_after


def test_model_not_found_names_the_model(
    gw: GatewayClient, gateway_mock: responses.RequestsMock
) -> None:
    answer(gateway_mock, gateway_error("model_not_found", param={"modelId": "openai/nope"}), 404)
    error = failure(gw, model="openai/nope")
    assert isinstance(error, GatewayModelNotFoundError)
    assert error.model_id == "openai/nope"


def test_forbidden_names_the_rule(gw: GatewayClient, gateway_mock: responses.RequestsMock) -> None:
    answer(gateway_mock, gateway_error("forbidden", param={"ruleId": "rule_42"}), 403)
    error = failure(gw)
    assert isinstance(error, GatewayForbiddenError)
    assert error.rule_id == "rule_42"


def test_param_without_ids(gw: GatewayClient, gateway_mock: responses.RequestsMock) -> None:
    answer(gateway_mock, gateway_error("model_not_found"), 404)
    error = failure(gw)
    assert isinstance(error, GatewayModelNotFoundError)
    assert error.model_id is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"<html><body>502 Bad Gateway</body></html>",
        b"[]",
        b"null",
        b'"error"',
        b"{}",
        b'{"error": "boom"}',
        b'{"error": {"type": "forbidden"}}',
        b'{"error": {"type": "forbidden", "message": 12}}',
        b'{"message": "flat", "type": "forbidden"}',
    ],
)
@pytest.mark.parametrize("status", [400, 403, 500, 502])
def test_malformed_error_bodies(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, body: bytes, status: int
) -> None:
    answer(gateway_mock, body, status)
    error = failure(gw)
    assert type(error) is GatewayResponseError
    assert error.status_code == status
    assert "Invalid error response format" in error.message


# Success body ----------------------------------------------------------------


def test_success(gw: GatewayClient, gateway_mock: responses.RequestsMock) -> None:
    answer(gateway_mock)
    secret = mint(gw, kind=Kind.TRANSCRIPTION, model="openai/gpt-4o-transcribe")
    assert secret.token == TOKEN
    assert secret.expires_at == 4102444800
    assert secret.kind is Kind.TRANSCRIPTION
    assert secret.model == "openai/gpt-4o-transcribe"
    assert TOKEN not in repr(secret)


@pytest.mark.parametrize(
    "body",
    [
        {"token": TOKEN},
        {"token": TOKEN, "expiresAt": None},
        {"token": TOKEN, "expiresAt": 1893456000.5},
        {"token": TOKEN, "expiresAt": 1, "extra": "ignored"},
    ],
)
def test_valid_success_bodies(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, body: Any
) -> None:
    answer(gateway_mock, body)
    secret = mint(gw)
    assert secret.token == TOKEN
    assert secret.expires_at == body.get("expiresAt")


def test_any_2xx_is_success(gw: GatewayClient, gateway_mock: responses.RequestsMock) -> None:
    answer(gateway_mock, status=201)
    assert mint(gw).token == TOKEN


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[]", id="list"),
        pytest.param(b"null", id="null"),
        pytest.param({}, id="no-token"),
        pytest.param({"token": ""}, id="empty-token"),
        pytest.param({"token": None}, id="null-token"),
        pytest.param({"token": 12345}, id="int-token"),
        pytest.param({"token": ["vcst_a"]}, id="list-token"),
        pytest.param({"token": "vcst a"}, id="space"),
        pytest.param({"token": "vcst,a"}, id="comma"),
        pytest.param({"token": "vcst_a\r\nX-Evil: 1"}, id="crlf"),
        pytest.param({"token": "vcst_é"}, id="non-ascii"),
        pytest.param({"token": "vcst_" + "a" * 4096}, id="too-long"),
        pytest.param({"token": SECRET}, id="the-credential"),
        pytest.param({"token": TOKEN, "expiresAt": -1}, id="negative"),
        pytest.param({"token": TOKEN, "expiresAt": 0}, id="zero"),
        pytest.param({"token": TOKEN, "expiresAt": "4102444800"}, id="string"),
        pytest.param({"token": TOKEN, "expiresAt": True}, id="true"),
        pytest.param({"token": TOKEN, "expiresAt": False}, id="false"),
        pytest.param({"token": TOKEN, "expiresAt": [1]}, id="list"),
        pytest.param(b'{"token": "' + TOKEN.encode() + b'", "expiresAt": NaN}', id="nan"),
        pytest.param(b'{"token": "' + TOKEN.encode() + b'", "expiresAt": Infinity}', id="inf"),
        pytest.param({"token": TOKEN, "expiresAt": 1e20}, id="beyond-year-9999"),
    ],
)
def test_invalid_success_bodies(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, body: Any
) -> None:
    answer(gateway_mock, body)
    error = failure(gw)
    assert type(error) is GatewayResponseError
    assert error.status_code == 200
    assert SECRET not in str(error)
    assert SECRET not in repr(error)


# Transport -------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_never_followed(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, status: int
) -> None:
    answer(gateway_mock, b"", status, Location="https://elsewhere.test/steal")
    answer(gateway_mock, url="https://elsewhere.test/steal")
    error = failure(gw)
    assert type(error) is GatewayResponseError
    assert error.status_code == status
    assert len(gateway_mock.calls) == 1


def test_a_redirect_body_is_never_read(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, settings: Any
) -> None:
    # requests reads a redirect's whole body even when it follows none: past the cap.
    settings.GATEWAY_REALTIME_MAX_RESPONSE_BYTES = 100
    body = SlowOrBrokenBody([b"x" * 60] * 3, None)
    streamed(gateway_mock, body, 302, {"Location": "https://elsewhere.test/"})
    error = failure(gw)
    assert type(error) is GatewayResponseError
    assert error.status_code == 302
    assert len(body.chunks) == 3


def test_declared_oversized_answer(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_MAX_RESPONSE_BYTES = 100
    answer(gateway_mock, b"x" * 101, **{"Content-Length": "101"})
    error = failure(gw)
    assert type(error) is GatewayResponseError
    assert "larger than 100 bytes" in error.message


def test_streamed_oversized_answer(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_MAX_RESPONSE_BYTES = 100
    streamed(gateway_mock, SlowOrBrokenBody([b"x" * 60, b"x" * 60, b"x" * 60], None))
    error = failure(gw)
    assert type(error) is GatewayResponseError
    assert error.status_code == 200


def test_answer_at_the_size_limit_is_read(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, settings: Any
) -> None:
    body = json.dumps({"token": TOKEN, "expiresAt": EXPIRES_AT}).encode()
    settings.GATEWAY_REALTIME_MAX_RESPONSE_BYTES = len(body)
    streamed(gateway_mock, SlowOrBrokenBody([body[:10], body[10:]], None))
    assert mint(gw).token == TOKEN


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ConnectTimeout("connect timed out"),
        requests.exceptions.ReadTimeout("read timed out"),
        requests.exceptions.Timeout("timed out"),
    ],
)
def test_timeouts(gw: GatewayClient, gateway_mock: responses.RequestsMock, exc: Exception) -> None:
    answer(gateway_mock, exc)
    error = failure(gw)
    assert type(error) is GatewayTimeoutError
    assert error.status_code is None
    assert error.__cause__ is None


def test_body_read_timeout(gw: GatewayClient, gateway_mock: responses.RequestsMock) -> None:
    streamed(gateway_mock, SlowOrBrokenBody([b'{"tok'], TimeoutError("timed out")))
    error = failure(gw)
    assert type(error) is GatewayTimeoutError


def test_total_deadline_while_reading(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, settings: Any
) -> None:
    settings.GATEWAY_REALTIME_TOTAL_TIMEOUT = 0.05
    streamed(gateway_mock, SlowOrBrokenBody([b" "] * 20, None, delay=0.02))
    error = failure(gw)
    assert type(error) is GatewayTimeoutError
    assert "GATEWAY_REALTIME_TOTAL_TIMEOUT" in error.message


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ConnectionError("refused"),
        requests.exceptions.SSLError("bad certificate"),
        requests.exceptions.ProxyError("proxy"),
        requests.exceptions.ChunkedEncodingError("broken"),
        requests.exceptions.InvalidHeader("bad header"),
    ],
)
def test_connection_errors(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, exc: Exception
) -> None:
    answer(gateway_mock, exc)
    error = failure(gw)
    assert type(error) is GatewayConnectionError
    assert "https://gateway.test" in error.message
    assert error.__cause__ is None


def test_connection_reset_while_reading_the_body(
    gw: GatewayClient, gateway_mock: responses.RequestsMock
) -> None:
    streamed(gateway_mock, SlowOrBrokenBody([b'{"tok'], ConnectionResetError("reset by peer")))
    error = failure(gw)
    assert type(error) is GatewayConnectionError


# The session -------------------------------------------------------------------


def test_one_session_for_every_call(
    gw: GatewayClient, gateway_mock: responses.RequestsMock
) -> None:
    answer(gateway_mock)
    session = gw.session
    mint(gw)
    mint(gw)
    assert gw.session is session
    assert len(gateway_mock.calls) == 2


def test_session_configuration(settings: Any) -> None:
    settings.GATEWAY_REALTIME_CONNECT_RETRIES = 3
    settings.GATEWAY_REALTIME_POOL_MAXSIZE = 7
    session = GatewayClient().build_session()
    assert dict(session.headers) == {}
    assert session.trust_env is False
    adapter = session.get_adapter("https://gateway.test/")
    assert adapter is session.get_adapter("http://127.0.0.1/")
    retries = adapter.max_retries
    # Only failures before the request was sent are retried.
    assert retries.connect == 3
    assert retries.read == 0
    assert retries.status == 0
    assert retries.other == 0
    assert retries.redirect == 0
    assert adapter._pool_maxsize == 7
    session.close()


def test_one_session_across_threads(
    gw: GatewayClient, gateway_mock: responses.RequestsMock
) -> None:
    answer(gateway_mock)
    sessions: list[requests.Session] = []
    clients: list[GatewayClient] = []

    def work() -> None:
        client = get_client()
        clients.append(client)
        sessions.append(client.session)
        mint(client)

    run_at_once(8, work)
    assert len({id(c) for c in clients}) == 1
    assert len({id(s) for s in sessions}) == 1
    assert len(gateway_mock.calls) == 8


def test_get_client_is_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_client()
    assert get_client() is first
    monkeypatch.setattr(os, "getpid", lambda: 999_999_999)
    forked = get_client()
    assert forked is not first
    assert get_client() is forked


def test_get_client_uses_the_client_class_setting(settings: Any) -> None:
    settings.GATEWAY_REALTIME_CLIENT_CLASS = "tests.test_client.CustomClient"
    assert type(get_client()) is CustomClient


class CustomClient(GatewayClient):
    pass


def test_reset_clients_closes_sessions() -> None:
    client = get_client()
    session = client.session
    reset_clients()
    assert client._session is None
    assert get_client() is not client
    assert session is not None


def test_no_cookies_are_stored(gw: GatewayClient, gateway_mock: responses.RequestsMock) -> None:
    answer(gateway_mock, **{"Set-Cookie": "gw=tracking; Path=/"})
    mint(gw)
    mint(gw)
    assert list(gw.session.cookies) == []
    assert "Cookie" not in gateway_mock.calls[1].request.headers


# Secrets in messages -------------------------------------------------------------


def test_echoed_credential_is_scrubbed(
    gw: GatewayClient, gateway_mock: responses.RequestsMock
) -> None:
    answer(gateway_mock, gateway_error("authentication_error", f"Invalid API key {SECRET}"), 401)
    error = failure(gw)
    assert isinstance(error, GatewayAuthenticationError)
    assert SECRET not in error.message
    assert "[redacted]" in error.message


@pytest.mark.parametrize(
    "setup",
    [
        lambda m: answer(m, gateway_error("authentication_error", f"bad key {SECRET}"), 401),
        lambda m: answer(m, gateway_error("rate_limit_exceeded", SECRET), 429),
        lambda m: answer(m, gateway_error("whatever", SECRET * 3), 500),
        lambda m: answer(m, f"<html>{SECRET}</html>".encode(), 500),
        lambda m: answer(m, {"token": SECRET}),
        lambda m: answer(m, b"", 302, Location=f"https://x.test/{SECRET}"),
        lambda m: answer(m, requests.ConnectionError(SECRET)),
        lambda m: answer(m, requests.ReadTimeout(SECRET)),
    ],
)
def test_exceptions_never_show_the_credential(
    gw: GatewayClient, gateway_mock: responses.RequestsMock, setup: Any
) -> None:
    setup(gateway_mock)
    error = failure(gw)
    for text in (str(error), repr(error), error.message, repr(error.args)):
        assert SECRET not in text


def test_credential_repr_hides_the_value() -> None:
    assert SECRET not in repr(KEY)
    assert SECRET not in str(KEY)


def test_the_next_read_is_limited_through_urllib3s_connection() -> None:
    # The one hook the trickle's deadline rests on, on a real socket.
    import types

    from gateway_realtime.client import limit_next_read
    from gateway_realtime.emulator import GatewayEmulator
    from gateway_realtime.testing import EMULATOR_API_KEY

    headers = {
        "Authorization": f"Bearer {EMULATOR_API_KEY}",
        "ai-gateway-auth-method": "api-key",
        "ai-gateway-protocol-version": "0.0.1",
    }
    with GatewayEmulator(api_keys=(EMULATOR_API_KEY,)) as emu, requests.Session() as session:
        body = {"model": "emulator/slow-body-1"}
        response = session.post(emu.mint_url, json=body, headers=headers, stream=True, timeout=5)
        with response:
            assert limit_next_read(response, 0.25) is True
            assert response.raw.connection.sock.gettimeout() == 0.25
    # Another transport adapter: nothing to limit, the deadline is checked between reads.
    assert limit_next_read(types.SimpleNamespace(raw=object()), 0.25) is False  # type: ignore[arg-type]
