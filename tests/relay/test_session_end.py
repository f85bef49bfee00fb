"""How a relayed session ends: one cleanup path, whatever raises, and a close code every time.

Each test ends a session a different way and checks the same four things:
the browser gets a code from docs/relay.md's table (never a dropped
socket), the Gateway socket is closed, the audit row is completed with who
closed it, and nothing is logged as a bug unless it is one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import pytest
from channels.routing import URLRouter
from channels.sessions import SessionMiddlewareStack
from django.db import OperationalError
from django.urls import path

from gateway_realtime.exceptions import LimitsUnavailable
from gateway_realtime.models import RelaySession
from gateway_realtime.relay import consumers, sessions
from gateway_realtime.relay.consumers import RelayConsumer

from .test_consumer import (
    TIMEOUT,
    EchoGateway,
    connect_until_closed,
    finish,
    next_close,
    only_row,
    open_session,
    run,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


def errors_logged(caplog):
    """Errors the site logged (the stand-in Gateway's own server log is not the site's)."""
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and not r.name.startswith("websockets.server")
    ]


def app_for(consumer):
    return URLRouter([path("ws/test/<str:kind>/", SessionMiddlewareStack(consumer.as_asgi()))])


async def connect_and_wait_for_close(comm):
    assert (await comm.connect(TIMEOUT))[0]
    closed = await next_close(comm)
    await finish(comm)
    return closed


# Stores lost ------------------------------------------------------------------------------


def test_the_channel_layer_lost_mid_session_ends_it_with_limits_unavailable(
    relay_emulator, relay_browser, channel_layer, user, monkeypatch, caplog
):
    lost = asyncio.Event()
    real_receive = channel_layer.receive

    async def receive(channel):
        # Waits like the real layer until the test cuts it, then fails as Redis would.
        waiting = asyncio.ensure_future(real_receive(channel))
        cut = asyncio.ensure_future(lost.wait())
        done, _ = await asyncio.wait({waiting, cut}, return_when=asyncio.FIRST_COMPLETED)
        if cut in done:
            waiting.cancel()
            raise ConnectionError("Connection closed by server.")
        cut.cancel()
        return waiting.result()

    monkeypatch.setattr(channel_layer, "receive", receive)
    browser = relay_browser(user)

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        lost.set()
        closed = await next_close(comm)
        await finish(comm)
        return closed

    code, reason, _ = run(scenario)
    assert (code, reason) == (1011, "limits unavailable")
    row = only_row()
    assert (row.closed_by, row.close_code, row.ended_at is not None) == ("relay", 1011, True)
    assert wait_for(lambda: relay_emulator.ws_sessions)[0].close_code == 1000
    assert errors_logged(caplog) == []


def test_the_database_lost_at_connect_closes_with_limits_unavailable(
    relay_browser, channel_layer, user, monkeypatch, caplog
):
    def broken_get_user(request):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(consumers.auth, "get_user", broken_get_user)
    browser = relay_browser(user)

    async def scenario():
        return await connect_and_wait_for_close(browser.communicator())

    # The handshake is accepted (no HTTP 500), then closed with the code.
    assert run(scenario)[:2] == (1011, "limits unavailable")
    assert not RelaySession.objects.exists()
    assert errors_logged(caplog) == []


def test_the_database_lost_mid_session_ends_it_with_limits_unavailable(
    relay_emulator, relay_browser, user, settings, monkeypatch, caplog
):
    settings.GATEWAY_REALTIME_RELAY_BUDGET = {"tokens": 10**9}

    def broken_add_usage(session):
        raise LimitsUnavailable("The usage counter could not be reached (OperationalError).")

    monkeypatch.setattr(sessions, "add_usage", broken_add_usage)
    browser = relay_browser(user)

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        await comm.send_json_to(
            {
                "type": "conversation-item-create",
                "item": {"type": "text-message", "role": "user", "text": "hello"},
            }
        )
        await comm.send_json_to({"type": "response-create"})
        closed = await next_close(comm)
        await finish(comm)
        return closed

    code, reason, _ = run(scenario)
    assert (code, reason) == (1011, "limits unavailable")
    assert only_row().closed_by == "relay"
    assert wait_for(lambda: relay_emulator.ws_sessions)[0].close_code == 1000
    assert errors_logged(caplog) == []


def test_a_row_that_cannot_be_completed_costs_a_warning_not_the_close(
    relay_emulator, relay_browser, user, monkeypatch, caplog
):
    def broken_end(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(sessions, "end_session", broken_end)
    browser = relay_browser(user)

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        await comm.send_to(text_data='{"type":"ping"}')
        await comm.disconnect(code=1000, timeout=TIMEOUT)

    run(scenario)
    assert wait_for(lambda: relay_emulator.ws_sessions)[0].close_code == 1000
    assert "the audit row was not completed (OperationalError)" in caplog.text
    assert errors_logged(caplog) == []


# A bug of ours ------------------------------------------------------------------------------


def test_a_fault_in_metering_ends_the_session_with_relay_error(
    relay_emulator, relay_browser, user, monkeypatch, caplog
):
    def broken(self, frame):
        raise RuntimeError("a bug in the meter")

    monkeypatch.setattr(sessions.Meter, "observe_gateway", broken)
    browser = relay_browser(user)

    code, reason, _ = connect_until_closed(browser)
    assert (code, reason) == (1011, "relay error")
    assert only_row().closed_by == "relay"
    assert wait_for(lambda: relay_emulator.ws_sessions)[0].close_code == 1000
    # A bug is logged as one, by type, with its traceback.
    assert [r.getMessage() for r in errors_logged(caplog)] == [
        f"Relay session {only_row().pk}: a fault in the relay (RuntimeError); ending the session"
    ]


# The browser leaves; the server stops --------------------------------------------------------


def test_a_browser_that_leaves_during_the_gateway_handshake_is_recorded_as_the_browser(
    relay_emulator, relay_browser, channel_layer, user, settings, monkeypatch, caplog
):
    settings.GATEWAY_REALTIME_QUOTA = 5
    opening = asyncio.Event()
    release = asyncio.Event()
    real_open = consumers.open_upstream

    async def held_open(*args, **kwargs):
        opening.set()
        await release.wait()
        return await real_open(*args, **kwargs)

    monkeypatch.setattr(consumers, "open_upstream", held_open)
    browser = relay_browser(user)

    async def scenario():
        comm = browser.communicator()
        assert (await comm.connect(TIMEOUT))[0]
        await asyncio.wait_for(opening.wait(), TIMEOUT)
        await comm.send_input({"type": "websocket.disconnect", "code": 1001})
        await comm.wait(TIMEOUT)

    run(scenario)
    row = only_row()
    assert (row.closed_by, row.close_code, row.close_reason) == ("browser", 1001, "browser closed")
    assert errors_logged(caplog) == []
    from gateway_realtime.limits import quota_left

    assert quota_left(user, "realtime") == 5  # nothing reached the Gateway


def test_a_server_shutdown_is_recorded_as_the_server(relay_emulator, relay_browser, user, caplog):
    browser = relay_browser(user)

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        # What uvicorn tells its application when it shuts down.
        await comm.send_input({"type": "websocket.disconnect", "code": 1012})
        await comm.wait(TIMEOUT)

    run(scenario)
    row = only_row()
    assert (row.closed_by, row.close_code, row.close_reason) == (
        "server",
        1012,
        "server restarting",
    )
    assert wait_for(lambda: relay_emulator.ws_sessions)[0].close_code == 1000
    assert errors_logged(caplog) == []


def test_a_cancelled_application_is_recorded_as_the_server(relay_emulator, relay_browser, user):
    browser = relay_browser(user)

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        comm.future.cancel()  # the server cancels its application's task
        with pytest.raises(asyncio.CancelledError):
            await comm.future

    run(scenario)
    row = wait_for(lambda: RelaySession.objects.filter(ended_at__isnull=False).first())
    assert (row.closed_by, row.close_code) == ("server", 1012)
    assert wait_for(lambda: relay_emulator.ws_sessions)[0].close_code == 1000


# Frames the meter cannot read ------------------------------------------------------------------


def test_a_deeply_nested_audio_frame_is_refused_not_a_crash(
    relay_emulator, relay_browser, user, caplog
):
    nested = "[" * 100_000 + "]" * 100_000
    frame = '{"type":"input-audio-append","audio":"AAAA","x":' + nested + "}"
    browser = relay_browser(user)

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        await comm.send_to(text_data=frame)
        closed = await next_close(comm)
        await finish(comm)
        return closed

    code, reason, _ = run(scenario)
    assert (code, reason) == (1007, "unreadable frame")
    assert only_row().closed_by == "limit"
    assert errors_logged(caplog) == []


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"type":"x","n":' + "9" * 5000 + "}",
        '{"type":"x","n":1e999999}',
        "\udcff not utf-8",
    ],
    ids=["nested-no-audio", "huge-int", "huge-float", "lone-surrogate"],
)
def test_a_frame_without_audio_the_meter_cannot_read_is_relayed_or_refused(
    relay_browser, channel_layer, user, caplog, frame
):
    browser = relay_browser(user)

    async def scenario():
        async with EchoGateway():
            comm = browser.communicator()
            assert (await comm.connect(TIMEOUT))[0]
            await comm.send_to(text_data=frame)
            out = await comm.receive_output(TIMEOUT)
            await finish(comm)
            return out

    out = run(scenario)
    if out["type"] == "websocket.send":
        assert out["text"] == frame
    else:
        assert (out["code"], out["reason"]) == (1007, "unreadable frame")
    assert errors_logged(caplog) == []


# Backpressure --------------------------------------------------------------------------------


def test_a_burst_reaches_a_browser_that_reads(relay_browser, channel_layer, user, settings):
    settings.GATEWAY_REALTIME_RELAY_QUEUE_FRAMES = 4
    browser = relay_browser(user)

    async def scenario():
        async with EchoGateway():
            comm = browser.communicator()
            assert (await comm.connect(TIMEOUT))[0]
            await comm.send_to(text_data="burst")
            frames = [json.loads(await comm.receive_from(TIMEOUT)) for _ in range(200)]
            await comm.send_to(text_data="still here")
            echo = await comm.receive_from(TIMEOUT)
            await finish(comm)
            return frames, echo

    frames, echo = run(scenario)
    assert [frame["n"] for frame in frames] == list(range(200))
    assert echo == "still here"
    row = only_row()
    assert (row.closed_by, row.frames_from_gateway) == ("browser", 201)


class BrowserThatStopsReading(RelayConsumer):
    """The browser's transport never drains: every send to it waits forever."""

    async def send(self, text_data=None, bytes_data=None, close=False):
        await asyncio.Event().wait()


def test_a_browser_that_stops_reading_falls_behind(relay_browser, channel_layer, user, settings):
    settings.GATEWAY_REALTIME_RELAY_MAX_BEHIND_SECONDS = 0.2
    browser = relay_browser(user, path="/ws/test/realtime/", app=app_for(BrowserThatStopsReading))

    async def scenario():
        async with EchoGateway():
            comm = browser.communicator()
            assert (await comm.connect(TIMEOUT))[0]
            await comm.send_to(text_data="burst")
            closed = await next_close(comm)
            await finish(comm)
            return closed

    code, reason, frames = run(scenario)
    assert (code, reason, frames) == (4413, "fell behind", [])
    assert only_row().closed_by == "limit"


def test_a_gateway_that_stops_reading_falls_behind(
    relay_browser, channel_layer, user, settings, monkeypatch
):
    settings.GATEWAY_REALTIME_RELAY_MAX_BEHIND_SECONDS = 0.2
    real_open = consumers.open_upstream

    async def stalled_open(*args, **kwargs):
        upstream = await real_open(*args, **kwargs)

        async def never_sent(frame):
            await asyncio.Event().wait()

        upstream.send = never_sent
        return upstream

    monkeypatch.setattr(consumers, "open_upstream", stalled_open)
    browser = relay_browser(user)

    async def scenario():
        async with EchoGateway():
            comm = browser.communicator()
            assert (await comm.connect(TIMEOUT))[0]
            await comm.send_to(text_data="frame")
            closed = await next_close(comm)
            await finish(comm)
            return closed

    code, reason, _ = run(scenario)
    assert (code, reason) == (4413, "fell behind")
    assert only_row().closed_by == "limit"


# Audio is metered before it is relayed ---------------------------------------------------------


def test_audio_past_the_budget_is_not_relayed(relay_browser, channel_layer, user, settings):
    settings.GATEWAY_REALTIME_RELAY_BUDGET = {"audio_seconds": 1.0}
    one_second = base64.b64encode(bytes(48000)).decode()  # 24 kHz PCM16
    browser = relay_browser(user)

    async def scenario():
        async with EchoGateway():
            comm = browser.communicator()
            assert (await comm.connect(TIMEOUT))[0]
            frame = json.dumps({"type": "input-audio-append", "audio": one_second})
            await comm.send_to(text_data=frame)
            return await next_close(comm)

    code, reason, echoed = run(scenario)
    assert (code, reason, echoed) == (4429, "budget exceeded", [])


# Starts: the burst rate, and refusals that cannot grow the table -------------------------------


def test_starts_obey_the_burst_rate_and_refusals_fold_into_one_row(
    relay_emulator, relay_browser, user, settings
):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.GATEWAY_REALTIME_RATE = "2/min"
    settings.GATEWAY_REALTIME_RELAY_MAX_SESSIONS = 10
    browser = relay_browser(user)

    async def scenario():
        codes = []
        for _ in range(40):
            comm = browser.communicator()
            assert (await comm.connect(TIMEOUT))[0]
            out = await comm.receive_output(TIMEOUT)
            if out["type"] == "websocket.close":
                codes.append((out["code"], out["reason"]))
            await finish(comm)
        return codes

    refused = run(scenario)
    # Two starts pass; the other 38 are refused before any Gateway socket opens.
    assert refused == [(4429, "rate limited")] * 38
    assert len(relay_emulator.ws_handshakes) == 2
    started = RelaySession.objects.filter(closed_by="browser")
    assert started.count() == 2 and {row.attempts for row in started} == {1}
    # 38 refusals in (at most) two clock minutes: at most two rows.
    folded = list(RelaySession.objects.filter(close_code=4429))
    assert 1 <= len(folded) <= 2 and sum(row.attempts for row in folded) == 38
