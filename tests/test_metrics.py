"""Prometheus metrics, scraped over HTTP as Prometheus would (prometheus-client's exposition).

The default registry is the process's, shared by every test: each test reads
the samples before and after what it does and checks the difference.
"""

from __future__ import annotations

import dataclasses
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from gateway_realtime import breaker
from gateway_realtime.exceptions import GatewayBusy, GatewayError, GatewayUnavailable
from gateway_realtime.limits import get_policy
from gateway_realtime.models import CloseSide
from gateway_realtime.services import gateway_call_slot, mint_client_secret

from .conftest import answer, gateway_error

prometheus_client = pytest.importorskip("prometheus_client", reason="the metrics extra")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

MODEL = "openai/gpt-realtime-2"


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def scrape_url() -> Iterator[str]:
    """prometheus-client's own exposition app on a real socket on 127.0.0.1."""
    server: WSGIServer = make_server(
        "127.0.0.1", 0, prometheus_client.make_wsgi_app(), handler_class=QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()
    server.server_close()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("gateway_realtime_"):
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.mark.django_db
def test_mints_are_counted_by_kind_outcome_and_error_type(scrape_url, gateway_mock, user):
    before = scrape(scrape_url)
    answer(gateway_mock)
    mint_client_secret(user=user, kind="realtime")
    answer(gateway_mock, gateway_error("internal_server_error"), status=500)
    with pytest.raises(GatewayError):
        mint_client_secret(user=user, kind="realtime")
    after = scrape(scrape_url)
    mints = "gateway_realtime_mints_total"
    assert delta(before, after, mints, kind="realtime", outcome="issued", error_type="") == 1
    failed = {
        dict(labels)["error_type"]
        for name, labels in after
        if name == mints
        and ("outcome", "failed") in labels
        and delta(before, after, name, **dict(labels)) == 1
    }
    assert len(failed) == 1  # the Gateway's 500, under its error type
    # Both Gateway calls are in the latency histogram.
    assert (
        delta(before, after, "gateway_realtime_gateway_latency_seconds_count", kind="realtime") == 2
    )


@pytest.mark.django_db
def test_bulkhead_refusals_are_counted(scrape_url, gateway, user, settings):
    settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 1
    before = scrape(scrape_url)
    with gateway_call_slot(), pytest.raises(GatewayBusy):
        mint_client_secret(user=user, kind="speech")
    after = scrape(scrape_url)
    assert delta(before, after, "gateway_realtime_bulkhead_refusals_total", kind="speech") == 1
    rejected = {"kind": "speech", "outcome": "rejected", "error_type": "gateway_busy"}
    assert delta(before, after, "gateway_realtime_mints_total", **rejected) == 1
    # A refusal never reached the Gateway: no latency observed.
    assert (
        delta(before, after, "gateway_realtime_gateway_latency_seconds_count", kind="speech") == 0
    )


@pytest.mark.django_db
def test_the_breaker_gauge_follows_the_shared_circuit(scrape_url, gateway_mock, user, settings):
    settings.GATEWAY_REALTIME_BREAKER_FAILURES = 1
    assert scrape(scrape_url)[("gateway_realtime_breaker_open", ())] == 0
    answer(gateway_mock, gateway_error("internal_server_error"), status=500)
    with pytest.raises(GatewayError):
        mint_client_secret(user=user, kind="realtime")
    assert scrape(scrape_url)[("gateway_realtime_breaker_open", ())] == 1
    with pytest.raises(GatewayUnavailable):
        mint_client_secret(user=user, kind="realtime")
    breaker.reset_circuit()
    assert scrape(scrape_url)[("gateway_realtime_breaker_open", ())] == 0


@pytest.mark.django_db
def test_relayed_sessions_live_and_metered(scrape_url, user):
    pytest.importorskip("channels")
    from gateway_realtime.relay import sessions

    policy = dataclasses.replace(get_policy(user, "realtime"), quota=None)
    before = scrape(scrape_url)
    session = sessions.start_session(user, "realtime", MODEL, policy)
    live = scrape(scrape_url)
    assert delta(before, live, "gateway_realtime_relay_live_sessions", kind="realtime") == 1
    session.meter.audio_seconds_in, session.meter.audio_seconds_out = 2.5, 1.5
    session.meter.input_tokens, session.meter.output_tokens = 40, 12
    sessions.end_session(session, 1000, "browser closed", CloseSide.BROWSER)
    after = scrape(scrape_url)
    assert delta(before, after, "gateway_realtime_relay_live_sessions", kind="realtime") == 0
    ended = {"kind": "realtime", "closed_by": "browser"}
    assert delta(before, after, "gateway_realtime_relay_sessions_total", **ended) == 1
    audio = "gateway_realtime_relay_audio_seconds_total"
    assert delta(before, after, audio, kind="realtime", direction="in") == 2.5
    assert delta(before, after, audio, kind="realtime", direction="out") == 1.5
    tokens = "gateway_realtime_relay_tokens_total"
    assert delta(before, after, tokens, kind="realtime", direction="in") == 40
    assert delta(before, after, tokens, kind="realtime", direction="out") == 12


@pytest.mark.django_db
def test_no_label_holds_a_user_a_token_or_the_credential(scrape_url, gateway, user, settings):
    secret = mint_client_secret(user=user, kind="realtime")
    with urllib.request.urlopen(scrape_url, timeout=10) as response:
        text = response.read().decode()
    for private in (
        user.get_username(),
        str(user.pk),
        secret.token,
        settings.GATEWAY_REALTIME_API_KEY,
    ):
        lines = [line for line in text.splitlines() if line.startswith("gateway_realtime_")]
        assert not [line for line in lines if f'"{private}"' in line], private


@pytest.mark.django_db
def test_metrics_off_counts_nothing(scrape_url, gateway, user, settings):
    settings.GATEWAY_REALTIME_METRICS = False
    before = scrape(scrape_url)
    mint_client_secret(user=user, kind="transcription")
    after = scrape(scrape_url)
    issued = {"kind": "transcription", "outcome": "issued", "error_type": ""}
    assert delta(before, after, "gateway_realtime_mints_total", **issued) == 0
    assert ("gateway_realtime_breaker_open", ()) not in after


def test_metrics_must_be_a_boolean(settings):
    from gateway_realtime import checks

    settings.GATEWAY_REALTIME_METRICS = "yes"
    assert "gateway_realtime.E025" in [m.id for m in checks.check_settings(None)]
    settings.GATEWAY_REALTIME_METRICS = False
    assert "gateway_realtime.E025" not in [m.id for m in checks.check_settings(None)]
