"""Tests for the local Gateway emulator (``gateway_realtime.emulator``).

No Django needed: the emulator runs on aiohttp alone. WebSockets are driven by
a tiny raw-socket client below, so that the tests can also send what a real
client never would (bad UTF-8, oversize messages, orphan fragments).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway_realtime.emulator import MINT_PATH, REDIRECTED_MINT_PATH, GatewayEmulator

KEY = "emulator-key"
HEADERS = {
    "Authorization": f"Bearer {KEY}",
    "ai-gateway-protocol-version": "0.0.1",
    "ai-gateway-auth-method": "api-key",
}
MARKERS = {
    "realtime": "ai-gateway-realtime.v1",
    "transcription": "ai-gateway-transcription.v1",
    "speech": "ai-gateway-speech.v1",
}
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def emu():
    with GatewayEmulator(api_keys=(KEY,)) as emulator:
        yield emulator


@pytest.fixture
def team_emu():
    with GatewayEmulator(api_keys=(KEY,), team="my-team") as emulator:
        yield emulator


def mint(
    emu: GatewayEmulator,
    model: str = "openai/gpt-realtime-2",
    *,
    route_kind: str | None = None,
    expires_in: int | None = None,
    headers: dict[str, str] | None = None,
    session: requests.Session | None = None,
    **kwargs: Any,
) -> requests.Response:
    body: dict[str, Any] = {"model": model}
    if route_kind is not None:
        body["routeKind"] = route_kind
    if expires_in is not None:
        body["expiresIn"] = expires_in
    sender = session or requests
    kwargs.setdefault("timeout", 5)
    return sender.post(
        emu.origin + MINT_PATH, json=body, headers={**HEADERS, **(headers or {})}, **kwargs
    )


def token_for(emu: GatewayEmulator, model: str = "openai/gpt-realtime-2", **kwargs: Any) -> str:
    response = mint(emu, model, **kwargs)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def assert_contract_error(response: requests.Response, status: int, error_type: str | None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "generationId"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["type"] == error_type
    return body


# --------------------------------------------------------------------------
# A minimal raw-socket WebSocket client.


class WsClient:
    """Client side of RFC 6455, just enough to poke at the emulator."""

    def __init__(
        self,
        emu: GatewayEmulator,
        kind: str,
        model: str,
        protocols: list[str] | None,
        *,
        query: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", emu.port), timeout=5)
        self.key = base64.b64encode(os.urandom(16)).decode()
        if query is None:
            query = "ai-model-id=" + requests.utils.quote(model, safe="")
        lines = [
            f"GET {emu.base_path}/{kind}-model?{query} HTTP/1.1",
            f"Host: 127.0.0.1:{emu.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self.key}",
            "Sec-WebSocket-Version: 13",
        ]
        if protocols is not None:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
        lines.extend(f"{name}: {value}" for name, value in extra or [])
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        status_line, *header_lines = head.split("\r\n")
        self.status = int(status_line.split(" ")[1])
        self.headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines if line)
        }
        self.body = b""
        if self.status != 101:
            self.body = self._read_exactly(int(self.headers.get("content-length", "0")))

    @classmethod
    def open(
        cls, emu: GatewayEmulator, kind: str, model: str, token: str, team: str | None = None
    ) -> WsClient:
        protocols = [MARKERS[kind], f"ai-gateway-auth.{token}"]
        if team is not None:
            encoded = base64.urlsafe_b64encode(team.encode()).decode().rstrip("=")
            protocols.append(f"ai-gateway-team.{encoded}")
        return cls(emu, kind, model, protocols)

    def __enter__(self) -> WsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def error_type(self) -> str:
        return str(json.loads(self.body)["error"]["type"])

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the emulator")
        self.buffer += chunk

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _read_exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def send_frame(
        self, opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True
    ) -> None:
        first = (0x80 if fin else 0) | opcode
        length = len(payload)
        mask_bit = 0x80 if mask else 0
        if length < 126:
            head = struct.pack("!BB", first, mask_bit | length)
        elif length < 1 << 16:
            head = struct.pack("!BBH", first, mask_bit | 126, length)
        else:
            head = struct.pack("!BBQ", first, mask_bit | 127, length)
        if mask:
            key = os.urandom(4)
            payload = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
            head += key
        self.sock.sendall(head + payload)

    def send_json(self, event: dict[str, Any]) -> None:
        self.send_frame(0x1, json.dumps(event).encode())

    def recv_frame(self) -> tuple[int, bytes]:
        first, second = self._read_exactly(2)
        assert not second & 0x80, "server frames must not be masked"
        assert first & 0x80, "the emulator never fragments"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read_exactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read_exactly(8))
        return first & 0x0F, self._read_exactly(length)

    def recv_json(self) -> dict[str, Any]:
        opcode, payload = self.recv_frame()
        assert opcode == 0x1, (opcode, payload)
        return dict(json.loads(payload))

    def recv_until(self, event_type: str) -> list[dict[str, Any]]:
        events = []
        while True:
            event = self.recv_json()
            events.append(event)
            if event["type"] == event_type:
                return events

    def recv_close(self) -> int:
        """Read until the close frame; return its code."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 0x8:
                return int(struct.unpack("!H", payload[:2])[0]) if payload else 1005

    def close(self, code: int = 1000) -> int:
        self.send_frame(0x8, struct.pack("!H", code))
        return self.recv_close()


# --------------------------------------------------------------------------
# Mint route: success and recording.


def test_success_mint_shape_and_records(emu: GatewayEmulator) -> None:
    before = int(time.time())
    response = mint(emu, "openai/gpt-realtime-2")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"token", "expiresAt"}
    assert body["token"].startswith("vcst_") and len(body["token"]) > 20
    assert all(char.isalnum() or char in "-_" for char in body["token"])
    assert isinstance(body["expiresAt"], int)
    assert before + 59 <= body["expiresAt"] <= int(time.time()) + 61

    (record,) = emu.requests
    assert record.method == "POST" and record.path == MINT_PATH
    assert record.status == 200
    # Raw headers keep the client's own spelling and order.
    names = record.header_names
    assert "ai-gateway-protocol-version" in names and "Authorization" in names
    assert names.index("Authorization") < names.index("ai-gateway-auth-method")
    assert record.header("AUTHORIZATION") == f"Bearer {KEY}"
    assert record.body == b'{"model": "openai/gpt-realtime-2"}'
    assert record.json() == {"model": "openai/gpt-realtime-2"}
    assert record["method"] == "POST"

    info = emu.issued[body["token"]]
    assert (info.model, info.kind, info.used) == ("openai/gpt-realtime-2", "realtime", False)
    assert info.expires_at == body["expiresAt"]


def test_base_url_and_origin(emu: GatewayEmulator) -> None:
    assert emu.origin == f"http://127.0.0.1:{emu.port}"
    assert emu.base_url == f"http://127.0.0.1:{emu.port}/v4/ai"
    assert emu.ws_base_url == f"ws://127.0.0.1:{emu.port}/v4/ai"


# The cases of the shared test vectors, replayed against the emulator.
VECTORS = [
    ("openai/gpt-realtime-2", None, None, 200, None),
    ("openai/gpt-realtime-2", None, 120, 200, None),
    ("openai/gpt-4o-transcribe", "transcription", 30, 200, None),
    ("elevenlabs/eleven-v3", "speech", None, 200, None),
    ("openai/ratelimited", None, None, 429, "rate_limit_exceeded"),
    ("openai/missing", None, None, 404, "model_not_found"),
]


@pytest.mark.parametrize("team", [None, "my-team"])
@pytest.mark.parametrize(("model", "route_kind", "expires_in", "status", "error_type"), VECTORS)
def test_test_vectors(
    team: str | None,
    model: str,
    route_kind: str | None,
    expires_in: int | None,
    status: int,
    error_type: str | None,
) -> None:
    extra = {"x-vercel-ai-gateway-team": team} if team else {}
    with GatewayEmulator(api_keys=("test-gateway-key",), team=team) as emulator:
        response = mint(
            emulator,
            model,
            route_kind=route_kind,
            expires_in=expires_in,
            headers={**extra, "Authorization": "Bearer test-gateway-key"},
        )
        if error_type is None:
            assert response.status_code == 200
            token = response.json()["token"]
            info = emulator.issued[token]
            assert info.kind == (route_kind or "realtime")
            if expires_in:
                assert abs(info.expires_at - (time.time() + expires_in)) <= 2
        else:
            assert_contract_error(response, status, error_type)


def test_expires_in_is_capped_by_max_ttl() -> None:
    with GatewayEmulator(max_ttl=300) as emulator:
        assert mint(emulator, expires_in=300).status_code == 200
        assert_contract_error(mint(emulator, expires_in=301), 400, "invalid_request_error")


# --------------------------------------------------------------------------
# Mint route: authentication, headers, team, body.


@pytest.mark.parametrize(
    ("headers", "status", "error_type"),
    [
        ({"Authorization": ""}, 401, "authentication_error"),
        ({"Authorization": "Bearer wrong-key"}, 401, "authentication_error"),
        ({"Authorization": "Basic ZW11bGF0b3Ita2V5"}, 401, "authentication_error"),
        ({"ai-gateway-protocol-version": "0.0.2"}, 400, "invalid_request_error"),
        ({"ai-gateway-protocol-version": ""}, 400, "invalid_request_error"),
        ({"ai-gateway-auth-method": "password"}, 400, "invalid_request_error"),
        ({"ai-gateway-auth-method": ""}, 400, "invalid_request_error"),
        # An API key presented as an OIDC token is not accepted.
        ({"ai-gateway-auth-method": "oidc"}, 401, "authentication_error"),
    ],
)
def test_mint_auth_and_header_checks(
    emu: GatewayEmulator, headers: dict[str, str], status: int, error_type: str
) -> None:
    # requests drops headers whose value is None; "" means "send it empty" or,
    # for Authorization, we remove it below to test a missing header.
    merged = {**HEADERS, **headers}
    if merged.get("Authorization") == "":
        del merged["Authorization"]
    response = requests.post(
        emu.origin + MINT_PATH, json={"model": "m/x"}, headers=merged, timeout=5
    )
    assert_contract_error(response, status, error_type)
    assert not emu.issued
    assert emu.requests[0].status == status


def test_oidc_token_accepted_when_configured() -> None:
    with GatewayEmulator(oidc_tokens=("oidc-jwt",)) as emulator:
        ok = mint(
            emulator, headers={"Authorization": "Bearer oidc-jwt", "ai-gateway-auth-method": "oidc"}
        )
        assert ok.status_code == 200


def test_team_header_must_match(team_emu: GatewayEmulator) -> None:
    missing = mint(team_emu)
    body = assert_contract_error(missing, 403, "forbidden")
    assert "ruleId" in body["error"]["param"]
    assert_contract_error(
        mint(team_emu, headers={"x-vercel-ai-gateway-team": "other"}), 403, "forbidden"
    )
    assert mint(team_emu, headers={"x-vercel-ai-gateway-team": "my-team"}).status_code == 200


def test_team_header_is_ignored_without_a_team(emu: GatewayEmulator) -> None:
    assert mint(emu, headers={"x-vercel-ai-gateway-team": "anything"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"not json", "application/json"),
        (b"[]", "application/json"),
        (b"{}", "application/json"),
        (b'{"model": ""}', "application/json"),
        (b'{"model": null}', "application/json"),
        (b'{"model": 7}', "application/json"),
        (b'{"model": "a\\u0000b"}', "application/json"),
        (b'{"model": "m", "routeKind": "realtime"}', "application/json"),
        (b'{"model": "m", "routeKind": null}', "application/json"),
        (b'{"model": "m", "expiresIn": 0}', "application/json"),
        (b'{"model": "m", "expiresIn": 3601}', "application/json"),
        (b'{"model": "m", "expiresIn": "60"}', "application/json"),
        (b'{"model": "m", "expiresIn": 60.0}', "application/json"),
        (b'{"model": "m", "expiresIn": true}', "application/json"),
        (b'{"model": "m", "expiresIn": null}', "application/json"),
        (b'{"model": "m", "extra": 1}', "application/json"),
        (b'{"model": "m"}', "text/plain"),
    ],
)
def test_malformed_bodies_are_invalid_requests(
    emu: GatewayEmulator, body: bytes, content_type: str
) -> None:
    response = requests.post(
        emu.origin + MINT_PATH,
        data=body,
        headers={**HEADERS, "Content-Type": content_type},
        timeout=5,
    )
    assert_contract_error(response, 400, "invalid_request_error")
    assert emu.requests[0].body == body


def test_chunked_request_body_is_accepted(emu: GatewayEmulator) -> None:
    def chunks():
        yield b'{"model": '
        yield b'"openai/gpt-realtime-2"}'

    response = requests.post(
        emu.origin + MINT_PATH,
        data=chunks(),
        headers={**HEADERS, "Content-Type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 200
    assert emu.requests[0].header("transfer-encoding") == "chunked"


def test_other_routes(emu: GatewayEmulator) -> None:
    assert_contract_error(
        requests.get(emu.origin + MINT_PATH, timeout=5), 405, "invalid_request_error"
    )
    assert_contract_error(requests.post(emu.base_url + MINT_PATH, timeout=5), 404, "not_found")
    # The mint route is at the origin root, not under the base path.
    assert_contract_error(requests.get(emu.origin + "/nope", timeout=5), 404, "not_found")
    health = requests.get(emu.origin + "/healthz", timeout=5)
    assert health.status_code == 200
    assert [r.status for r in emu.requests] == [405, 404, 404]
    # A plain GET on a WebSocket route asks for an upgrade.
    plain = requests.get(emu.base_url + "/realtime-model?ai-model-id=m", timeout=5)
    assert plain.status_code == 426


# --------------------------------------------------------------------------
# Faults chosen by the model id.


@pytest.mark.parametrize(
    ("model", "status", "error_type"),
    [
        ("emulator/rate-limited", 429, "rate_limit_exceeded"),
        ("openai/ratelimited", 429, "rate_limit_exceeded"),
        ("emulator/missing", 404, "model_not_found"),
        ("acme/missing-model", 404, "model_not_found"),
        ("emulator/forbidden", 403, "forbidden"),
        ("emulator/not-found", 404, "not_found"),
        ("emulator/invalid", 400, "invalid_request_error"),
        ("emulator/auth-error", 401, "authentication_error"),
        ("emulator/internal", 500, "emulator_internal_error"),
    ],
)
def test_contract_shaped_faults(
    emu: GatewayEmulator, model: str, status: int, error_type: str
) -> None:
    response = mint(emu, model)
    body = assert_contract_error(response, status, error_type)
    assert isinstance(body["generationId"], str)
    if status == 429:
        assert response.headers["Retry-After"] == "7"
    if error_type == "model_not_found":
        assert body["error"]["param"] == {"modelId": model}
    if error_type == "forbidden":
        assert body["error"]["param"]["ruleId"]
    assert not emu.issued
    assert emu.requests[0].json()["model"] == model


def test_non_contract_faults(emu: GatewayEmulator) -> None:
    bad_gateway = mint(emu, "emulator/bad-gateway")
    assert bad_gateway.status_code == 502
    assert bad_gateway.headers["Content-Type"].startswith("text/html")

    html = mint(emu, "emulator/html")
    assert html.status_code == 200 and html.headers["Content-Type"].startswith("text/html")

    malformed = mint(emu, "emulator/malformed")
    assert malformed.status_code == 200
    with pytest.raises(ValueError):
        json.loads(malformed.content)

    assert mint(emu, "emulator/no-token").json() == {"expiresAt": 1}
    assert mint(emu, "emulator/empty-token").json()["token"] == ""
    assert mint(emu, "emulator/bad-expiry").json()["expiresAt"] == -1
    assert isinstance(mint(emu, "emulator/bad-expiry-string").json()["expiresAt"], str)

    huge = mint(emu, "emulator/huge")
    assert huge.status_code == 200 and len(huge.content) > 5 * 1024 * 1024
    assert huge.json()["token"].startswith("vcst_")

    spaces = mint(emu, "emulator/spaces-token").json()["token"]
    assert " " in spaces and "," in spaces
    assert len(emu.requests) == 9


def test_redirect_points_at_the_same_emulator(emu: GatewayEmulator) -> None:
    response = mint(emu, "emulator/redirect", allow_redirects=False)
    assert response.status_code == 307
    location = response.headers["Location"]
    assert location == emu.origin + REDIRECTED_MINT_PATH
    followed = requests.post(
        location, json={"model": "emulator/redirect"}, headers=HEADERS, timeout=5
    )
    assert followed.status_code == 200 and followed.json()["token"].startswith("vcst_")


def test_slow_headers(emu: GatewayEmulator) -> None:
    with pytest.raises(requests.exceptions.ReadTimeout):
        mint(emu, "emulator/slow-headers-0.5", timeout=(2, 0.1))
    started = time.monotonic()
    response = mint(emu, "emulator/slow-headers-0.3")
    assert time.monotonic() - started >= 0.25
    assert response.status_code == 200


def test_slow_body_trickles_after_the_headers(emu: GatewayEmulator) -> None:
    started = time.monotonic()
    with mint(emu, "emulator/slow-body-0.4", stream=True) as response:
        headers_after = time.monotonic() - started
        assert response.status_code == 200
        body = response.content
    total = time.monotonic() - started
    assert headers_after < 0.2
    assert total >= 0.35
    assert json.loads(body)["token"].startswith("vcst_")


def test_drop_closes_without_an_answer(emu: GatewayEmulator) -> None:
    with pytest.raises(requests.exceptions.ConnectionError):
        mint(emu, "emulator/drop")
    (record,) = emu.requests
    assert record.status is None and record.json()["model"] == "emulator/drop"


def test_held_mints_wait_and_nothing_else_does() -> None:
    with GatewayEmulator(api_keys=(KEY,)) as emulator, ThreadPoolExecutor(max_workers=2) as pool:
        with emulator.holding_mints():
            held = [pool.submit(mint, emulator) for _ in range(2)]
            emulator.wait_for_held_mints(2)
            # Served while both mints wait: the hold is an asyncio wait.
            assert requests.get(emulator.origin + "/healthz", timeout=5).status_code == 200
            assert mint(emulator, "openai/ratelimited").status_code == 429
            assert not any(future.done() for future in held)
        assert [future.result().status_code for future in held] == [200, 200]
        assert mint(emulator).status_code == 200  # no longer held


def test_mint_delay_holds_each_success_at_least_that_long() -> None:
    # Only the lower bound, which sleeping guarantees; how long a mint takes
    # on top is the benchmark's business, not a test's.
    with GatewayEmulator(api_keys=(KEY,), mint_delay=0.2) as emulator:
        with requests.Session() as session:
            started = time.monotonic()
            assert mint(emulator, session=session).status_code == 200
            assert time.monotonic() - started >= 0.2
            assert mint(emulator, "openai/ratelimited", session=session).status_code == 429
            # Settable while running: the next mint reads it.
            emulator.mint_delay = 0.0
            assert mint(emulator, session=session).status_code == 200
        assert emulator.tcp_connections == 1


# --------------------------------------------------------------------------
# Connections.


def test_keep_alive_reuses_one_connection(emu: GatewayEmulator) -> None:
    with requests.Session() as session:
        first = mint(emu, session=session)
        second = mint(emu, route_kind="speech", session=session)
        error = mint(emu, "openai/ratelimited", session=session)
    assert (first.status_code, second.status_code, error.status_code) == (200, 200, 429)
    assert emu.tcp_connections == 1
    assert len({r.connection_id for r in emu.requests}) == 1


def test_many_concurrent_connections(emu: GatewayEmulator) -> None:
    def work(_: int) -> list[int]:
        with requests.Session() as session:
            return [mint(emu, session=session).status_code for _ in range(5)]

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(work, range(20)))
    assert all(code == 200 for codes in results for code in codes)
    assert emu.tcp_connections == 20
    assert len(emu.issued) == 100


def test_pipelined_and_http10_requests(emu: GatewayEmulator) -> None:
    body = b'{"model":"m/x"}'
    request = (
        f"POST {MINT_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        "ai-gateway-protocol-version: 0.0.1\r\nai-gateway-auth-method: api-key\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(request + request.replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    # aiohttp answers in the request's own version.
    assert data.count(b"HTTP/1.1 200 OK") == 1 and data.count(b"HTTP/1.0 200 OK") == 1
    # HTTP/1.0 without keep-alive closes after answering (recv returned b"").
    assert data.rstrip().endswith(b"}")
    assert emu.tcp_connections == 1


def test_bad_request_line_gets_400(emu: GatewayEmulator) -> None:
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        # aiohttp answers an unparsable request in HTTP/1.0.
        assert sock.recv(100).startswith(b"HTTP/1.0 400")


def test_reset_clears_records(emu: GatewayEmulator) -> None:
    token_for(emu)
    assert emu.requests and emu.issued and emu.tcp_connections
    emu.reset()
    assert (emu.requests, emu.issued, emu.ws_sessions, emu.tcp_connections) == ([], {}, [], 0)


def test_loopback_only_unless_allowed() -> None:
    with pytest.raises(ValueError, match="loopback"):
        GatewayEmulator(host="0.0.0.0")
    with pytest.raises(ValueError, match="loopback"):
        GatewayEmulator(host="example.com")
    GatewayEmulator(host="localhost")  # constructing does not bind
    GatewayEmulator(host="::1")


def test_start_reports_a_busy_port(emu: GatewayEmulator) -> None:
    with pytest.raises(OSError):
        GatewayEmulator(port=emu.port).start()


# --------------------------------------------------------------------------
# WebSocket handshake.


def test_ws_accepts_correct_subprotocols(emu: GatewayEmulator) -> None:
    token = token_for(emu)
    with WsClient.open(emu, "realtime", "openai/gpt-realtime-2", token) as ws:
        assert ws.status == 101
        assert ws.headers["sec-websocket-protocol"] == "ai-gateway-realtime.v1"
        expected = base64.b64encode(
            hashlib.sha1((ws.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        assert ws.headers["sec-websocket-accept"] == expected
        created = ws.recv_json()
        assert created["type"] == "session-created" and created["sessionId"]
        assert emu.issued[token].used is True
        assert ws.close() == 1000
    (handshake,) = emu.ws_handshakes
    assert handshake.status == 101
    assert handshake.subprotocols == ["ai-gateway-realtime.v1", f"ai-gateway-auth.{token}"]
    (session,) = emu.wait_for_ws_sessions(1)
    assert (session.kind, session.model, session.close_code) == (
        "realtime",
        "openai/gpt-realtime-2",
        1000,
    )


def test_ws_with_team(team_emu: GatewayEmulator) -> None:
    headers = {"x-vercel-ai-gateway-team": "my-team"}
    token = token_for(team_emu, headers=headers)
    with WsClient.open(team_emu, "realtime", "openai/gpt-realtime-2", token, team="other") as ws:
        assert (ws.status, ws.error_type()) == (403, "team_mismatch")
    with WsClient.open(team_emu, "realtime", "openai/gpt-realtime-2", token) as ws:
        assert (ws.status, ws.error_type()) == (403, "team_required")
    bad = [MARKERS["realtime"], f"ai-gateway-auth.{token}", "ai-gateway-team.bXktdGVhbQ=="]
    with WsClient(team_emu, "realtime", "openai/gpt-realtime-2", bad) as ws:
        assert (ws.status, ws.error_type()) == (400, "invalid_subprotocol")
    with WsClient.open(team_emu, "realtime", "openai/gpt-realtime-2", token, team="my-team") as ws:
        assert ws.status == 101
        assert ws.recv_json()["type"] == "session-created"


def test_ws_rejections(emu: GatewayEmulator) -> None:
    model = "openai/gpt-realtime-2"

    def refused(kind: str, model_id: str, protocols: list[str] | None, **kw: Any) -> tuple:
        with WsClient(emu, kind, model_id, protocols, **kw) as ws:
            assert ws.status != 101
            # A refusal is plain HTTP: no upgrade happened.
            assert "sec-websocket-accept" not in ws.headers
            return ws.status, ws.error_type()

    def offer(token: str, kind: str = "realtime") -> list[str]:
        return [MARKERS[kind], f"ai-gateway-auth.{token}"]

    assert refused("realtime", model, offer("vcst_unknown")) == (401, "token_invalid")

    used = token_for(emu)
    with WsClient(emu, "realtime", model, offer(used)) as ws:
        assert ws.status == 101
    assert refused("realtime", model, offer(used)) == (401, "token_used")

    expired = token_for(emu)
    emu.expire_token(expired)
    assert refused("realtime", model, offer(expired)) == (401, "token_expired")

    other_model = token_for(emu)
    assert refused("realtime", "openai/other", offer(other_model)) == (403, "model_mismatch")

    transcription = token_for(emu, "openai/gpt-4o-transcribe", route_kind="transcription")
    assert refused("realtime", "openai/gpt-4o-transcribe", offer(transcription)) == (
        403,
        "kind_mismatch",
    )
    assert refused("speech", "openai/gpt-4o-transcribe", offer(transcription, "speech")) == (
        403,
        "kind_mismatch",
    )

    fresh = token_for(emu)
    assert refused("realtime", model, None)[0] == 400
    assert refused("realtime", model, [f"ai-gateway-auth.{fresh}", MARKERS["realtime"]]) == (
        400,
        "invalid_subprotocol",
    )
    assert refused("realtime", model, [MARKERS["speech"], f"ai-gateway-auth.{fresh}"]) == (
        400,
        "invalid_subprotocol",
    )
    assert refused("realtime", model, [MARKERS["realtime"]]) == (401, "token_missing")
    assert refused("realtime", model, offer(fresh), query="other=1") == (
        400,
        "invalid_request_error",
    )
    huge = [*offer(fresh), "x" * 9000]
    assert refused("realtime", model, huge) == (431, "header_too_large")
    # None of those refusals spent the token.
    assert emu.issued[fresh].used is False
    with WsClient(emu, "realtime", model, offer(fresh)) as ws:
        assert ws.status == 101
    assert [h.status for h in emu.ws_handshakes].count(101) == 2


def test_ws_model_id_is_form_decoded(emu: GatewayEmulator) -> None:
    token = token_for(emu, "openai/gpt-realtime-2")
    protocols = [MARKERS["realtime"], f"ai-gateway-auth.{token}"]
    with WsClient(
        emu, "realtime", "", protocols, query="ai-model-id=openai%2Fgpt-realtime-2"
    ) as ws:
        assert ws.status == 101


def test_api_key_websocket_only_when_allowed() -> None:
    protocols = [MARKERS["speech"], f"ai-gateway-auth.{KEY}"]
    with (
        GatewayEmulator(api_keys=(KEY,)) as strict,
        WsClient(strict, "speech", "m/x", protocols) as ws,
    ):
        assert (ws.status, ws.error_type()) == (401, "token_invalid")
    with (
        GatewayEmulator(api_keys=(KEY,), allow_api_key_ws=True) as lenient,
        WsClient(lenient, "speech", "m/x", protocols) as ws,
    ):
        assert ws.status == 101


# --------------------------------------------------------------------------
# The scripted realtime conversation (normalized AI SDK realtime events).


def open_realtime(emu: GatewayEmulator, model: str = "openai/gpt-realtime-2") -> WsClient:
    ws = WsClient.open(emu, "realtime", model, token_for(emu, model))
    assert ws.status == 101
    assert ws.recv_json()["type"] == "session-created"
    return ws


def test_realtime_text_conversation(emu: GatewayEmulator) -> None:
    with open_realtime(emu) as ws:
        ws.send_json({"type": "session-update", "config": {"outputModalities": ["text"]}})
        updated = ws.recv_json()
        assert updated["type"] == "session-updated" and "raw" in updated

        ws.send_json(
            {
                "type": "conversation-item-create",
                "item": {"type": "text-message", "role": "user", "text": "hello there"},
            }
        )
        added = ws.recv_json()
        assert added["type"] == "conversation-item-added" and added["item"]["text"] == "hello there"

        ws.send_json({"type": "response-create"})
        events = ws.recv_until("response-done")
        types = [event["type"] for event in events]
        assert types[:3] == ["response-created", "output-item-added", "content-part-added"]
        assert types[-4:] == ["text-done", "content-part-done", "output-item-done", "response-done"]
        deltas = [event["delta"] for event in events if event["type"] == "text-delta"]
        assert len(deltas) > 1
        done = next(event for event in events if event["type"] == "text-done")
        assert "".join(deltas) == done["text"] and "hello there" in done["text"]
        response_ids = {event["responseId"] for event in events}
        assert len(response_ids) == 1
        item_ids = {event["itemId"] for event in events if "itemId" in event}
        assert len(item_ids) == 1
        assert events[-1]["status"] == "completed" and events[-1]["usage"]["outputTokens"] > 0
        assert all("raw" in event for event in events)

        ws.send_json({"type": "session-close"})
        closed = ws.recv_json()
        assert closed["type"] == "session-closed" and "seconds" in closed["usage"]
        assert ws.recv_close() == 1000
        ws.send_frame(0x8, struct.pack("!H", 1000))


def test_realtime_audio_reply_and_errors(emu: GatewayEmulator) -> None:
    with open_realtime(emu) as ws:
        ws.send_json({"type": "response-create", "options": {"modalities": ["audio", "text"]}})
        events = ws.recv_until("response-done")
        types = {event["type"] for event in events}
        assert {
            "audio-delta",
            "audio-transcript-delta",
            "audio-done",
            "audio-transcript-done",
        } <= types
        audio = next(event for event in events if event["type"] == "audio-delta")["delta"]
        # 125 ms of a soft tone at 24 kHz: audible, not silence.
        pcm = base64.b64decode(audio)
        assert len(pcm) == 2 * 24000 // 8 and set(pcm) != {0}

        ws.send_json({"type": "no-such-event", "eventId": "evt_1"})
        error = ws.recv_json()
        assert error["type"] == "error" and error["clientEventId"] == "evt_1"
        ws.send_frame(0x1, b"{not json")
        assert ws.recv_json()["code"] == "invalid_json"
        ws.send_frame(0x2, b"\x00\x01")
        assert ws.recv_json()["type"] == "error"
        ws.send_json({"type": "input-audio-commit"})
        assert ws.recv_json()["code"] == "input_audio_buffer_empty"
        ws.send_json({"type": "input-audio-mute", "eventId": "evt_2"})
        ack = ws.recv_json()
        assert ack["type"] == "command-acknowledged" and ack["clientEventId"] == "evt_2"
        assert ws.close() == 1000


def pcm(level: int, seconds: float, rate: int = 24000) -> str:
    samples = struct.pack(f"<{int(rate * seconds)}h", *([level] * int(rate * seconds)))
    return base64.b64encode(samples).decode()


def test_realtime_voice_turn_with_server_vad(emu: GatewayEmulator) -> None:
    with open_realtime(emu) as ws:
        ws.send_json({"type": "input-audio-append", "audio": pcm(0, 0.1)})  # quiet: ignored
        ws.send_json({"type": "input-audio-append", "audio": pcm(4000, 0.3)})
        assert ws.recv_json()["type"] == "speech-started"
        for _ in range(6):
            ws.send_json({"type": "input-audio-append", "audio": pcm(0, 0.1)})
        events = ws.recv_until("response-done")
        types = [event["type"] for event in events]
        assert types[:3] == ["speech-stopped", "audio-committed", "input-transcription-completed"]
        assert "0.8 s of audio" in events[2]["transcript"]
        assert "text-done" in types


def test_realtime_push_to_talk_commit(emu: GatewayEmulator) -> None:
    with open_realtime(emu) as ws:
        ws.send_json({"type": "session-update", "config": {"turnDetection": None}})
        assert ws.recv_json()["type"] == "session-updated"
        ws.send_json({"type": "input-audio-append", "audio": pcm(4000, 0.5)})
        ws.send_json({"type": "input-audio-commit"})
        committed, transcribed = ws.recv_json(), ws.recv_json()
        assert committed["type"] == "audio-committed"
        assert transcribed["type"] == "input-transcription-completed"
        assert transcribed["itemId"] == committed["itemId"]
        ws.send_json({"type": "response-create"})
        assert ws.recv_until("response-done")[-1]["status"] == "completed"


def test_realtime_tool_call_round_trip(emu: GatewayEmulator) -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    }
    with open_realtime(emu) as ws:
        ws.send_json({"type": "session-update", "config": {"tools": [tool]}})
        ws.recv_json()
        ws.send_json(
            {
                "type": "conversation-item-create",
                "item": {"type": "text-message", "role": "user", "text": "call get_weather"},
            }
        )
        ws.recv_json()
        ws.send_json({"type": "response-create"})
        events = ws.recv_until("response-done")
        done = next(e for e in events if e["type"] == "function-call-arguments-done")
        deltas = [e["delta"] for e in events if e["type"] == "function-call-arguments-delta"]
        assert done["name"] == "get_weather" and "".join(deltas) == done["arguments"]
        assert json.loads(done["arguments"]) == {"city": "emulator"}
        ws.send_json(
            {
                "type": "conversation-item-create",
                "item": {
                    "type": "function-call-output",
                    "callId": done["callId"],
                    "name": "get_weather",
                    "output": '"sunny"',
                },
            }
        )
        assert ws.recv_json()["type"] == "conversation-item-added"
        ws.send_json({"type": "response-create"})
        reply = next(e for e in ws.recv_until("response-done") if e["type"] == "text-done")
        assert "sunny" in reply["text"]


# --------------------------------------------------------------------------
# Frame-level behaviour.


def test_ping_pong_and_fragmented_messages(emu: GatewayEmulator) -> None:
    with open_realtime(emu) as ws:
        ws.send_frame(0x9, b"are you there")
        assert ws.recv_frame() == (0xA, b"are you there")
        message = json.dumps({"type": "session-update", "config": {"voice": "alloy"}}).encode()
        ws.send_frame(0x1, message[:5], fin=False)
        ws.send_frame(0x9, b"mid")  # control frames may interleave
        ws.send_frame(0x0, message[5:20], fin=False)
        ws.send_frame(0x0, message[20:], fin=True)
        assert ws.recv_frame() == (0xA, b"mid")
        assert ws.recv_json()["type"] == "session-updated"
        assert ws.close(4001) == 4001


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ((0x1, b"\xff\xfe", {}), 1007),
        ((0x0, b"orphan", {}), 1002),
        ((0x3, b"", {}), 1002),
        ((0x1, b"x" * 2048, {}), 1009),
    ],
)
def test_protocol_violations_close_the_socket(
    frame: tuple[int, bytes, dict[str, Any]], code: int
) -> None:
    with GatewayEmulator(max_message_size=1024) as emulator, open_realtime(emulator) as ws:
        opcode, payload, options = frame
        ws.send_frame(opcode, payload, **options)
        assert ws.recv_close() == code


def test_fragments_count_against_the_size_cap() -> None:
    with GatewayEmulator(max_message_size=1024) as emulator, open_realtime(emulator) as ws:
        ws.send_frame(0x1, b"x" * 600, fin=False)
        ws.send_frame(0x0, b"x" * 600, fin=True)
        assert ws.recv_close() == 1009


# --------------------------------------------------------------------------
# Transcription and speech envelopes.


def test_transcription_stream(emu: GatewayEmulator) -> None:
    model = "openai/gpt-4o-transcribe"
    token = token_for(emu, model, route_kind="transcription")
    with WsClient.open(emu, "transcription", model, token) as ws:
        assert ws.headers["sec-websocket-protocol"] == "ai-gateway-transcription.v1"
        ws.send_json(
            {
                "type": "transcription-stream.start",
                "inputAudioFormat": {"type": "audio/pcm", "rate": 16000},
            }
        )
        assert ws.recv_json() == {"type": "stream-start", "warnings": []}
        metadata = ws.recv_json()
        assert metadata["type"] == "response-metadata" and metadata["modelId"] == model
        for _ in range(3):
            ws.send_frame(0x2, b"\x00\x00" * 8000)
        deltas = [ws.recv_json() for _ in range(3)]
        assert all(delta["type"] == "transcript-delta" for delta in deltas)
        ws.send_json({"type": "something-new"})  # unknown frames are ignored
        ws.send_json({"type": "transcription-stream.audio-done"})
        final, finish = ws.recv_json(), ws.recv_json()
        text = "".join(delta["delta"] for delta in deltas)
        assert final["type"] == "transcript-final" and final["text"] == text
        assert finish["type"] == "finish" and finish["text"] == text
        assert finish["durationInSeconds"] == pytest.approx(1.5)
        assert finish["segments"][0]["endSecond"] == pytest.approx(1.5)
        assert ws.recv_close() == 1000


def test_transcription_needs_a_start_frame(emu: GatewayEmulator) -> None:
    model = "openai/gpt-4o-transcribe"
    token = token_for(emu, model, route_kind="transcription")
    with WsClient.open(emu, "transcription", model, token) as ws:
        ws.send_frame(0x2, b"\x00" * 10)
        error = ws.recv_json()
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert ws.recv_close() == 1008


def test_speech_stream(emu: GatewayEmulator) -> None:
    model = "elevenlabs/eleven-v3"
    token = token_for(emu, model, route_kind="speech")
    with WsClient.open(emu, "speech", model, token) as ws:
        assert ws.headers["sec-websocket-protocol"] == "ai-gateway-speech.v1"
        ws.send_json(
            {"type": "speech-stream.start", "outputFormat": {"type": "audio/pcm", "rate": 16000}}
        )
        assert ws.recv_json()["type"] == "stream-start"
        assert ws.recv_json()["type"] == "response-metadata"
        for delta in ("Hello ", "", "world"):
            ws.send_json({"type": "speech-stream.text-delta", "delta": delta})
        audio = [ws.recv_json() for _ in range(2)]
        for part in audio:
            assert part["type"] == "audio"
            assert part["audioFormat"] == {"type": "audio/pcm", "rate": 16000}
            assert set(base64.b64decode(part["audio"])) == {0}
        ws.send_json({"type": "speech-stream.text-done"})
        assert ws.recv_json() == {"type": "finish", "usage": {"inputCharacters": 11}}
        assert ws.recv_close() == 1000


def test_ws_fault_models(emu: GatewayEmulator) -> None:
    with open_realtime(emu, "emulator/ws-error") as ws:
        assert ws.recv_json()["type"] == "error"
        assert ws.recv_close() == 1011
    with open_realtime(emu, "emulator/ws-drop") as ws, pytest.raises(ConnectionError):
        ws.recv_frame()


# --------------------------------------------------------------------------
# TLS and the command line.


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    with GatewayEmulator(tls_cert=str(cert), tls_key=str(key)) as emulator:
        assert emulator.base_url.startswith("https://")
        assert emulator.ws_base_url.startswith("wss://")
        response = mint(emulator, verify=str(cert))
        assert response.status_code == 200


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway_realtime.emulator", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def read_line(process: subprocess.Popen[str], timeout: float = 10) -> str:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    assert line, "the emulator printed nothing"
    return line[0]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_and_stops_cleanly(stop_signal: signal.Signals) -> None:
    process = run_cli("--port", "0", "--api-key", "cli-key", "--team", "t1")
    try:
        line = read_line(process)
        prefix = "Gateway emulator listening on http://127.0.0.1:"
        assert line.startswith(prefix) and line.rstrip().endswith("/v4/ai")
        port = int(line[len(prefix) :].split("/")[0])
        assert port > 0
        response = requests.post(
            f"http://127.0.0.1:{port}{MINT_PATH}",
            json={"model": "m/x"},
            headers={
                **HEADERS,
                "Authorization": "Bearer cli-key",
                "x-vercel-ai-gateway-team": "t1",
            },
            timeout=5,
        )
        assert response.status_code == 200
        process.send_signal(stop_signal)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read() == "Gateway emulator stopped.\n"  # type: ignore[union-attr]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]


def test_cli_key_from_environment() -> None:
    process = run_cli("--port", "0", env={"AI_GATEWAY_API_KEY": "env-key"})
    try:
        line = read_line(process)
        base_url = line.rsplit(" ", 1)[1].strip()
        origin = base_url.removesuffix("/v4/ai")
        response = requests.post(
            origin + MINT_PATH,
            json={"model": "m/x"},
            headers={**HEADERS, "Authorization": "Bearer env-key"},
            timeout=5,
        )
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]


def test_cli_mint_delay() -> None:
    process = run_cli("--port", "0", "--mint-delay", "0.3")
    try:
        base_url = read_line(process).rsplit(" ", 1)[1].strip()
        started = time.monotonic()
        response = requests.post(
            base_url.removesuffix("/v4/ai") + MINT_PATH,
            json={"model": "m/x"},
            headers=HEADERS,
            timeout=5,
        )
        assert response.status_code == 200
        assert time.monotonic() - started >= 0.28
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]


def test_cli_refuses_non_loopback() -> None:
    process = run_cli("--host", "0.0.0.0", "--port", "0")
    out, err = process.communicate(timeout=10)
    assert process.returncode == 2
    assert "loopback" in err and out == ""


# --------------------------------------------------------------------------
# aiohttp is the emulator's extra, never the app's dependency.

BLOCK_AIOHTTP = "import sys; sys.modules['aiohttp'] = None; "


def run_without_aiohttp(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_AIOHTTP + code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
    )


def test_cli_without_aiohttp_says_how_to_install_it() -> None:
    result = run_without_aiohttp(
        "import runpy; runpy.run_module('gateway_realtime.emulator', run_name='__main__')"
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    # It names the command that installs the extra (kept out of this file's text).
    assert " ".join(("pip", "install", '"django-gateway-realtime[emulator]"')) in last_line


def test_the_app_imports_nothing_of_aiohttp() -> None:
    result = run_without_aiohttp(
        "import importlib, pkgutil, django; django.setup(); import gateway_realtime\n"
        "for module in pkgutil.walk_packages(gateway_realtime.__path__, 'gateway_realtime.'):\n"
        "    if not module.name.startswith('gateway_realtime.emulator'):\n"
        "        importlib.import_module(module.name)\n"
        "print('ok')"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
