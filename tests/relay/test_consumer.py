"""RelayConsumer through Channels' WebsocketCommunicator, against the emulator on a socket."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time

import pytest
from django.test import override_settings
from websockets.asyncio.server import serve

from gateway_realtime.models import DailyUsage, RelaySession
from gateway_realtime.relay.revocation import group_for

from .conftest import RELAY_KEY, RELAY_PATH, run_async

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5


def run(coroutine_function):
    return run_async(coroutine_function)


async def next_close(comm, timeout=TIMEOUT):
    """Skip data frames until the app closes the socket; return (code, reason, frames skipped)."""
    frames = []
    while True:
        out = await comm.receive_output(timeout)
        if out["type"] == "websocket.close":
            return out.get("code"), out.get("reason"), frames
        frames.append(out.get("text", out.get("bytes")))


async def open_session(comm):
    connected, _ = await comm.connect(TIMEOUT)
    assert connected
    created = await comm.receive_json_from(TIMEOUT)
    assert created["type"] == "session-created"


async def finish(comm):
    await comm.disconnect(timeout=TIMEOUT)


def wait_for(predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def connect_until_closed(browser):
    """Open the browser's socket and read until the relay closes it: (code, reason, frames)."""

    async def scenario():
        comm = browser.communicator()
        assert (await comm.connect(TIMEOUT))[0]
        closed = await next_close(comm)
        await finish(comm)
        return closed

    return run(scenario)


def only_row():
    rows = list(RelaySession.objects.all())
    assert len(rows) == 1
    return rows[0]


# Frames both ways ----------------------------------------------------------------


def test_events_reach_the_emulator_and_back(relay_emulator, relay_browser, user):
    browser = relay_browser(user)

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        update = {"type": "session-update", "config": {"outputModalities": ["text"]}}
        await comm.send_to(text_data=json.dumps(update))
        assert (await comm.receive_json_from(TIMEOUT))["type"] == "session-updated"
        await finish(comm)

    run(scenario)
    record = wait_for(lambda: relay_emulator.ws_sessions)[0]
    assert record.received == ["session-update"]
    assert record.sent[:2] == ["session-created", "session-updated"]
    assert record.subprotocols == []
    handshake = relay_emulator.ws_handshakes[0]
    headers = {name.lower(): value for name, value in handshake.headers}
    assert headers["authorization"] == f"Bearer {RELAY_KEY}"
    assert headers["ai-gateway-protocol-version"] == "0.0.1"
    assert headers["ai-gateway-auth-method"] == "api-key"
    assert "content-type" not in headers and "sec-websocket-protocol" not in headers


class EchoGateway:
    """A tiny WebSocket server on 127.0.0.1 standing in for the Gateway: echoes every frame.

    The text frame ``burst`` is answered with 200 frames instead.
    """

    def __init__(self):
        self.headers = []
        self.server = None

    async def handler(self, ws):
        self.headers.append(ws.request.headers)
        async for message in ws:
            if message == "burst":
                for index in range(200):
                    await ws.send(f'{{"type":"burst","n":{index}}}')
            else:
                await ws.send(message)

    async def __aenter__(self):
        self.server = await serve(self.handler, "127.0.0.1", 0, compression=None)
        port = self.server.sockets[0].getsockname()[1]
        self.override = override_settings(
            GATEWAY_REALTIME_BASE_URL=f"http://127.0.0.1:{port}/v4/ai"
        )
        self.override.enable()
        return self

    async def __aexit__(self, *exc):
        self.override.disable()
        self.server.close()
        await self.server.wait_closed()


TEXT_FRAMES = [
    '{"type":"session-update","config":{"instructions":"héllo \\u00e9 ☃"}}',
    '{ "type" : "x",\n  "spaces":   [1, 2.50, 1e3] }',
    "not json at all",
]
BINARY_FRAMES = [bytes(range(256)), b"\x00" * 70000, b"\xff\xfe"]


def test_frames_pass_byte_for_byte_both_ways(relay_browser, channel_layer, user):
    browser = relay_browser(user)

    async def scenario():
        async with EchoGateway() as gateway:
            comm = browser.communicator()
            assert (await comm.connect(TIMEOUT))[0]
            for frame in TEXT_FRAMES:
                await comm.send_to(text_data=frame)
                echoed = await comm.receive_from(TIMEOUT)
                assert isinstance(echoed, str) and echoed == frame
            for frame in BINARY_FRAMES:
                await comm.send_to(bytes_data=frame)
                echoed = await comm.receive_from(TIMEOUT)
                assert isinstance(echoed, bytes) and echoed == frame
            await finish(comm)
            return gateway.headers

    headers = run(scenario)
    assert headers[0]["Authorization"] == "Bearer test-gateway-key"
    assert "Sec-WebSocket-Protocol" not in headers[0]
    row = only_row()
    assert row.frames_from_browser == row.frames_from_gateway == 6
    expected = sum(len(f.encode()) for f in TEXT_FRAMES) + sum(map(len, BINARY_FRAMES))
    assert row.bytes_from_browser == row.bytes_from_gateway == expected


# Refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "origin", "route", "expected"),
    [
        ("anonymous", "http://testserver", "realtime", (4401, "login required")),
        ("user", "https://evil.example", "realtime", (4403, "cross-site origin refused")),
        ("user", "http://testserver:8000", "realtime", (4403, "cross-site origin refused")),
        ("user", None, "realtime", (4403, "cross-site origin refused")),
        ("anonymous", "https://evil.example", "realtime", (4403, "cross-site origin refused")),
        ("user", "http://testserver", "transcription", (4404, "unknown relay kind")),
        ("user", "http://testserver", "nonsense", (4404, "unknown relay kind")),
    ],
)
def test_refusals_close_with_code_and_reason(
    relay_emulator, relay_browser, user, who, origin, route, expected
):
    browser = relay_browser(user if who == "user" else None, origin=origin)

    async def scenario():
        comm = browser.communicator(f"/ws/gateway-realtime/{route}/")
        assert (await comm.connect(TIMEOUT))[0]  # accepted, then closed: the browser sees why
        code, reason, frames = await next_close(comm)
        await finish(comm)
        return code, reason, frames

    code, reason, frames = run(scenario)
    assert (code, reason) == expected and frames == []
    assert not RelaySession.objects.exists()
    assert relay_emulator.ws_handshakes == []


def test_trusted_origin_is_accepted(relay_emulator, relay_browser, user, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.org"]
    browser = relay_browser(user, origin="https://app.example.org")

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        await finish(comm)

    run(scenario)


def test_wildcard_trusted_origin_is_refused(relay_emulator, relay_browser, user, settings):
    # Exact entries only, as the endpoint (gateway_realtime.origins says why).
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.org"]
    browser = relay_browser(user, origin="https://app.example.org")

    code, reason, _ = connect_until_closed(browser)
    assert (code, reason) == (4403, "cross-site origin refused")
    assert relay_emulator.ws_handshakes == []


# Limits -------------------------------------------------------------------------


def test_second_concurrent_session_is_refused(relay_emulator, relay_browser, user, settings):
    settings.GATEWAY_REALTIME_RELAY_MAX_SESSIONS = 1
    browser = relay_browser(user)

    async def scenario():
        first = browser.communicator()
        await open_session(first)
        second = browser.communicator()
        assert (await second.connect(TIMEOUT))[0]
        refused = await next_close(second)
        await finish(second)
        await finish(first)
        return refused

    code, reason, _ = run(scenario)
    assert (code, reason) == (4429, "too many sessions")
    refused = RelaySession.objects.get(close_code=4429)
    assert refused.closed_by == "limit" and refused.close_reason == "too many sessions"


def test_quota_counts_session_starts(relay_emulator, relay_browser, user, settings):
    settings.GATEWAY_REALTIME_QUOTA = 1
    browser = relay_browser(user)

    async def scenario():
        first = browser.communicator()
        await open_session(first)
        await finish(first)
        second = browser.communicator()
        assert (await second.connect(TIMEOUT))[0]
        refused = await next_close(second)
        await finish(second)
        return refused

    code, reason, _ = run(scenario)
    assert (code, reason) == (4429, "quota exceeded")


def test_session_too_long(relay_emulator, relay_browser, user, settings):
    # Long enough for session-created to come first on a loaded machine.
    settings.GATEWAY_REALTIME_RELAY_MAX_SESSION_SECONDS = 1.5
    browser = relay_browser(user)

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        closed = await next_close(comm)
        await finish(comm)
        return closed

    code, reason, _ = run(scenario)
    assert (code, reason) == (4408, "session too long")
    row = only_row()
    assert (row.close_code, row.closed_by) == (4408, "limit")
    record = wait_for(lambda: relay_emulator.ws_sessions)[0]
    assert record.close_code == 1000


def test_budget_ends_the_session_after_the_usage_event(
    relay_emulator, relay_browser, user, settings
):
    settings.GATEWAY_REALTIME_RELAY_BUDGET = {"tokens": 2}
    browser = relay_browser(user)

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        update = {"type": "session-update", "config": {"outputModalities": ["text"]}}
        await comm.send_json_to(update)
        await comm.send_json_to({"type": "response-create"})
        closed = await next_close(comm)
        await finish(comm)
        return closed

    code, reason, frames = run(scenario)
    assert (code, reason) == (4429, "budget exceeded")
    done = json.loads(frames[-1])
    assert done["type"] == "response-done"
    row = only_row()
    assert row.input_tokens == done["usage"]["inputTokens"]
    assert row.output_tokens == done["usage"]["outputTokens"]
    assert row.closed_by == "limit"

    # The budget is spent for the period: the next session is refused at its start.
    async def again():
        comm = browser.communicator()
        assert (await comm.connect(TIMEOUT))[0]
        closed = await next_close(comm)
        await finish(comm)
        return closed

    assert run(again)[:2] == (4429, "budget exceeded")


# Revocation -----------------------------------------------------------------------


def test_revocation_through_the_channel_layer(relay_emulator, relay_browser, channel_layer, user):
    browser = relay_browser(user)

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        await channel_layer.group_send(
            group_for(user.pk), {"type": "relay.revoke", "reason": "logged out"}
        )
        closed = await next_close(comm)
        await finish(comm)
        return closed

    code, reason, _ = run(scenario)
    assert (code, reason) == (4410, "logged out")
    assert only_row().closed_by == "revoked"
    assert wait_for(lambda: relay_emulator.ws_sessions)[0].close_code == 1000


# Faults ---------------------------------------------------------------------------


def test_gateway_drop_closes_the_browser_cleanly(relay_emulator, relay_browser, user, settings):
    settings.GATEWAY_REALTIME_DEFAULT_MODELS = {"realtime": "emulator/ws-drop"}
    browser = relay_browser(user)

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        closed = await next_close(comm)
        await finish(comm)
        return closed

    code, reason, _ = run(scenario)
    assert (code, reason) == (1011, "gateway error")
    row = only_row()
    assert (row.model, row.closed_by, row.close_code) == ("emulator/ws-drop", "gateway", 1011)


def test_gateway_unreachable(relay_browser, channel_layer, user, settings):
    settings.GATEWAY_REALTIME_BASE_URL = "http://127.0.0.1:9/v4/ai"  # discard port: refused
    settings.GATEWAY_REALTIME_QUOTA = 5
    browser = relay_browser(user)

    code, reason, _ = connect_until_closed(browser)
    assert (code, reason) == (1011, "gateway unavailable")
    assert only_row().closed_by == "gateway"
    from gateway_realtime.limits import quota_left

    assert quota_left(user, "realtime") == 5  # the start's quota was given back


def test_browser_disconnect_closes_the_gateway_socket(relay_emulator, relay_browser, user):
    browser = relay_browser(user)

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        await comm.disconnect(code=1001, timeout=TIMEOUT)

    run(scenario)
    record = wait_for(lambda: relay_emulator.ws_sessions)[0]
    assert record.ended_at is not None and record.close_code == 1000
    row = only_row()
    assert (row.closed_by, row.close_code, row.close_reason) == ("browser", 1001, "browser closed")


# The audit row --------------------------------------------------------------------------


def test_audit_row_has_usage_and_no_content_or_credential(
    relay_emulator, relay_browser, user, caplog
):
    caplog.set_level(logging.DEBUG)
    marker = "PRIVATE-CONTENT-7d1f"
    browser = relay_browser(user)
    audio = base64.b64encode(b"\x00\x00" * 2400).decode()  # 0.1 s of 24 kHz PCM16 silence

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        update = {
            "type": "session-update",
            "config": {"outputModalities": ["text"], "instructions": marker},
        }
        await comm.send_json_to(update)
        assert (await comm.receive_json_from(TIMEOUT))["type"] == "session-updated"
        await comm.send_json_to({"type": "input-audio-append", "audio": audio})
        await comm.send_json_to({"type": "response-create"})
        while (event := await comm.receive_json_from(TIMEOUT))["type"] != "response-done":
            pass
        await comm.disconnect(timeout=TIMEOUT)
        return event

    done = run(scenario)
    row = only_row()
    assert row.user == user and row.username == "alice"
    assert (row.kind, row.model) == ("realtime", "openai/gpt-realtime-2")
    assert row.user_agent == "relay-test-browser/1.0"
    assert row.ended_at is not None and row.duration_ms is not None
    assert (row.close_code, row.close_reason, row.closed_by) == (1000, "browser closed", "browser")
    assert row.frames_from_browser == 3 and row.frames_from_gateway >= 4
    assert row.bytes_from_browser > 0 and row.bytes_from_gateway > 0
    assert row.audio_seconds_in == pytest.approx(0.1)
    assert row.input_tokens == done["usage"]["inputTokens"]
    assert row.output_tokens == done["usage"]["outputTokens"]
    values = " ".join(str(getattr(row, f.attname)) for f in RelaySession._meta.concrete_fields)
    assert marker not in values and RELAY_KEY not in values
    assert marker not in caplog.text and RELAY_KEY not in caplog.text
    assert "Relay session" in caplog.text  # the relay did log (without either)
    # The usage ledger counted the session with the row's metered usage.
    day = DailyUsage.objects.get(user=user, kind="realtime", model=row.model)
    assert (day.relayed_sessions, day.input_tokens, day.output_tokens) == (
        1,
        row.input_tokens,
        row.output_tokens,
    )
    assert day.audio_seconds_in == pytest.approx(row.audio_seconds_in)
    assert day.relayed_seconds == pytest.approx(row.duration_ms / 1000)


# What a maintainer's review found ---------------------------------------------------


def test_a_revocation_sent_while_the_session_starts_is_not_lost(
    relay_emulator, relay_browser, channel_layer, user, monkeypatch
):
    from gateway_realtime.relay import consumers

    real_open = consumers.open_upstream
    events: dict[str, asyncio.Event] = {}

    async def slow_open(*args, **kwargs):
        # The user's group is joined; the Gateway socket is opening, and stays
        # so: only the revocation can end this session (by cancelling it).
        events["opening"].set()
        await asyncio.Event().wait()
        return await real_open(*args, **kwargs)

    monkeypatch.setattr(consumers, "open_upstream", slow_open)
    browser = relay_browser(user)

    async def scenario():
        events["opening"] = asyncio.Event()
        comm = browser.communicator()
        connecting = asyncio.ensure_future(comm.connect(TIMEOUT))
        await asyncio.wait_for(events["opening"].wait(), TIMEOUT)
        await channel_layer.group_send(
            group_for(user.pk), {"type": "relay.revoke", "reason": "logged out"}
        )
        assert (await connecting)[0]
        closed = await next_close(comm)
        await finish(comm)
        return closed

    code, reason, _ = run(scenario)
    assert (code, reason) == (4410, "logged out")
    assert only_row().closed_by == "revoked"
    # The revocation came while the Gateway socket was opening: it never opened.
    assert relay_emulator.ws_sessions == []


def test_a_fault_after_the_start_ends_the_session_and_gives_the_quota_back(
    relay_browser, channel_layer, user, settings, monkeypatch
):
    from gateway_realtime.limits import quota_left
    from gateway_realtime.relay import consumers

    async def broken_open(*args, **kwargs):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(consumers, "open_upstream", broken_open)
    settings.GATEWAY_REALTIME_QUOTA = 5
    browser = relay_browser(user)

    code, reason, _ = connect_until_closed(browser)
    assert (code, reason) == (1011, "relay error")
    row = only_row()
    assert row.ended_at is not None and row.closed_by == "relay"
    assert quota_left(user, "realtime") == 5


def test_an_unrevocable_session_is_not_started(relay_browser, channel_layer, user, monkeypatch):
    async def broken_group_add(group, channel):
        raise ConnectionError("the channel layer is down")

    monkeypatch.setattr(channel_layer, "group_add", broken_group_add)
    browser = relay_browser(user)

    code, reason, _ = connect_until_closed(browser)
    assert (code, reason) == (1011, "limits unavailable")
    assert not RelaySession.objects.exists()


def test_an_inactive_user_is_refused(relay_emulator, relay_browser, user, settings):
    # A backend that lets inactive users keep their session, as some sites use.
    settings.AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.AllowAllUsersModelBackend"]
    browser = relay_browser(user)
    type(user).objects.filter(pk=user.pk).update(is_active=False)

    code, reason, _ = connect_until_closed(browser)
    assert (code, reason) == (4401, "login required")
    assert not RelaySession.objects.exists()


def test_a_secure_socket_refuses_a_plain_http_origin(settings):
    from gateway_realtime.origins import scope_origin_allowed as origin_allowed

    settings.ALLOWED_HOSTS = ["site.test"]

    def scope(scheme, origin):
        return {"scheme": scheme, "headers": [(b"host", b"site.test"), (b"origin", origin)]}

    assert origin_allowed(scope("wss", b"https://site.test"))
    assert not origin_allowed(scope("wss", b"http://site.test"))
    assert origin_allowed(scope("ws", b"http://site.test"))


# Live models (wire contract section 8) ----------------------------------------------


def live_audio(seconds: float, rate: int = 24000) -> str:
    """Base64 PCM16: a loud square wave (speech to the emulator's VAD)."""
    return base64.b64encode(b"\x00\x40\x00\xc0" * int(rate * seconds / 2)).decode()


def test_a_live_model_is_relayed_on_the_live_route_and_its_audio_meets_the_budget(
    relay_emulator, relay_browser, user, settings
):
    settings.GATEWAY_REALTIME_ALLOWED_MODELS = {"realtime": ["openai/gpt-live-1"]}
    settings.GATEWAY_REALTIME_RELAY_BUDGET = {"audio_seconds": 2}
    browser = relay_browser(user, path=RELAY_PATH + "?model=openai%2Fgpt-live-1")
    fmt = {"type": "audio/pcm", "rate": 24000}
    start = {
        "type": "session-start",
        "modelId": "openai/gpt-live-1",
        "config": {"inputAudioFormat": fmt, "outputAudioFormat": fmt},
    }

    async def scenario():
        comm = browser.communicator()
        assert (await comm.connect(TIMEOUT))[0]
        await comm.send_json_to(start)
        started = await comm.receive_json_from(TIMEOUT)
        assert started["type"] == "session-started"
        # A second of speech in, then the quiet that ends the turn: the reply
        # (audio-chunk, out) and the input take the session past 2 s.
        await comm.send_json_to({"type": "input-audio-append", "audio": live_audio(1.0)})
        quiet = base64.b64encode(bytes(24000)).decode()
        await comm.send_json_to({"type": "input-audio-append", "audio": quiet})
        closed = await next_close(comm)
        await finish(comm)
        return closed

    code, reason, frames = run(scenario)
    assert (code, reason) == (4429, "budget exceeded")
    assert any(json.loads(frame)["type"] == "audio-chunk" for frame in frames)
    [record] = relay_emulator.wait_for_ws_sessions(1)
    assert (record.kind, record.model, record.token) == (
        "live",
        "openai/gpt-live-1",
        "server-socket",
    )
    assert record.received[0] == "session-start"
    row = only_row()
    assert (row.model, row.closed_by) == ("openai/gpt-live-1", "limit")
    assert row.audio_seconds_in == pytest.approx(1.5)
    assert row.audio_seconds_in + row.audio_seconds_out >= 2


def test_a_live_session_closed_by_the_browser_ends_with_the_final_usage(
    relay_emulator, relay_browser, user, settings
):
    settings.GATEWAY_REALTIME_ALLOWED_MODELS = {"realtime": ["openai/gpt-live-1"]}
    browser = relay_browser(user, path=RELAY_PATH + "?model=openai%2Fgpt-live-1")

    async def scenario():
        comm = browser.communicator()
        assert (await comm.connect(TIMEOUT))[0]
        await comm.send_json_to(
            {"type": "session-start", "modelId": "openai/gpt-live-1", "config": {}}
        )
        assert (await comm.receive_json_from(TIMEOUT))["type"] == "session-started"
        await comm.send_json_to({"type": "input-audio-append", "audio": live_audio(0.25)})
        await comm.send_json_to({"type": "session-close"})
        closed = await comm.receive_json_from(TIMEOUT)
        ended = await next_close(comm)
        await finish(comm)
        return closed, ended

    closed, (code, _, _) = run(scenario)
    assert closed["type"] == "session-closed" and closed["usage"] == {"seconds": 0.25}
    assert code == 1000
    row = wait_for(lambda: (r := only_row()).ended_at and r)
    assert row.closed_by == "gateway"
    assert row.audio_seconds_in == pytest.approx(0.25)
