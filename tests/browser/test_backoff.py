"""The JS helper and a busy setup endpoint (503 or 429 with Retry-After), in chromium."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from django.test import override_settings

from gateway_realtime.client import GatewayClient, reset_clients
from gateway_realtime.exceptions import GatewayRateLimitError
from gateway_realtime.models import ClientSecretIssuance, Outcome, Source


class BusyGatewayClient(GatewayClient):
    """The real client (to the emulator), turned away with Retry-After: 1 ``busy`` times first."""

    busy: ClassVar[int] = 0
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def mint(self, **kwargs: Any) -> Any:
        with self._lock:
            turn_away = BusyGatewayClient.busy > 0
            BusyGatewayClient.busy -= turn_away
        if turn_away:
            raise GatewayRateLimitError("slow down", status_code=429, retry_after=1)
        return super().mint(**kwargs)


@pytest.fixture
def busy_gateway(emulator) -> Iterator[type[BusyGatewayClient]]:
    BusyGatewayClient.busy = 0
    with override_settings(GATEWAY_REALTIME_CLIENT_CLASS=f"{__name__}.BusyGatewayClient"):
        yield BusyGatewayClient
    BusyGatewayClient.busy = 0
    reset_clients()


# Connects, recording the helper's events, the block's state at each, and
# when each request to the setup endpoint started.
CONNECT_RECORDING = """async (options) => {
  const GatewayRealtime = await import("/static/gateway_realtime/gateway-realtime.mjs");
  const block = document.querySelector("[data-gateway-realtime]");
  const events = [];
  const record = (event) => events.push({
    type: event.type, detail: Object.assign({}, event.detail, {error: undefined}),
    state: block.dataset.gatewayRealtimeState, at: performance.now()});
  document.addEventListener("gateway-realtime-state", record);
  document.addEventListener("gateway-realtime-retrying", record);
  const requests = [];
  const realFetch = window.fetch;
  window.fetch = (...args) => { requests.push(performance.now()); return realFetch(...args); };
  try {
    const ws = await GatewayRealtime.connect(options || {});
    ws.close();
    return {ok: true, events, requests, state: block.dataset.gatewayRealtimeState};
  } catch (error) {
    return {ok: false, events, requests, state: block.dataset.gatewayRealtimeState,
            status: error.status, type: error.type, fatal: error.fatal,
            retryAfterMs: error.retryAfterMs};
  } finally {
    window.fetch = realFetch;
  }
}"""


def states(result):
    return [e["detail"]["state"] for e in result["events"] if e["type"].endswith("-state")]


def retries(result):
    return [e for e in result["events"] if e["type"].endswith("-retrying")]


def test_busy_endpoint_is_retried_after_retry_after(context, site, busy_gateway, login, user):
    # The Gateway turns away the page's own mint and the helper's first two.
    busy_gateway.busy = 3
    login(user)
    page = context.new_page()
    page.goto(site + "/page/")
    config = json.loads(page.text_content("#gateway-realtime-realtime"))
    assert (config["token"], config["reason"]) == (None, "error")

    result = page.evaluate(CONNECT_RECORDING, {"busyBackoffMs": 100})

    assert result["ok"], result
    assert states(result) == ["connecting", "busy", "connecting", "busy", "connecting", "open"]
    assert result["state"] == "open"
    waits = retries(result)
    assert [e["detail"]["attempt"] for e in waits] == [1, 2]
    for event in waits:
        assert event["state"] == "busy"
        assert event["detail"]["errorType"] == "gateway_rate_limit_exceeded"
        assert event["detail"]["status"] == 503
        assert event["detail"]["retryAfterMs"] == 1000
        # Retry-After is the floor; jitter adds at most half of it.
        assert 1000 <= event["detail"]["retryInMs"] <= 1500
    first, second, third = result["requests"]
    for before, after, event in zip((first, second), (second, third), waits, strict=True):
        # It waited (at least) the wait it announced; how much longer is not a test's business.
        assert after - before >= event["detail"]["retryInMs"] - 5

    rows = ClientSecretIssuance.objects.order_by("pk")
    assert [(r.source, r.outcome) for r in rows] == [
        (Source.TEMPLATE, Outcome.FAILED),
        (Source.ENDPOINT, Outcome.FAILED),
        (Source.ENDPOINT, Outcome.FAILED),
        (Source.ENDPOINT, Outcome.ISSUED),
    ]


def test_busy_attempts_are_capped(context, site, busy_gateway, login, user):
    busy_gateway.busy = 100
    login(user)
    page = context.new_page()
    page.goto(site + "/page/")

    result = page.evaluate(CONNECT_RECORDING, {"busyMaxAttempts": 2, "busyJitter": 0})

    assert result["ok"] is False
    assert (result["status"], result["type"]) == (503, "gateway_rate_limit_exceeded")
    assert result["fatal"] is True
    assert len(result["requests"]) == 2
    assert [e["detail"]["attempt"] for e in retries(result)] == [1]
    assert states(result) == ["connecting", "busy", "connecting", "error"]
    assert result["state"] == "error"
    state = page.get_attribute("#gateway-realtime-realtime", "data-gateway-realtime-state")
    assert state == "error"


# A stubbed setup endpoint answering `status` to every request.
STUBBED = """async ({status, headers, options, abortAfterMs}) => {
  const GatewayRealtime = await import("/static/gateway_realtime/gateway-realtime.mjs");
  const calls = [];
  const fetchStub = async (url, init) => {
    calls.push(performance.now());
    const body = JSON.stringify({error: {type: "stub_" + status, message: "no"}});
    const sent = Object.assign({"Content-Type": "application/json"}, headers);
    return new Response(body, {status, headers: sent});
  };
  const events = [];
  const block = document.querySelector("[data-gateway-realtime]");
  block.addEventListener("gateway-realtime-retrying", (e) => events.push(e.detail));
  const controller = new AbortController();
  if (abortAfterMs != null) setTimeout(() => controller.abort(), abortAfterMs);
  const started = performance.now();
  try {
    const signal = controller.signal;
    await GatewayRealtime.connect(Object.assign({fetch: fetchStub, signal}, options));
    return {ok: true};
  } catch (error) {
    return {ok: false, status: error.status, type: error.type, fatal: error.fatal,
            retryAfterMs: error.retryAfterMs, calls: calls.length, events,
            elapsedMs: performance.now() - started, state: block.dataset.gatewayRealtimeState};
  }
}"""


@pytest.fixture
def bare_page(context, site):
    """A page as the tag renders it for an anonymous user (the tests stub fetch)."""
    page = context.new_page()
    page.goto(site + "/bare/")
    return page


def stubbed(page, status, headers=None, options=None, abort_after_ms=None):
    return page.evaluate(
        STUBBED,
        {
            "status": status,
            "headers": headers or {},
            "options": options or {},
            "abortAfterMs": abort_after_ms,
        },
    )


def test_400_is_not_retried(bare_page):
    result = stubbed(bare_page, 400, {"Retry-After": "1"})
    assert result["ok"] is False
    assert (result["status"], result["calls"], result["fatal"]) == (400, 1, True)
    assert result["events"] == []
    assert result["state"] == "error"


def test_429_without_retry_after_backs_off_from_busy_backoff_ms(bare_page):
    result = stubbed(
        bare_page, 429, options={"busyBackoffMs": 20, "busyJitter": 0, "busyMaxAttempts": 4}
    )
    assert (result["status"], result["calls"]) == (429, 4)
    assert [(e["attempt"], e["retryInMs"], e["retryAfterMs"]) for e in result["events"]] == [
        (1, 20, None),
        (2, 40, None),
        (3, 80, None),
    ]
    assert result["events"][0]["errorType"] == "stub_429"


def test_retry_after_beyond_the_cap_gives_up_at_once(bare_page):
    # A quota that resets in an hour: no point waiting 30 s and asking again.
    result = stubbed(bare_page, 429, {"Retry-After": "3600"})
    assert (result["status"], result["calls"], result["fatal"]) == (429, 1, True)
    assert result["retryAfterMs"] == 3_600_000
    assert result["events"] == []
    assert result["state"] == "error"


# A socket that never opens, aborted while the helper waits for it.
ABORT_OPENING = """async () => {
  const GatewayRealtime = await import("/static/gateway_realtime/gateway-realtime.mjs");
  let closed = 0;
  class NeverOpens extends EventTarget { constructor() { super(); } close() { closed += 1; } }
  const fetchStub = async () => new Response(
    JSON.stringify({token: "vcst_x", url: "wss://gateway.invalid/"}), {status: 200});
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 100);
  const started = performance.now();
  try {
    await GatewayRealtime.connect(
      {fetch: fetchStub, WebSocket: NeverOpens, signal: controller.signal});
    return {ok: true};
  } catch (error) {
    return {ok: false, type: error.type, closed, elapsedMs: performance.now() - started};
  }
}"""


def test_abort_stops_a_busy_wait_and_an_opening_socket(bare_page):
    result = stubbed(bare_page, 503, {"Retry-After": "10"}, abort_after_ms=200)
    assert (result["type"], result["fatal"], result["calls"]) == ("aborted", True, 1)
    # Aborted during the 10 s wait: one request, not two.
    assert [e["retryInMs"] >= 10_000 for e in result["events"]] == [True]
    assert result["state"] == "error"

    result = bare_page.evaluate(ABORT_OPENING)
    assert (result["ok"], result["type"], result["closed"]) == (False, "aborted", 1)


BACKOFF = """async (cases) => {
  const { backoffDelay } = await import("/static/gateway_realtime/gateway-realtime.mjs");
  return cases.map(({attempt, retryAfterMs, options, random}) =>
    backoffDelay(attempt, retryAfterMs, options, () => random));
}"""

BACKOFF_BOUNDS = [
    # (attempt, Retry-After in ms, options, lowest, highest)
    # No Retry-After: busyBackoffMs doubled per busy answer, plus up to half.
    (1, None, {}, 1000, 1500),
    (2, None, {}, 2000, 3000),
    (4, None, {}, 8000, 12000),
    (5, None, {}, 16000, 24000),
    # At the cap the jitter is taken off: still spread, never over the cap.
    (6, None, {}, 15000, 30000),
    (20, None, {}, 15000, 30000),
    (1, None, {"busyMaxBackoffMs": 500}, 250, 500),
    # Retry-After is the floor, and wins over a shorter backoff.
    (1, 1000, {"busyBackoffMs": 100}, 1000, 1500),
    (3, 1000, {"busyBackoffMs": 100}, 1000, 1500),
    (1, 29000, {}, 29000, 30000),
    (1, 0, {"busyBackoffMs": 10, "busyJitter": 0}, 10, 10),
]


def test_backoff_bounds(context, site):
    # A pure function: evaluated with random() fixed at 0, 0.5 and just under 1.
    page = context.new_page()
    page.goto(site + "/page/")
    cases = [
        {"attempt": attempt, "retryAfterMs": retry_after, "options": options, "random": random}
        for attempt, retry_after, options, _low, _high in BACKOFF_BOUNDS
        for random in (0, 0.5, 0.999999)
    ]
    delays = page.evaluate(BACKOFF, cases)
    for i, (*case, low, high) in enumerate(BACKOFF_BOUNDS):
        lowest, middle, highest = delays[3 * i : 3 * i + 3]
        assert (lowest, highest) == (low, high), case
        assert low <= middle <= high, case

    # The ES module twin exports the same function.
    page.goto(site + "/module/")
    page.wait_for_function("typeof window.moduleConnect === 'function'")
    delay = page.evaluate(
        """async () => {
  const GatewayRealtime = await import("/static/gateway_realtime/gateway-realtime.mjs");
          const { backoffDelay } = await import("/static/gateway_realtime/gateway-realtime.mjs");
          return backoffDelay(2, null, {busyJitter: 0});
        }"""
    )
    assert delay == 2000
