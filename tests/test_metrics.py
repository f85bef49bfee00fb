"""Prometheus metrics, scraped over HTTP as Prometheus would (prometheus-client's exposition).

Mints go through the endpoint, as a browser's do. The default registry is
the process's, shared by every test: each test reads the samples before and
after what it does and checks the difference, never an absolute count.
The relayed sessions' metrics through the consumer are in
tests/relay/test_metrics.py.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import requests
from django.db import OperationalError, connection

from gateway_realtime import breaker, metrics
from gateway_realtime.limits import get_policy
from gateway_realtime.models import CloseSide
from gateway_realtime.services import gateway_call_slot

from .conftest import answer, failing_writes, gateway_error

prometheus_client = pytest.importorskip(
    "prometheus_client", reason="prometheus-client (the metrics extra) is not installed"
)
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = "openai/gpt-realtime-2"
REALTIME = "/gateway/realtime/"
SPEECH = "/gateway/speech/"
MINTS = "gateway_realtime_mints_total"
LATENCY_COUNT = "gateway_realtime_gateway_latency_seconds_count"
BREAKER = ("gateway_realtime_breaker_open", ())
#: Every label the app's metrics may carry ("le": a histogram's buckets).
LABELS = {"kind", "outcome", "error_type", "closed_by", "direction", "le"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(registry: Any = None) -> Iterator[str]:
    """prometheus-client's exposition app for ``registry`` on a real socket on 127.0.0.1."""
    app = prometheus_client.make_wsgi_app(registry or prometheus_client.REGISTRY)
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def scrape_url() -> Iterator[str]:
    with serving() as url:
        yield url


def scrape_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def scrape(url: str) -> Samples:
    """The app's samples in a scrape of ``url``, by name and labels."""
    samples = {}
    for family in text_string_to_metric_families(scrape_text(url)):
        for sample in family.samples:
            if sample.name.startswith("gateway_realtime_"):
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def mints(before: Samples, after: Samples, kind: str, outcome: str, error_type: str = "") -> float:
    return delta(before, after, MINTS, kind=kind, outcome=outcome, error_type=error_type)


# Mints through the endpoint --------------------------------------------------------


@pytest.mark.django_db
def test_issued_and_failed_mints_are_counted_with_their_gateway_latency(
    scrape_url, same_origin, gateway_mock
):
    before = scrape(scrape_url)
    answer(gateway_mock)
    assert same_origin(REALTIME).status_code == 200
    answer(gateway_mock, gateway_error("internal_server_error"), status=500)
    assert same_origin(REALTIME).status_code == 502
    answer(gateway_mock, requests.exceptions.ReadTimeout("slow"))
    assert same_origin(REALTIME).status_code == 504
    after = scrape(scrape_url)
    assert mints(before, after, "realtime", "issued") == 1
    assert mints(before, after, "realtime", "failed", "internal_server_error") == 1
    assert mints(before, after, "realtime", "failed", "timeout") == 1
    # Each of the three Gateway calls is in the latency histogram.
    assert delta(before, after, LATENCY_COUNT, kind="realtime") == 3
    bucket = "gateway_realtime_gateway_latency_seconds_bucket"
    assert delta(before, after, bucket, kind="realtime", le="+Inf") == 3


@pytest.mark.django_db
def test_a_quota_refusal_is_a_rejected_mint_without_a_gateway_call(
    scrape_url, same_origin, gateway, settings
):
    settings.GATEWAY_REALTIME_QUOTA = 1
    before = scrape(scrape_url)
    assert same_origin(SPEECH).status_code == 200
    assert same_origin(SPEECH).status_code == 429
    after = scrape(scrape_url)
    assert mints(before, after, "speech", "issued") == 1
    assert mints(before, after, "speech", "rejected", "quota_exceeded") == 1
    assert delta(before, after, LATENCY_COUNT, kind="speech") == 1


@pytest.mark.django_db
def test_bulkhead_refusals_are_counted(scrape_url, same_origin, gateway, settings):
    settings.GATEWAY_REALTIME_MAX_CONCURRENT_MINTS = 1
    before = scrape(scrape_url)
    with gateway_call_slot():  # the process's one slot is taken
        response = same_origin(SPEECH)
    assert response.status_code == 503
    after = scrape(scrape_url)
    assert delta(before, after, "gateway_realtime_bulkhead_refusals_total", kind="speech") == 1
    assert mints(before, after, "speech", "rejected", "gateway_busy") == 1
    # A refusal never reached the Gateway: no latency observed.
    assert delta(before, after, LATENCY_COUNT, kind="speech") == 0
    assert len(gateway.calls) == 0


@pytest.mark.django_db
def test_the_breaker_gauge_follows_the_shared_circuit(
    scrape_url, same_origin, gateway_mock, settings
):
    settings.GATEWAY_REALTIME_BREAKER_MIN_CALLS = 1
    before = scrape(scrape_url)
    assert before[BREAKER] == 0
    answer(gateway_mock, gateway_error("internal_server_error"), status=500)
    assert same_origin(REALTIME).status_code == 502  # the failure that opens it
    opened = scrape(scrape_url)
    assert opened[BREAKER] == 1
    assert same_origin(REALTIME).status_code == 503  # refused while open
    after = scrape(scrape_url)
    assert after[BREAKER] == 1
    assert mints(before, after, "realtime", "rejected", "gateway_unavailable") == 1
    assert len(gateway_mock.calls) == 1
    breaker.reset_circuit()
    assert scrape(scrape_url)[BREAKER] == 0


@pytest.mark.django_db
def test_a_breaker_cache_that_cannot_be_read_leaves_the_gauge_out_not_the_scrape(
    scrape_url, monkeypatch
):
    def unreadable():
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(breaker, "circuit_state", unreadable)
    samples = scrape(scrape_url)
    assert BREAKER not in samples
    assert any(name == MINTS for name, _ in samples)


# Relayed sessions (without the consumer) --------------------------------------------


@pytest.fixture
def relay_sessions():
    pytest.importorskip("channels", reason="relay mode (the relay extra) is not installed")
    from gateway_realtime.relay import sessions

    return sessions


@pytest.mark.django_db
def test_relayed_sessions_live_and_metered(scrape_url, user, relay_sessions):
    policy = dataclasses.replace(get_policy(user, "realtime"), quota=None)
    before = scrape(scrape_url)
    session = relay_sessions.start_session(user, "realtime", MODEL, policy)
    live = scrape(scrape_url)
    assert delta(before, live, "gateway_realtime_relay_live_sessions", kind="realtime") == 1
    session.meter.audio_seconds_in, session.meter.audio_seconds_out = 2.5, 1.5
    session.meter.input_tokens, session.meter.output_tokens = 40, 12
    relay_sessions.end_session(session, 1000, "browser closed", CloseSide.BROWSER)
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
def test_a_session_whose_row_cannot_be_completed_is_no_longer_live(
    scrape_url, user, relay_sessions
):
    policy = dataclasses.replace(get_policy(user, "realtime"), quota=None)
    before = scrape(scrape_url)
    session = relay_sessions.start_session(user, "realtime", MODEL, policy)
    with (
        connection.execute_wrapper(failing_writes("gateway_realtime_relaysession")),
        pytest.raises(OperationalError),
    ):
        relay_sessions.end_session(session, 1000, "browser closed", CloseSide.BROWSER)
    after = scrape(scrape_url)
    assert delta(before, after, "gateway_realtime_relay_live_sessions", kind="realtime") == 0
    ended = {"kind": "realtime", "closed_by": "browser"}
    assert delta(before, after, "gateway_realtime_relay_sessions_total", **ended) == 1


# What the metrics never do -----------------------------------------------------------


@pytest.mark.django_db
def test_no_label_holds_a_user_a_token_or_the_credential(
    scrape_url, same_origin, gateway, user, settings
):
    response = same_origin(REALTIME)
    assert response.status_code == 200
    token = response.json()["token"]
    text = scrape_text(scrape_url)
    for private in (token, settings.GATEWAY_REALTIME_API_KEY, user.get_username()):
        assert private not in text
    values = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("gateway_realtime_"):
                # Only the app's own small label sets: the series stay bounded.
                assert set(sample.labels) <= LABELS, sample
                values.update(sample.labels.values())
    assert str(user.pk) not in values and user.get_username() not in values


@pytest.mark.django_db
def test_a_failing_metric_never_fails_a_mint(scrape_url, same_origin, gateway, monkeypatch, caplog):
    class Broken:
        def labels(self, *values: str) -> Any:
            raise ValueError("a metric's bug")

    monkeypatch.setitem(metrics._registered(), "mints", Broken())
    with caplog.at_level(logging.WARNING, logger="gateway_realtime"):
        response = same_origin(REALTIME)
    assert response.status_code == 200
    assert "A metric was not recorded (ValueError)" in caplog.text


@pytest.mark.django_db
def test_metrics_off_counts_nothing(scrape_url, same_origin, gateway, settings):
    settings.GATEWAY_REALTIME_METRICS = False
    before = scrape(scrape_url)
    assert same_origin("/gateway/transcription/").status_code == 200
    after = scrape(scrape_url)
    assert mints(before, after, "transcription", "issued") == 0
    assert delta(before, after, LATENCY_COUNT, kind="transcription") == 0
    assert BREAKER not in after


@pytest.mark.django_db
def test_every_metric_is_in_the_docs_table_with_its_type_and_labels():
    rows = re.findall(
        r"^\| `(gateway_realtime_\w+)` \| (\w+) \|([^|]*)\|",
        (ROOT / "docs" / "metrics.md").read_text(),
        re.M,
    )
    documented = {name: (kind, set(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}
    registered = {"gateway_realtime_breaker_open": ("gauge", set())}  # the collector's
    for metric in metrics._registered().values():
        (family,) = metric.describe()
        name = family.name + ("_total" if family.type == "counter" else "")
        registered[name] = (family.type, set(metric._labelnames))
    assert registered == documented


def test_metrics_must_be_a_boolean(settings):
    from gateway_realtime import checks

    settings.GATEWAY_REALTIME_METRICS = "yes"
    assert "gateway_realtime.E025" in [m.id for m in checks.check_settings(None)]
    settings.GATEWAY_REALTIME_METRICS = False
    assert "gateway_realtime.E025" not in [m.id for m in checks.check_settings(None)]


# Other processes ----------------------------------------------------------------


def python(code: str, **environ: str) -> str:
    """Run ``code`` in a new interpreter on the SQLite test settings; its output."""
    # Never the services' database (it migrates), nor a multiprocess directory not asked for.
    unwanted = {"GATEWAY_REALTIME_TEST_SERVICES", "PROMETHEUS_MULTIPROC_DIR"}
    env = {name: value for name, value in os.environ.items() if name not in unwanted}
    env.update(DJANGO_SETTINGS_MODULE="tests.settings", **environ)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_without_prometheus_client_the_app_mints_and_registers_nothing():
    output = python(
        """
        import sys

        sys.modules["prometheus_client"] = None  # as if it were not installed
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from gateway_realtime import metrics
        from gateway_realtime.services import mint_client_secret
        from gateway_realtime.testing import fake_gateway

        assert not metrics.AVAILABLE and not metrics.enabled()
        call_command("migrate", verbosity=0)
        call_command("check")
        user = get_user_model().objects.create_user(username="alice")
        with fake_gateway():
            mint_client_secret(user=user, kind="realtime")
        assert sys.modules["prometheus_client"] is None and not metrics._metrics
        print("minted")
        """
    )
    assert output.strip().endswith("minted")


CHILD = """
    import os
    from types import SimpleNamespace

    import django

    django.setup()
    from gateway_realtime import metrics

    metrics.relay_started("realtime")
    issued = SimpleNamespace(kind="realtime", outcome="issued", error_type="", latency_ms=80)
    metrics.mint_completed(None, issuance=issued)
    print(os.getpid())
"""


def test_gunicorn_workers_in_multiprocess_mode(tmp_path):
    """docs/metrics.md's multiprocess view: workers summed, a dead one's live count gone."""
    from prometheus_client import CollectorRegistry, multiprocess

    directory = str(tmp_path)
    pids = [int(python(CHILD, PROMETHEUS_MULTIPROC_DIR=directory)) for _ in range(2)]
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    registry.register(metrics.BreakerCollector())
    live = ("gateway_realtime_relay_live_sessions", (("kind", "realtime"),))
    issued = (MINTS, (("error_type", ""), ("kind", "realtime"), ("outcome", "issued")))
    with serving(registry) as url:
        samples = scrape(url)
        assert samples[live] == 2
        assert samples[issued] == 2
        assert samples[BREAKER] == 0
        # gunicorn's child_exit hook: the worker that died holds no live session.
        multiprocess.mark_process_dead(pids[0], path=directory)
        samples = scrape(url)
        assert samples[live] == 1
        assert samples[issued] == 2


@pytest.mark.django_db
@pytest.mark.urls("example_project.urls")
def test_the_example_project_serves_them(client, same_origin, gateway):
    assert same_origin("/api/realtime-token/realtime/").status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert {"gateway_realtime_mints", "gateway_realtime_breaker_open"} <= names
