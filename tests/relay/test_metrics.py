"""A relayed session through the consumer and the emulator, in the scraped metrics."""

from __future__ import annotations

import asyncio
import base64

import pytest

pytest.importorskip(
    "prometheus_client", reason="prometheus-client (the metrics extra) is not installed"
)
from ..test_metrics import delta, scrape, serving
from .test_consumer import TIMEOUT, only_row, open_session, run

pytestmark = pytest.mark.django_db(transaction=True)

LIVE = "gateway_realtime_relay_live_sessions"


@pytest.fixture(scope="module")
def scrape_url():
    with serving() as url:
        yield url


def test_a_relayed_session_is_live_while_it_runs_then_metered(
    scrape_url, relay_emulator, relay_browser, user
):
    browser = relay_browser(user)
    audio = base64.b64encode(b"\x00\x00" * 2400).decode()  # 0.1 s of 24 kHz PCM16 silence
    before = scrape(scrape_url)

    async def scenario():
        comm = browser.communicator()
        await open_session(comm)
        during = await asyncio.to_thread(scrape, scrape_url)
        await comm.send_json_to({"type": "input-audio-append", "audio": audio})
        await comm.send_json_to({"type": "response-create"})
        while (event := await comm.receive_json_from(TIMEOUT))["type"] != "response-done":
            pass
        await comm.disconnect(timeout=TIMEOUT)
        return during, event["usage"]

    during, usage = run(scenario)
    row = only_row()  # completed: the consumer's cleanup has run
    assert row.ended_at is not None
    after = scrape(scrape_url)
    assert delta(before, during, LIVE, kind="realtime") == 1
    assert delta(before, after, LIVE, kind="realtime") == 0
    ended = {"kind": "realtime", "closed_by": "browser"}
    assert delta(before, after, "gateway_realtime_relay_sessions_total", **ended) == 1
    audio_in = delta(
        before, after, "gateway_realtime_relay_audio_seconds_total", kind="realtime", direction="in"
    )
    assert audio_in == pytest.approx(0.1) == pytest.approx(row.audio_seconds_in)
    tokens = "gateway_realtime_relay_tokens_total"
    assert delta(before, after, tokens, kind="realtime", direction="in") == usage["inputTokens"]
    assert delta(before, after, tokens, kind="realtime", direction="out") == usage["outputTokens"]
    assert usage["inputTokens"] > 0
